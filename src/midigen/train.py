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
    meta = ckpt.parent.parent / "mlflow_run.json"
    run_id = json.loads(meta.read_text()).get("run_id") if meta.exists() else None
    return str(ckpt), run_id


def train(cfg: DictConfig) -> dict:
    """Fit, test, log and register one run. Returns its final metrics."""
    import pytorch_lightning as pl
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import MLFlowLogger

    from midigen import tracking
    from midigen.callbacks import EpochWindows, InterruptGuard, SamplingCallback
    from midigen.training import EventLSTMModule

    started = time.time()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(max(1, int(os.environ.get("MIDIGEN_THREADS", torch.get_num_threads()))))

    uri = tracking.tracking_uri(cfg.logger.tracking_uri)
    tracking.ensure_store(uri)
    tracking.ensure_experiment(cfg.logger.experiment_name, uri)
    ckpt_path, run_id = _resume(cfg)

    datamodule = instantiate(cfg.data, _convert_="all")
    corpus = datamodule.load_corpus()  # bad data fails here, before any training
    styles = corpus.styles if cfg.style_conditioning else []
    container = OmegaConf.to_container(cfg, resolve=True)
    module = EventLSTMModule(model=container["model"], tokenizer=container["tokenizer"], optim=container["optim"],
                             scheduler=container.get("scheduler") or None, styles=styles)

    sweep = HydraConfig.get().mode.name == "MULTIRUN"
    tags = {"commit": git_commit(), "experiment": cfg.logger.experiment_name,
            "overrides": " ".join(HydraConfig.get().overrides.task)}
    if sweep:
        tags["sweep"] = str(Path(HydraConfig.get().sweep.dir).name)
        tags["sweep_job"] = str(HydraConfig.get().job.num)
    run_name = cfg.run_name or f"{cfg.logger.experiment_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    logger = MLFlowLogger(experiment_name=cfg.logger.experiment_name, tracking_uri=uri, run_name=run_name,
                          run_id=run_id, tags=tags if run_id is None else None, log_model=False)
    client, run_id = logger.experiment, logger.run_id
    (run_dir / "mlflow_run.json").write_text(json.dumps({"run_id": run_id, "experiment_name": cfg.logger.experiment_name,
                                                         "tracking_uri": uri}))
    if ckpt_path is None:  # a resumed run already has its parameters
        logger.log_hyperparams(flatten(container))
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        client.log_artifact(run_id, str(run_dir / "config.yaml"))
        tok_dir = run_dir / "tokenizer"
        _save_tokenizer(container["tokenizer"], tok_dir)
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

    index_path = run_dir / "originality.npz"
    _build_index(corpus, datamodule, index_path)

    ckpt_dir = run_dir / "checkpoints"
    cb_cfg = cfg.callbacks
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, monitor=cb_cfg.checkpoint.monitor, mode="min",
                                 save_top_k=cb_cfg.checkpoint.save_top_k, save_last=cb_cfg.checkpoint.save_last,
                                 filename="epoch{epoch:03d}-nll{val/nll:.4f}", auto_insert_metric_name=False)
    sampling = SamplingCallback(run_dir / "samples", index_path=index_path, seed=cfg.seed,
                                **OmegaConf.to_container(cb_cfg.sampling))
    callbacks = [checkpoint, sampling, EpochWindows(), InterruptGuard(ckpt_dir), LearningRateMonitor()]
    if cb_cfg.early_stopping.patience is not None:
        callbacks.append(EarlyStopping(monitor="val/nll", mode="min", patience=cb_cfg.early_stopping.patience,
                                       min_delta=cb_cfg.early_stopping.min_delta))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(run_dir))

    status = "FINISHED"
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        if trainer.interrupted:
            status = "KILLED"
    except BaseException:
        status = "KILLED" if trainer.interrupted else "FAILED"
        client.set_terminated(run_id, status)
        raise
    if status == "KILLED":
        client.set_tag(run_id, "stopped", "interrupted; resume with ckpt_path=last")
        client.set_terminated(run_id, "KILLED")
        raise KeyboardInterrupt
    cut = _why_stopped(trainer)
    client.set_tag(run_id, "stopped", cut)

    results = {}
    best = checkpoint.best_model_path or None
    if trainer.is_global_zero:
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        if cfg.test and datamodule.corpus.split("test"):
            trainer.test(module, datamodule=datamodule, verbose=False)
        results = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        results["val/best_nll"] = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
        results["train_minutes"] = (time.time() - started) / 60
        client.log_metric(run_id, "train_minutes", results["train_minutes"])
        if cfg.logger.log_checkpoints and best:
            client.log_artifact(run_id, best, "checkpoints")
        bundle_dir = _write_bundle(module, run_dir, container, corpus, results, run_id, sampling, index_path)
        if cfg.registry.name:
            registered = tracking.log_model(run_id, bundle_dir, uri, cfg.registry.name, cfg.registry.alias)
            results.update(registered)
        print(f"midigen: run {run_id} ({cfg.logger.experiment_name}) {cut}; val/nll {results.get('val/best_nll')}")
        print(f"midigen: samples in {run_dir / 'samples'}; model in {bundle_dir}")
        if results.get("version"):
            print(f"midigen: registered models:/{cfg.registry.name}/{results['version']}"
                  + (f" (@{cfg.registry.alias})" if cfg.registry.alias else ""))
    client.set_terminated(run_id, "FINISHED")
    return results


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
    index.save(index_path)


