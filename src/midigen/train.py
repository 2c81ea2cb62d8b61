"""`midigen train [overrides]` / `python -m midigen.train`: the Hydra training app.

Composes conf/train.yaml (data, model, optim, trainer, callbacks, logger, experiment),
trains the stacked LSTM with Lightning, logs everything to MLflow, then logs the model
as an MLflow pyfunc and registers it. With Hydra 1.3 (`version_base="1.3"`) the working
directory is not changed; the run's output folder is taken from HydraConfig explicitly.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from midigen.errors import MidigenError
from midigen.tracking import repo_root

log = logging.getLogger("midigen.train")
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


def find_last_checkpoint(outputs: Path, experiment: str) -> Path:
    """The newest `last.ckpt` of a run of `experiment` under `outputs/`."""
    candidates = []
    for meta in outputs.rglob("mlflow_run.json"):
        info = json.loads(meta.read_text())
        ckpt = meta.parent / "checkpoints" / "last.ckpt"
        if info.get("experiment_name") == experiment and ckpt.exists():
            candidates.append(ckpt)
    if not candidates:
        raise MidigenError(f"ckpt_path=last: no last.ckpt of experiment {experiment!r} under {outputs}; "
                           "start without ckpt_path or pass a checkpoint path")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def _resume(cfg: DictConfig) -> tuple[str | None, str | None]:
    """(checkpoint path, MLflow run id to continue) for `ckpt_path`."""
    if not cfg.ckpt_path:
        return None, None
    ckpt = (find_last_checkpoint(Path(cfg.paths.outputs), cfg.logger.experiment_name)
            if str(cfg.ckpt_path) == "last" else Path(str(cfg.ckpt_path)))
    if not ckpt.exists():
        raise MidigenError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint")
    from midigen.bundle import read_checkpoint

    read_checkpoint(ckpt)  # refused here, in one line, if Lightning's weights_only load would refuse it
    meta = ckpt.parent.parent / "mlflow_run.json"
    run_id = json.loads(meta.read_text()).get("run_id") if meta.exists() else None
    return str(ckpt), run_id


def train(cfg: DictConfig) -> dict:
    """Fit, test, log and register one run. Returns its final metrics.

    Whatever a user can get wrong (an override's type, the data, model sizes, trainer
    options) fails before the MLflow run is created. Once it exists the run ends FINISHED,
    FAILED (tag `error`) or KILLED (Ctrl-C or SIGTERM: last.ckpt is saved, tag `stopped`).
    """
    if cfg.get("task", "events") == "note_regression":
        from midigen.note_regression import train_note_regression

        return train_note_regression(cfg)
    from hydra.core.hydra_config import HydraConfig

    from midigen import tracking

    started = time.time()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    check_override_types(cfg, list(hydra_cfg.overrides.task))  # before the heavy imports: fails in a second
    uri = tracking.tracking_uri(cfg.logger.tracking_uri)
    tracking.check_reachable(uri)  # a down server fails now, in seconds

    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import MLFlowLogger

    from midigen.callbacks import EpochWindows, InterruptGuard, SamplingCallback, StopReason
    from midigen.training import EventLSTMModule

    pl.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(max(1, int(os.environ.get("MIDIGEN_THREADS", torch.get_num_threads()))))
    ckpt_path, run_id = _resume(cfg)

    with _config_errors("data"):
        datamodule = instantiate(cfg.data, _convert_="all")
    corpus = datamodule.load_corpus()  # bad data fails here, before any training
    styles = corpus.styles if cfg.style_conditioning else []
    container = OmegaConf.to_container(cfg, resolve=True)
    with _config_errors("model"):
        module = EventLSTMModule(model=container["model"], tokenizer=container["tokenizer"], optim=container["optim"],
                                 scheduler=container.get("scheduler") or None, styles=styles)

    index_path = run_dir / "originality.npz"
    _build_index(corpus, datamodule, index_path)
    ckpt_dir = run_dir / "checkpoints"
    cb_cfg = cfg.callbacks
    # save_last: last.ckpt is rewritten at the end of every epoch, the point `ckpt_path=last` resumes from.
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, monitor=cb_cfg.checkpoint.monitor, mode="min",
                                 save_top_k=cb_cfg.checkpoint.save_top_k, save_last=cb_cfg.checkpoint.save_last,
                                 filename="epoch{epoch:03d}-nll{val/nll:.4f}", auto_insert_metric_name=False)
    sampling = SamplingCallback(run_dir / "samples", index_path=index_path, seed=cfg.seed,
                                **OmegaConf.to_container(cb_cfg.sampling))
    callbacks = [checkpoint, sampling, EpochWindows(cfg.seed), InterruptGuard(ckpt_dir), StopReason(),
                 LearningRateMonitor()]
    if cb_cfg.early_stopping.patience is not None:
        callbacks.append(EarlyStopping(monitor="val/nll", mode="min", patience=cb_cfg.early_stopping.patience,
                                       min_delta=cb_cfg.early_stopping.min_delta))

    sweep = hydra_cfg.mode.name == "MULTIRUN"
    tags = {"commit": git_commit(), "experiment": cfg.logger.experiment_name,
            "overrides": " ".join(hydra_cfg.overrides.task)}
    if sweep:
        tags["sweep"] = str(Path(hydra_cfg.sweep.dir).name)
        tags["sweep_job"] = str(hydra_cfg.job.num)
    run_name = cfg.run_name or f"{cfg.logger.experiment_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracking.ensure_store(uri)
    tracking.ensure_experiment(cfg.logger.experiment_name, uri)
    # The logger creates (or reopens) the MLflow run on first use, after the trainer is built.
    logger = MLFlowLogger(experiment_name=cfg.logger.experiment_name, tracking_uri=uri, run_name=run_name,
                          run_id=run_id, tags=tags if run_id is None else None, log_model=False)
    with _config_errors("trainer"):
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(run_dir))

    client, run_id = logger.experiment, logger.run_id
    (run_dir / "mlflow_run.json").write_text(json.dumps({"run_id": run_id, "experiment_name": cfg.logger.experiment_name,
                                                         "tracking_uri": uri}))
    try:
        results = _fit_and_log(cfg, trainer, module, datamodule, corpus, container, checkpoint, sampling,
                               client, run_id, run_dir, ckpt_path, index_path, uri, started)
    except BaseException as exc:
        _end_run(client, run_id, exc, ckpt_dir)
        # Lightning turns Ctrl-C into exit(1) and SIGTERM into SIGTERMException (a SystemExit).
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise KeyboardInterrupt(_stopped_message(ckpt_dir)) from None
        raise
    client.set_terminated(run_id, "FINISHED")
    return results


def _fit_and_log(cfg, trainer, module, datamodule, corpus, container, checkpoint, sampling,  # noqa: ANN001, PLR0913
                 client, run_id: str, run_dir: Path, ckpt_path: str | None, index_path: Path, uri: str,
                 started: float) -> dict:
    """Everything that happens while the MLflow run is open: log, fit, test, bundle, register."""
    import torch

    from midigen import tracking

    tok_dir = run_dir / "tokenizer"
    _save_tokenizer(container["tokenizer"], tok_dir)  # the bundle copies it, resumed runs too
    if ckpt_path is None:  # a resumed run already has its parameters
        trainer.logger.log_hyperparams(flatten(container))
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        client.log_artifact(run_id, str(run_dir / "config.yaml"))
        client.log_artifact(run_id, str(tok_dir / "tokenizer.json"))
        summary = corpus.summary()
        (run_dir / "dataset.json").write_text(json.dumps(summary, indent=2))
        client.log_artifact(run_id, str(run_dir / "dataset.json"))
        if corpus.skipped:
            client.log_artifact(run_id, str(corpus.cache_dir / "skipped.csv"))
        for key, value in summary.items():
            if isinstance(value, int):
                client.log_metric(run_id, f"data/{key}", value)
    else:
        client.set_tag(run_id, "resumed_from", ckpt_path)
    if corpus.skipped:
        print(f"midigen: skipped {len(corpus.skipped)} unusable MIDI files (reasons: {corpus.cache_dir / 'skipped.csv'})")

    # weights_only: a checkpoint is data; one crafted to run code on load is refused.
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    cut = client.get_run(run_id).data.tags.get("stopped", "stopped")  # set by StopReason where fit ran

    results = {}
    best = checkpoint.best_model_path or None
    if trainer.is_global_zero:
        best_score = checkpoint.best_model_score
        if best:
            saved = torch.load(best, map_location="cpu", weights_only=True)
            module.load_state_dict(saved["state_dict"])
            if best_score is None:  # ddp_spawn keeps the score in the worker; the checkpoint has it
                best_score = saved.get("callbacks", {}).get(checkpoint.state_key, {}).get("best_model_score")
        metrics = dict(trainer.callback_metrics)
        if cfg.test and datamodule.corpus.split("test"):
            tester = _tester(cfg, trainer)
            tester.test(module, datamodule=datamodule, verbose=False)
            metrics.update(tester.callback_metrics)
        results = {k: float(v) for k, v in metrics.items() if v.numel() == 1}
        results["val/best_nll"] = float(best_score) if best_score is not None else None
        if results["val/best_nll"] is not None:
            client.log_metric(run_id, "val/best_nll", results["val/best_nll"])
        for key, value in per_note(corpus, results).items():
            results[key] = value
            client.log_metric(run_id, key, value)
        results["train_minutes"] = (time.time() - started) / 60
        client.log_metric(run_id, "train_minutes", results["train_minutes"])
        if cfg.logger.log_checkpoints and best:
            client.log_artifact(run_id, best, "checkpoints")
        bundle_dir = _write_bundle(module, run_dir, container, corpus, results, run_id, sampling, index_path)
        if cfg.registry.name:
            summary = corpus.summary()
            score = {"val_nll": results.get("val/best_nll"), "tokenizer": module.params.key(),
                     "val_files": summary.get("val_files"), "val_tokens": summary.get("val_tokens")}
            registered = tracking.log_model(run_id, bundle_dir, uri, cfg.registry.name, cfg.registry.alias,
                                            cfg.registry.get("promote", "always"), score)
            results.update(registered)
        print(f"midigen: run {run_id} ({cfg.logger.experiment_name}) {cut}; val/nll {results.get('val/best_nll')}")
        print(f"midigen: samples in {run_dir / 'samples'}; model in {bundle_dir}")
        if results.get("version"):
            print(f"midigen: registered models:/{cfg.registry.name}/{results['version']}"
                  + (f"; {results['promotion']}" if results.get("promotion") else ""))
    return results


def per_note(corpus, results: dict) -> dict:  # noqa: ANN001
    """{val/nll_per_note, test/nll_per_note}: held-out NLL per note (nats), comparable across tokenizers.

    The tiled evaluation predicts every event of a file but its first, so a split's total NLL
    is NLL-per-event x (events - files); the same music has the same notes in every vocabulary."""
    out = {}
    summary = corpus.summary()
    for split, key in (("val", "val/best_nll"), ("test", "test/nll")):
        nll, notes = results.get(key), summary[f"{split}_notes"]
        if nll is not None and notes:
            out[f"{split}/nll_per_note"] = float(nll) * (summary[f"{split}_tokens"] - summary[f"{split}_files"]) / notes
    return out


def _tester(cfg: DictConfig, trainer):  # noqa: ANN001, ANN202
    """The fitted trainer, or a one-process copy of it after multi-process training: there a
    DistributedSampler would pad the test split with repeated windows."""
    from hydra.utils import instantiate

    if trainer.world_size == 1:
        return trainer
    return instantiate(cfg.trainer, devices=1, num_nodes=1, strategy="auto", logger=trainer.logger, callbacks=[],
                       enable_progress_bar=False, default_root_dir=trainer.default_root_dir)


def _end_run(client, run_id: str, exc: BaseException, ckpt_dir: Path) -> None:  # noqa: ANN001
    """Mark the MLflow run KILLED (Ctrl-C, SIGTERM) or FAILED with the error as tag `error`.

    Never masks `exc`: a tracking failure here is logged, not raised.
    """
    try:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            client.set_tag(run_id, "stopped", _stopped_message(ckpt_dir))
            client.set_terminated(run_id, "KILLED")
        else:
            message = str(exc) if isinstance(exc, MidigenError) else f"{type(exc).__name__}: {exc}"
            client.set_tag(run_id, "error", _first_line(message)[:1000])
            client.set_terminated(run_id, "FAILED")
    except Exception:
        log.exception("could not mark MLflow run %s as stopped", run_id)


def _stopped_message(ckpt_dir: Path) -> str:
    if (ckpt_dir / "last.ckpt").exists():
        return f"interrupted; {ckpt_dir / 'last.ckpt'} saved, resume with ckpt_path=last"
    return "interrupted before the first checkpoint"


def _first_line(text: object) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


@contextmanager
def _config_errors(section: str):
    """A config value that breaks building `section` (data, model, trainer) -> one MidigenError line."""
    from hydra.errors import InstantiationException
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        yield
    except MidigenError:
        raise
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, MidigenError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError, ImportError, MisconfigurationException)):
            raise MidigenError(f"{section}: {_first_line(cause)}; check the {section}.* settings") from None
        raise
    except (ValueError, MisconfigurationException) as exc:
        raise MidigenError(f"{section}: {_first_line(exc)}; check the {section}.* settings") from None


def check_override_types(cfg: DictConfig, overrides: list[str]) -> None:
    """Refuse, in one line, a value override of the wrong type (`model.hidden_size=abc`).

    A setting's type is the one it has without the command line's value overrides (conf/
    with the chosen groups and experiment). null is allowed either way, and a text setting
    takes anything.
    """
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import ListConfig

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


def _takes_text(cfg: DictConfig, key: str) -> bool:
    """Whether the class a config node builds (`_target_`) declares that this parameter takes
    text too, whatever its default (`trainer.devices=auto`, `trainer.val_check_interval=...`)."""
    import typing

    from hydra.utils import get_object

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


def _save_tokenizer(params: dict, out_dir: Path) -> None:
    from midigen.events import EventParams
    from midigen.tokenizer import OoreTokenizer

    OoreTokenizer.from_params(EventParams.from_dict(params)).save(out_dir)


def _build_index(corpus, datamodule, index_path: Path) -> None:  # noqa: ANN001
    """The originality index of the training split, saved with the model."""
    from midigen.originality import OriginalityIndex

    root = Path(datamodule.root)
    train = corpus.split("train")
    index = OriginalityIndex.from_files([root / f["rel"] for f in train], names=[f["rel"] for f in train])
    # held-out real music sets the default bound for `midigen generate --max-copy`
    reference = index.calibrate([root / f["rel"] for f in corpus.split("val")])
    log.info("originality: %d training files indexed; held-out copy ratio mean %.3f, default max-copy %.2f",
             len(train), reference["copy_ratio_mean"], reference["max_copy"])
    index.save(index_path)


def _write_bundle(module, run_dir: Path, container: dict, corpus, results: dict, run_id: str,  # noqa: ANN001
                  sampling, index_path: Path) -> Path:
    import shutil

    from midigen.bundle import CARD, INDEX, save_bundle

    bundle_dir = run_dir / "bundle"
    meta = {"run_id": run_id, "commit": git_commit(), "experiment": container["logger"]["experiment_name"],
            "model": module.net.config.to_dict(),
            "data": corpus.summary(), "metrics": {k: v for k, v in results.items() if isinstance(v, float)},
            "samples": sampling.history[-1] if sampling.history else sampling.last_on_disk()}
    save_bundle(bundle_dir, module.net, run_dir / "tokenizer" / "tokenizer.json", meta)
    if index_path.exists():
        shutil.copyfile(index_path, bundle_dir / INDEX)
    (bundle_dir / CARD).write_text(_model_card(meta, container))
    return bundle_dir


def _model_card(meta: dict, container: dict) -> str:
    m, d = meta["metrics"], meta["data"]
    lines = [f"# midigen model ({meta['experiment']})", "",
             f"- MLflow run: `{meta['run_id']}`, commit `{meta['commit']}`",
             f"- Data: {d['files']} files ({d['train_files']} train / {d['val_files']} val / {d['test_files']} test), "
             f"styles {', '.join(d['styles'])}; {d['skipped']} skipped",
             f"- Tokenizer: {container['tokenizer']['mode']} mode, vocab {meta['model']['vocab_size']}",
             f"- Model: {container['model']['num_layers']} x {container['model']['hidden_size']} LSTM, "
             f"{container['model']['input']} input",
             f"- Held-out NLL per event: val {m.get('val/best_nll', float('nan')):.4f}, "
             f"test {m.get('test/nll', float('nan')):.4f}; per note: test {m.get('test/nll_per_note', float('nan')):.3f}",
             ""]
    if meta["samples"]:
        lines.append("Last samples: " + ", ".join(f"{k} {v:.3f}" for k, v in meta["samples"].items() if k != "epoch"))
    return "\n".join(lines) + "\n"


# For run_cli, which reports after Hydra returns: a single run's user error (raised from the
# task function, Hydra would print its own lines too), and the sweep jobs that failed in
# this process as (job number, overrides, error).
USER_ERROR: list[MidigenError] = []
FAILED_JOBS: list[tuple[int, str, str]] = []


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode.name == "MULTIRUN"
    try:
        results = train(cfg)
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
        FAILED_JOBS.append((hydra_cfg.job.num, " ".join(hydra_cfg.overrides.task), _first_line(message)))
        return float("inf")
    value = results.get(cfg.optimized_metric) or results.get("val/best_nll")
    return float(value) if value is not None else None


def run_cli(argv: list[str]) -> int:
    """Entry for `midigen train ...`: Hydra reads its arguments from sys.argv.

    Returns 0, 1 when sweep jobs failed (after all of them ran), or 130 on Ctrl-C; Hydra's
    composition errors (unknown key, missing option, unparsable override) become one
    MidigenError line.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

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
        swept = _swept_keys(argv)
        for num, overrides, error in FAILED_JOBS:
            varied = [o for o in overrides.split() if o.split("=", 1)[0].lstrip("+~") in swept] or [overrides]
            print(f"midigen: error: sweep job {num} ({' '.join(varied)}) failed: {error}", file=sys.stderr)
        return 1
    return 0


