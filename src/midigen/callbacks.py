"""Training callbacks: MIDI samples every N epochs, fresh windows every epoch, clean interrupts.

`SamplingCallback` writes K MIDI files with the current weights through the producer's
own generator, a piano roll of each and their musical metrics (and copy ratio against
the training corpus), and logs them to the MLflow run under `samples/epoch_XXX/`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from midigen.bundle import Bundle
from midigen.generate import GenerateRequest, generate_batch

log = logging.getLogger(__name__)

SAMPLE_METRICS = ("in_scale", "on_grid", "stuck_ratio", "pitch_range", "polyphony", "note_density",
                  "hanging_notes")


class EpochWindows(pl.Callback):
    """Tell the data which epoch it is (new windows, a new shuffle) and reseed the RNGs for it.

    Every random draw of epoch e - windows, shuffle, dropout - is then a function of
    (seed, e, rank), whatever ran before: a run resumed from an epoch's last.ckpt trains the
    next epochs exactly as the uninterrupted run would (Lightning does not save RNG states).
    """

    def __init__(self, seed: int = 0):
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import random

        import torch

        epoch = trainer.current_epoch
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(epoch)
        seed = int(np.random.SeedSequence([self.seed, epoch, trainer.global_rank]).generate_state(1)[0])
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)


class SamplingCallback(pl.Callback):
    def __init__(self, out_dir: str | Path, every_n_epochs: int = 1, num_files: int = 4, bars: int = 8,
                 bpm: float = 120.0, max_events: int = 1000, temperature: float = 1.0, top_p: float = 0.95,
                 repetition_penalty: float = 0.3, index_path: str | Path | None = None, seed: int = 0):
        self.out_dir = Path(out_dir)
        self.every = every_n_epochs
        self.request = dict(num=num_files, bars=bars, bpm=bpm, max_events=max_events, temperature=temperature,
                            top_p=top_p, repetition_penalty=repetition_penalty, seed=seed)
        self.index_path = Path(index_path) if index_path else None
        self.history: list[dict] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = epoch + 1 >= (trainer.max_epochs or 0) or trainer.should_stop
        if self.every <= 0 or not trainer.is_global_zero or ((epoch + 1) % self.every and not last):
            return
        self.write_samples(trainer, pl_module, epoch)

    def write_samples(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> dict:
        from midigen.metrics import note_metrics
        from midigen.pianoroll import pianoroll_from_notes

        folder = self.out_dir / f"epoch_{epoch:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        was_training = pl_module.training
        bundle = Bundle(pl_module.net, pl_module.params, {}, folder)
        try:
            results = generate_batch(bundle, GenerateRequest(**self.request, name=f"epoch{epoch:03d}"))
        finally:
            pl_module.train(was_training)
        index = self._index()
        rows = {}
        for r in results:
            on, off, pitch = r["notes"]
            (folder / r["name"]).write_bytes(r["midi"])
            pianoroll_from_notes(on, off, pitch, 960, folder / r["name"].replace(".mid", ".png"),
                                 title=f"epoch {epoch} {r['name']}")
            row = note_metrics(on, off, pitch, 960)
            if index is not None:
                row["copy_ratio"] = index.check_notes(on, pitch, 960)["copy_ratio"]
            rows[r["name"]] = row
        keys = [k for k in (*SAMPLE_METRICS, "copy_ratio") if rows and k in next(iter(rows.values()))]
        mean = {k: float(np.mean([float(row[k]) for row in rows.values()])) for k in keys}
        (folder / "metrics.json").write_text(json.dumps({"files": rows, "mean": mean}, indent=2, default=float))
        if trainer.logger is not None:
            trainer.logger.log_metrics({f"sample/{k}": v for k, v in mean.items()}, step=trainer.global_step)
            run_id = getattr(trainer.logger, "run_id", None)
            if run_id:
                trainer.logger.experiment.log_artifacts(run_id, str(folder), f"samples/{folder.name}")
        self.history.append({"epoch": epoch, **mean})
        return mean

    def last_on_disk(self) -> dict:
        """The newest epoch's mean sample metrics from disk (`history` stays in a ddp_spawn worker)."""
        newest = sorted(self.out_dir.glob("epoch_*/metrics.json"))
        if not newest:
            return {}
        return {"epoch": int(newest[-1].parent.name.split("_")[1]), **json.loads(newest[-1].read_text())["mean"]}

    def _index(self):  # noqa: ANN202
        if self.index_path is None or not self.index_path.exists():
            return None
        from midigen.originality import OriginalityIndex

        return OriginalityIndex.load(self.index_path)


class StopReason(pl.Callback):
    """Why fitting ended (epochs done, early stop, time limit), as the MLflow run's tag `stopped`.

    Decided where training ran: under ddp_spawn that is the rank-0 worker, whose trainer
    state (epochs, early stopping) never comes back to the main process.
    """

    def __init__(self):
        self.reason: str | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.reason = why_stopped(trainer)
        run_id = getattr(trainer.logger, "run_id", None)
        if run_id:
            trainer.logger.experiment.set_tag(run_id, "stopped", self.reason)


def why_stopped(trainer: pl.Trainer) -> str:
    """One line on why `trainer.fit` returned (current_epoch counts finished epochs by then)."""
    if trainer.max_epochs and trainer.current_epoch >= trainer.max_epochs:
        return f"completed {trainer.max_epochs} epochs"
    for cb in trainer.callbacks:
        if type(cb).__name__ == "EarlyStopping" and getattr(cb, "stopped_epoch", 0):
            return f"early-stopped at epoch {cb.stopped_epoch} ({cb.monitor} stopped improving)"
        if type(cb).__name__ == "Timer" and cb.time_remaining() is not None and cb.time_remaining() <= 0:
            return f"cut short by trainer.max_time after {trainer.current_epoch} epochs"
    return f"stopped after {trainer.current_epoch} epochs"


class InterruptGuard(pl.Callback):
    """On Ctrl-C or SIGTERM while fitting, save `last.ckpt` so `ckpt_path=last` can resume.

    The checkpoint is taken mid-epoch: resuming from it restarts that epoch's windows.
    """

    def __init__(self, checkpoint_dir: str | Path):
        self.checkpoint_dir = Path(checkpoint_dir)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.trainer.states import TrainerFn
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        stopped = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        if stopped and trainer.state.fn == TrainerFn.FITTING and trainer.is_global_zero:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(str(self.checkpoint_dir / "last.ckpt"))
            log.warning("interrupted: saved %s; resume with ckpt_path=last", self.checkpoint_dir / "last.ckpt")
