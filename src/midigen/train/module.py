"""The LightningModule: next-event cross-entropy on `EventLSTM`, ignoring padding.

Logs train/val/test loss (mean NLL per event, in nats), perplexity and next-event
accuracy. Hyper-parameters are saved as plain dicts so checkpoints load with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from midigen.data.events import PAD_ID, EventParams
from midigen.errors import MidigenError
from midigen.model import EventLSTM, ModelConfig


class StagedSteps(pl.LightningModule):
    """A LightningModule whose train/val/test steps are one `_step(batch, stage)`."""

    def _step(self, batch, stage: str) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")


class EventLSTMModule(StagedSteps):
    def __init__(self, model: dict, tokenizer: dict, optim: dict, scheduler: dict | None = None,
                 styles: list[str] | None = None, lr_scales: dict[str, float] | None = None,
                 distill: float = 0.0):
        """`lr_scales`: {parameter name: factor} for parameters that learn at `factor` times optim.lr
        (a fine-tune's style embedding, whose new row starts from nothing it learned).
        `distill`: weight of the KL divergence from a frozen teacher (`use_teacher`) on the training
        windows of the styles the teacher knows, added to the cross-entropy: a fine-tune's guard
        that the base styles keep the base model's whole next-event distribution, not only its
        most likely events."""
        super().__init__()
        self.save_hyperparameters(logger=False)  # run.py logs the whole flattened config once
        params = EventParams.from_dict(tokenizer)
        sizes = {"vocab_size": params.vocab_size, "styles": list(styles or [])}
        if model.get("position", "none") != "none":
            sizes["position_grid"] = params.grid  # positions count the tokenizer's steps
        config = ModelConfig.from_dict({**model, **sizes})
        mismatch = config.tokenizer_mismatch(params)
        if mismatch:
            raise MidigenError(f"model.position={config.position} needs the beat tokenizer ({mismatch}): "
                               "use tokenizer=beat, or model.position=none")
        self.hparams.model = config.to_dict()
        self.net = EventLSTM(config)
        self.params = params
        self._teacher: tuple[EventLSTM, ...] = ()  # a tuple: not a submodule, not saved, not trained

    def use_teacher(self, teacher: EventLSTM) -> None:
        """Distil `teacher` (frozen) into the windows of its styles (the first teacher.num_styles)."""
        if self.hparams.get("distill", 0.0) <= 0:
            raise MidigenError("use_teacher: distill is 0; set a weight above 0")
        if teacher.num_styles > self.net.num_styles or teacher.positioned != self.net.positioned:
            raise MidigenError("use_teacher: the teacher must read the same inputs and know no more styles")
        teacher.eval().requires_grad_(False)
        self._teacher = (teacher,)

    def forward(self, ids: torch.Tensor, style: torch.Tensor | None = None, positions: torch.Tensor | None = None):
        return self.net(ids, style, positions=positions)

    def _step(self, batch, stage: str) -> torch.Tensor:
        inputs, targets, style = batch[:3]  # (B, T), (B, T), (B,)
        positions = batch[3] if len(batch) > 3 else None  # (B, T): the DataModule's; a bare batch may have none
        logits, _ = self.net(inputs, style if self.net.num_styles else None,
                             positions=positions if self.net.positioned else None)  # (B, T, V)
        flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        valid = flat_targets != PAD_ID
        n = int(valid.sum())
        loss = F.cross_entropy(flat_logits, flat_targets, ignore_index=PAD_ID)
        with torch.no_grad():
            acc = (flat_logits.argmax(-1)[valid] == flat_targets[valid]).float().mean() if n else loss.new_zeros(())
        on_step = stage == "train"
        # batch_size = events, so the epoch value is the mean NLL per event, not per batch.
        # Held-out figures are averaged over processes (DDP): each holds a share of the split.
        sync = stage != "train"
        self.log(f"{stage}/nll", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=max(n, 1),
                 sync_dist=sync)
        self.log(f"{stage}/acc", acc, on_step=on_step, on_epoch=True, batch_size=max(n, 1), sync_dist=sync)
        if stage == "test":
            self._log_per_style(flat_logits, flat_targets, style.repeat_interleave(targets.shape[1]))
        if stage == "train" and self._teacher:
            kl = self._distillation(logits, inputs, targets, style, positions)
            if kl is not None:
                self.log("train/distill", kl, on_step=True, on_epoch=True, batch_size=max(n, 1))
                loss = loss + float(self.hparams.distill) * kl
        return loss

    def _distillation(self, logits, inputs, targets, style, positions) -> torch.Tensor | None:  # noqa: ANN001
        """Mean KL(teacher || student) per valid event of the rows whose style the teacher knows."""
        (teacher,) = self._teacher
        rows = style < teacher.num_styles
        if not bool(rows.any()):
            return None
        with torch.no_grad():
            taught, _ = teacher(inputs[rows], style[rows],
                                positions=positions[rows] if teacher.positioned else None)  # (R, T, V)
        valid = targets[rows] != PAD_ID  # (R, T)
        if not bool(valid.any()):
            return None
        student = F.log_softmax(logits[rows][valid], dim=-1)
        target = F.log_softmax(taught[valid].float(), dim=-1)
        return F.kl_div(student, target, log_target=True, reduction="batchmean")

    def _log_per_style(self, logits: torch.Tensor, targets: torch.Tensor, style: torch.Tensor) -> None:
        """test/nll/<style>: the held-out NLL per event of each style folder (the style study)."""
        names = self._style_names()
        if len(names) < 2:
            return
        nll = F.cross_entropy(logits, targets, ignore_index=PAD_ID, reduction="none")
        valid = targets != PAD_ID
        for index in style[valid].unique().tolist():
            mask = valid & (style == index)
            self.log(f"test/nll/{names[index]}", nll[mask].mean(), on_epoch=True, batch_size=int(mask.sum()),
                     sync_dist=True)

    def _style_names(self) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return list(getattr(datamodule, "styles", None) or self.hparams.styles or [])

    def _log_perplexity(self, stage: str) -> None:
        nll = self.trainer.callback_metrics.get(f"{stage}/nll")
        if nll is not None:
            self.log(f"{stage}/ppl", math.exp(min(float(nll), 50.0)))

    def on_validation_epoch_end(self) -> None:
        self._log_perplexity("val")

    def on_test_epoch_end(self) -> None:
        self._log_perplexity("test")

    def configure_optimizers(self):
        from hydra.utils import instantiate

        scales = self.hparams.get("lr_scales") or {}
        params = self.parameters()
        if scales:
            named = dict(self.named_parameters())
            unknown = sorted(set(scales) - set(named))
            if unknown:
                raise MidigenError(f"lr_scales names {unknown}, not parameters of the model")
            lr = float(self.hparams.optim["lr"])
            params = [{"params": [p for n, p in named.items() if n not in scales]},
                      *({"params": [named[n]], "lr": lr * float(f)} for n, f in scales.items())]
        optimizer = instantiate(self.hparams.optim)(params)
        if not self.hparams.scheduler:
            return optimizer
        from midigen.train.schedule import lightning_scheduler

        scheduler = instantiate(self.hparams.scheduler)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": lightning_scheduler(self, scheduler)}
