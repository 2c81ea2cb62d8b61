"""The training app's configuration: where conf/ is, and checking a composed config.

Shared helpers below the apps (`midigen.train.app`, the seed's note regression): refuse a
wrong-typed override and a number no run can use (`optim.lr=0`) in one line before the
MLflow run exists, turn a config value that breaks building an object into one line, turn
Hydra's composition errors into one line, flatten a config for MLflow params, the git
commit a run records, and a sweep job's run name (what differs between the sweep's jobs).
"""

from __future__ import annotations

import math
import subprocess
from contextlib import contextmanager
from pathlib import Path

import typing

import torch
from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException, MissingConfigException, OverrideParseException
from hydra.utils import get_object, instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from midigen.errors import MidigenError, first_line
from midigen.tracking import repo_root
from midigen.train.schedule import TimeCosine

CONF_DIR = repo_root() / "conf"

if not OmegaConf.has_resolver("midigen_root"):
    OmegaConf.register_new_resolver("midigen_root", lambda: str(repo_root()))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root(),
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"

def flatten(cfg: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat

def swept_keys(overrides: list[str]) -> set[str]:
    """The keys a command line sweeps over (`optim.lr=1e-3,3e-3`, `model=lstm,gru`); none where it does not parse."""
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    except Exception:
        return set()
    return {o.key_or_group for o in parsed if o.is_sweep_override()}

def varied_overrides(job_overrides: list[str], swept: set[str]) -> list[str]:
    """The overrides of a sweep job that set a swept key, in the job's order."""
    return [o for o in job_overrides if o.split("=", 1)[0].lstrip("+~") in swept]

def sweep_run_name(prefix: str, hydra_cfg) -> str:  # noqa: ANN001 - Hydra's HydraConfig of a sweep job
    """A sweep job's MLflow run name, `<prefix> #<job> <what this job sets that its siblings set
    differently>` (`smoke #1 model.hidden_size=32`): the overrides of the keys the command line
    sweeps (from the sweep's multirun.yaml, which Hydra's sweeper writes before the first job)
    or a sweeper searches (`hydra.sweeper.params`: Optuna's search space), not the settings
    every job shares."""
    swept = set((OmegaConf.select(hydra_cfg, "sweeper.params", default=None) or {}).keys())
    saved = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
    if saved.exists():
        swept |= swept_keys(list(OmegaConf.select(OmegaConf.load(saved), "hydra.overrides.task", default=[]) or []))
    varied = varied_overrides(list(hydra_cfg.overrides.task), swept)
    return " ".join([f"{prefix} #{hydra_cfg.job.num}", *varied])[:250]

@contextmanager
def config_errors(section: str):
    """A config value that breaks building `section` (data, model, trainer) -> one MidigenError line."""
    try:
        yield
    except MidigenError:
        raise
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, MidigenError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError, ImportError, MisconfigurationException)):
            raise MidigenError(f"{section}: {first_line(cause)}; check the {section}.* settings") from None
        raise
    except (ValueError, MisconfigurationException) as exc:
        raise MidigenError(f"{section}: {first_line(exc)}; check the {section}.* settings") from None

def check_override_types(cfg: DictConfig, overrides: list[str]) -> None:
    """Refuse, in one line, a value override of the wrong type (`model.hidden_size=abc`).

    A setting's type is the one it has without the command line's value overrides (conf/
    with the chosen groups and experiment). null is allowed either way, and a text setting
    takes anything.
    """
    def sets_a_value(o) -> bool:  # noqa: ANN001
        if o.is_add() or o.is_delete() or o.is_hydra_override() or o.is_sweep_override():
            return False
        node = OmegaConf.select(cfg, o.key_or_group, default=None)
        return node is not None and not isinstance(node, (DictConfig, ListConfig))

    parsed = OverridesParser.create().parse_overrides(overrides)
    values = [o for o in parsed if sets_a_value(o)]
    if not values:
        return
    base = compose(config_name="train", overrides=[o.input_line for o in parsed if o not in values])
    for o in values:
        expected = OmegaConf.select(base, o.key_or_group, default=None)
        got = OmegaConf.select(cfg, o.key_or_group, default=None)
        if not _same_kind(expected, got) and not _takes_text(cfg, o.key_or_group):
            raise MidigenError(f"{o.input_line}: {o.key_or_group} takes {_kind(expected)} "
                               f"(like its default {expected!r}), not {got!r}")