def _why_stopped(trainer) -> str:  # noqa: ANN001
    if trainer.max_epochs and trainer.current_epoch >= trainer.max_epochs:
        return f"completed {trainer.max_epochs} epochs"
    for cb in trainer.callbacks:
        if type(cb).__name__ == "EarlyStopping" and getattr(cb, "stopped_epoch", 0):
            return f"early-stopped at epoch {cb.stopped_epoch} (val/nll stopped improving)"
        if type(cb).__name__ == "Timer" and cb.time_remaining() is not None and cb.time_remaining() <= 0:
            return f"cut short by trainer.max_time after {trainer.current_epoch} epochs"
    return f"stopped after {trainer.current_epoch} epochs"


def _write_bundle(module, run_dir: Path, container: dict, corpus, results: dict, run_id: str,  # noqa: ANN001
                  sampling, index_path: Path) -> Path:
    import shutil

    from midigen.bundle import CARD, INDEX, save_bundle

    bundle_dir = run_dir / "bundle"
    meta = {"run_id": run_id, "commit": git_commit(), "experiment": container["logger"]["experiment_name"],
            "data": corpus.summary(), "metrics": {k: v for k, v in results.items() if isinstance(v, float)},
            "samples": sampling.history[-1] if sampling.history else {}}
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
             f"- Tokenizer: {container['tokenizer']['mode']} mode, vocab {container['model'].get('vocab_size', '')}",
             f"- Model: {container['model']['num_layers']} x {container['model']['hidden_size']} LSTM, "
             f"{container['model']['input']} input",
             f"- Held-out NLL per event: val {m.get('val/best_nll', float('nan')):.4f}, "
             f"test {m.get('test/nll', float('nan')):.4f}", ""]
    if meta["samples"]:
        lines.append("Last samples: " + ", ".join(f"{k} {v:.3f}" for k, v in meta["samples"].items() if k != "epoch"))
    return "\n".join(lines) + "\n"


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    sweep = HydraConfig.get().mode.name == "MULTIRUN"
    try:
        results = train(cfg)
    except MidigenError as exc:
        if sweep:  # one bad job must not take the sweep down
            log.error("job failed: %s", exc)
            return float("inf")
        print(f"midigen: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        if sweep:
            log.exception("job failed")
            return float("inf")
        raise
    value = results.get(cfg.optimized_metric) or results.get("val/best_nll")
    return float(value) if value is not None else None


def run_cli(argv: list[str]) -> int:
    """Entry for `midigen train ...`: Hydra reads its arguments from sys.argv."""
    sys.argv = [sys.argv[0].replace("midigen", "midigen-train") if sys.argv else "midigen-train", *argv]
    main()
    return 0


if __name__ == "__main__":
    main()