def _swept_keys(argv: list[str]) -> set[str]:
    """The keys a command line sweeps over (`optim.lr=1e-3,3e-3`), to name failed jobs briefly."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except Exception:
        return set()
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def hydra_error_line(exc: BaseException) -> str:
    """Hydra's multi-line composition errors as one line that says what to do."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(exc)
    if isinstance(exc, MissingConfigException):
        head = _first_line(text).removeprefix("In 'train': ")
        options = getattr(exc, "options", None) or []
        return f"{head}; choose one of: {', '.join(options)}" if options else head
    if isinstance(exc, OverrideParseException):
        return (f"cannot read the override ({_first_line(text)}); quote values with spaces or non-ASCII "
                "characters: key='value'")
    cause = exc.__cause__
    if "Could not override" in text and cause is not None:
        hint = next((line for line in text.splitlines() if line.startswith("To append")), "")
        key = getattr(cause, "full_key", None) or _first_line(text)
        return (f"no setting named {key} ({_first_line(cause)}): check the spelling against conf/"
                + (f"; {hint[0].lower()}{hint[1:]}" if hint else ""))
    lines = [_first_line(text)] + ([_first_line(cause)] if cause is not None else [])
    return "; ".join(line for line in lines if line)


if __name__ == "__main__":
    from midigen.cli import main as cli_main

    raise SystemExit(cli_main(["train", *sys.argv[1:]]))