# Numbers no run can use, each (key, allowed, what to say). `optim.lr=0` would train a model
# that learns nothing and register it; dropout 1 drops every unit. data.batch_size and
# data.seq_len are the datamodules' to refuse (they are built before the MLflow run too).
LIMITS = [
    ("optim.lr", lambda v: v > 0, "must be a finite number above 0"),
    ("optim.weight_decay", lambda v: v >= 0, "must be a finite number, 0 or more"),
    ("trainer.max_epochs", lambda v: v >= 1, "must be at least 1 (trainer.max_time caps a run's time)"),
    ("trainer.gradient_clip_val", lambda v: v >= 0, "must be 0 or more (0 or null: no clipping)"),
    ("data.eval_batch_size", lambda v: v >= 1, "must be at least 1 (null: as data.batch_size)"),
    ("model.dropout", lambda v: 0 <= v < 1, "must be at least 0 and below 1 (the share of units dropped)"),
    ("callbacks.early_stopping.patience", lambda v: v >= 0, "must be 0 or more (null: no early stopping)"),
]

def check_settings(cfg: DictConfig) -> None:
    """Refuse, in one line, a setting no training can use, before any data is read or MLflow run exists.

    Checks the numbers in `LIMITS`, then builds the optimiser (and scheduler) on a stand-in
    parameter so that whatever they refuse (`+optim.betas=[0.9,2]`) is refused now, not
    after the run has started.
    """
    for key, allowed, what in LIMITS:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not (
                math.isfinite(value) and allowed(value)):
            raise MidigenError(f"{key}={value} {what}")
    stand_in = [torch.nn.Parameter(torch.zeros(1))]
    with _refused_by("optim"):
        optimizer = instantiate(cfg.optim)(stand_in)
    if cfg.get("scheduler"):
        with _refused_by("scheduler"):
            scheduler = instantiate(cfg.scheduler)(optimizer)
        if isinstance(scheduler, TimeCosine) and not OmegaConf.select(cfg, "trainer.max_time", default=None):
            raise MidigenError("scheduler=time_cosine decays over trainer.max_time: set it "
                               "(e.g. trainer.max_time='00:00:06:00') or choose another scheduler")

@contextmanager
def _refused_by(section: str):
    """What torch's optimiser or scheduler refuses (a bad value, an unknown key) -> one MidigenError line."""
    try:
        yield
    except InstantiationException as exc:
        raise MidigenError(f"{section}: {first_line(exc.__cause__ or exc)}; check the {section}.* settings") from None
    except (TypeError, ValueError) as exc:
        raise MidigenError(f"{section}: {first_line(exc)}; check the {section}.* settings") from None

def _takes_text(cfg: DictConfig, key: str) -> bool:
    """Whether the class a config node builds (`_target_`) declares that this parameter takes
    text too, whatever its default (`trainer.devices=auto`, `trainer.val_check_interval=...`)."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not target:
        return False
    try:
        built = get_object(target)
        hint = typing.get_type_hints(built.__init__ if isinstance(built, type) else built).get(name)
    except Exception:  # an unresolvable annotation says nothing either way
        return False
    return hint is str or hint is typing.Any or str in typing.get_args(hint)

def _same_kind(expected: object, got: object) -> bool:
    if expected is None or got is None or isinstance(expected, str):
        return True
    if isinstance(expected, bool) or isinstance(got, bool):
        return isinstance(expected, bool) and isinstance(got, bool)
    if isinstance(expected, int):
        return isinstance(got, int)
    if isinstance(expected, float):
        return isinstance(got, (int, float))
    return True

def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "true or false"
    return "a whole number" if isinstance(value, int) else "a number"

def hydra_error_line(exc: BaseException) -> str:
    """Hydra's multi-line composition errors as one line that says what to do."""
    text = str(exc)
    if isinstance(exc, MissingConfigException):
        head = first_line(text).removeprefix("In 'train': ")
        options = getattr(exc, "options", None) or []
        return f"{head}; choose one of: {', '.join(options)}" if options else head
    if isinstance(exc, OverrideParseException):
        return (f"cannot read the override ({first_line(text)}); quote values with spaces or non-ASCII "
                "characters: key='value'")
    cause = exc.__cause__
    if "Could not override" in text and cause is not None:
        hint = next((line for line in text.splitlines() if line.startswith("To append")), "")
        key = getattr(cause, "full_key", None) or first_line(text)
        return (f"no setting named {key} ({first_line(cause)}): check the spelling against conf/"
                + (f"; {hint[0].lower()}{hint[1:]}" if hint else ""))
    lines = [first_line(text)] + ([first_line(cause)] if cause is not None else [])
    return "; ".join(line for line in lines if line)
