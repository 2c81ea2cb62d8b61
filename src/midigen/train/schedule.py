"""Learning-rate schedules over a time budget rather than a count of epochs.

A run limited by `trainer.max_time` (a fine-tune: minutes on a laptop) does not know how many
steps it will get: that depends on the machine. `TimeCosine` lowers every parameter group's
learning rate along a half cosine of the share of that time spent, from its own rate down to
`min_ratio` of it, so the run ends at a low rate, where its weights settle, however fast the host.
`scheduler=time_cosine` selects it; the LightningModule hands it the trainer's clock
(`EventLSTMModule.configure_optimizers`), and `midigen.train.config.check_settings` refuses it
without `trainer.max_time`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from midigen.errors import MidigenError


class TimeCosine(LRScheduler):
    """Half-cosine decay over the share of a time budget spent (0 at the start, 1 at the end).

    `progress` is a callable returning that share; until one is set the rates stay where they
    start. Stepped after every optimiser step (`interval = "step"`).
    """

    interval = "step"

    def __init__(self, optimizer: Optimizer, min_ratio: float = 0.05, last_epoch: int = -1) -> None:
        if not 0 <= min_ratio <= 1:
            raise ValueError(f"min_ratio={min_ratio} must be between 0 and 1 (the share of the rate kept at the end)")
        self.min_ratio = float(min_ratio)
        self.progress: Callable[[], float] | None = None
        super().__init__(optimizer, last_epoch)

    def factor(self) -> float:
        share = min(1.0, max(0.0, self.progress())) if self.progress is not None else 0.0
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * share))

    def get_lr(self) -> list[float]:
        f = self.factor()
        return [base * f for base in self.base_lrs]

    def state_dict(self) -> dict:
        return {k: v for k, v in super().state_dict().items() if k != "progress"}


def lightning_scheduler(module, scheduler) -> dict:  # noqa: ANN001 - a LightningModule, a torch scheduler
    """The `lr_scheduler` entry Lightning expects for `scheduler`: a `TimeCosine` reads the
    trainer's `Timer` (present whenever `trainer.max_time` is set) and steps after every batch;
    any other scheduler steps after every epoch, watching val/nll (ReduceLROnPlateau needs it)."""
    if not isinstance(scheduler, TimeCosine):
        return {"scheduler": scheduler, "monitor": "val/nll"}

    def progress() -> float:
        from pytorch_lightning.callbacks import Timer

        timer = next((c for c in module.trainer.callbacks if isinstance(c, Timer)), None)
        if timer is None or timer.time_remaining() is None:
            raise MidigenError("scheduler=time_cosine needs trainer.max_time (the budget it decays over)")
        elapsed = timer.time_elapsed()
        return elapsed / max(elapsed + timer.time_remaining(), 1e-9)

    scheduler.progress = progress
    return {"scheduler": scheduler, "interval": scheduler.interval}
