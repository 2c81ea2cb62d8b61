"""Golden test (minGPT's habit): one Lightning training step of `EventLSTMModule` equals the same
step written out in bare PyTorch - same batch, same initial weights: the loss (mean NLL per real
event, padding ignored), every gradient, and the weights after clipping and one Adam step."""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
from torch.testing import assert_close

from midigen.data.events import PAD_ID, EventParams
from midigen.train.module import EventLSTMModule

TOKENIZER = EventParams.seed().to_dict()
STYLES = ["chorale", "fiddle"]
# Tiny, two layers (so the between-layer path is used), style-conditioned; no dropout, so the
# step is deterministic and needs no shared random state.
MODEL = {"hidden_size": 16, "num_layers": 2, "dropout": 0.0, "input": "embedding", "embedding_dim": 8,
         "style_dim": 4}
LR, CLIP = 1e-2, 0.05  # CLIP below the step's gradient norm (~0.17), so clipping takes part
OPTIM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": LR, "weight_decay": 0.0}


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs (B, T), targets (B, T), style (B,)), with padded targets at the end of one row."""
    g = torch.Generator().manual_seed(0)
    vocab = EventParams.seed().vocab_size
    inputs = torch.randint(1, vocab, (4, 12), generator=g)
    targets = torch.randint(1, vocab, (4, 12), generator=g)
    targets[1, -5:] = PAD_ID
    return inputs, targets, torch.tensor([0, 1, 1, 0])


class _Record(pl.Callback):
    """The step's loss, and its gradients before Lightning clips them."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        self.grads = {name: p.grad.clone() for name, p in pl_module.net.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.loss = outputs["loss"].detach().clone()


def _bare_step(net: torch.nn.Module, inputs, targets, style):  # noqa: ANN001, ANN202
    """The reference: forward, NLL averaged over the non-PAD targets, backward, clip, Adam."""
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    net.train()
    logits, _ = net(inputs, style)  # (B, T, V)
    nll = -logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    loss = nll[targets != PAD_ID].mean()
    optimizer.zero_grad()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters()}
    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
    assert norm > CLIP  # else the comparison after the step would not check clipping
    optimizer.step()
    return loss.detach(), grads


def test_one_lightning_step_equals_a_bare_pytorch_step():
    torch.manual_seed(0)
    module = EventLSTMModule(model=MODEL, tokenizer=TOKENIZER, optim=OPTIM, styles=STYLES)
    reference = copy.deepcopy(module.net)  # the same initial weights
    batch = _batch()
    want_loss, want_grads = _bare_step(reference, *batch)

    record = _Record()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*batch), batch_size=len(batch[0]))
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", devices=1, gradient_clip_val=CLIP, logger=False,
                         callbacks=[record], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader)

    assert_close(record.loss, want_loss)
    assert_close(trainer.callback_metrics["train/nll_step"], want_loss)  # what the run logs
    assert record.grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        assert grad.abs().sum() > 0, name  # every parameter takes part, so every comparison means something
        assert_close(record.grads[name], grad, msg=lambda m, name=name: f"{name}: {m}")
    for (name, got), want in zip(module.net.named_parameters(), reference.parameters()):
        assert_close(got.detach(), want.detach(), msg=lambda m, name=name: f"{name} after the step: {m}")
