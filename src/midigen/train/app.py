"""`midigen train [overrides]` / `python -m midigen.train`: the Hydra training app.

Composes conf/train.yaml (data, model, optim, trainer, callbacks, logger, experiment) and
runs one training per job (`midigen.train.run`; `midigen.train.note_regression` for
task=note_regression); a sweep (`-m`) runs one process-local job after another, one MLflow
run each, and a failing job does not stop the others. With Hydra 1.3 (`version_base="1.3"`)
the working directory is not changed.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from midigen.errors import MidigenError, first_line
from midigen.train.config import CONF_DIR, hydra_error_line, swept_keys, varied_overrides
from midigen.train.run import train

log = logging.getLogger(__name__)


# For run_cli, which reports after Hydra returns: a single run's user error (raised from the
# task function, Hydra would print its own lines too), and the sweep jobs that failed in
# this process as (job number, overrides, error).
USER_ERROR: list[MidigenError] = []

FAILED_JOBS: list[tuple[int, str, str]] = []

@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode.name == "MULTIRUN"
    try:
        results = _task(cfg)(cfg)
    except Exception as exc:
        if not sweep:
            if isinstance(exc, MidigenError):
                USER_ERROR.append(exc)
                return None
            raise
        # One bad job must not take the sweep down: its run (if it got one) is FAILED with tag
        # `error`, and the sweeper (Optuna too) sees the worst possible value.
        if isinstance(exc, MidigenError):
            log.error("job %s failed: %s", hydra_cfg.job.num, exc)
        else:
            log.exception("job %s failed", hydra_cfg.job.num)
        message = str(exc) if isinstance(exc, MidigenError) else f"{type(exc).__name__}: {exc}"
        FAILED_JOBS.append((hydra_cfg.job.num, " ".join(hydra_cfg.overrides.task), first_line(message)))
        return float("inf")
    value = results.get(cfg.optimized_metric) or results.get("val/best_nll")
    return float(value) if value is not None else None

def _task(cfg: DictConfig):  # noqa: ANN202
    """What `task` trains: the event-token LSTM, or the dissertation's first approach."""
    task = cfg.get("task", "events")
    if task == "note_regression":
        from midigen.train.note_regression import train_note_regression

        return train_note_regression
    if task == "finetune":
        from midigen.train.finetune import finetune

        return finetune
    if task != "events":
        raise MidigenError(f"task={task}: use events, finetune or note_regression")
    return train

def run_cli(argv: list[str]) -> int:
    """Entry for `midigen train ...`: Hydra reads its arguments from sys.argv.

    Returns 0, 1 when sweep jobs failed (after all of them ran), or 130 on Ctrl-C; Hydra's
    composition errors (unknown key, missing option, unparsable override) become one
    MidigenError line.
    """
    sys.argv = [sys.argv[0].replace("midigen", "midigen-train") if sys.argv else "midigen-train", *argv]
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises instead of printing, so we print one line
    USER_ERROR.clear()
    FAILED_JOBS.clear()
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        raise MidigenError(hydra_error_line(exc)) from None
    except KeyboardInterrupt as exc:
        print(f"midigen: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    if USER_ERROR:
        raise USER_ERROR[0]
    if FAILED_JOBS:
        swept = swept_keys(argv)  # failed jobs are named briefly, by what they vary
        for num, overrides, error in FAILED_JOBS:
            varied = varied_overrides(overrides.split(), swept) or [overrides]
            print(f"midigen: error: sweep job {num} ({' '.join(varied)}) failed: {error}", file=sys.stderr)
        return 1
    return 0
