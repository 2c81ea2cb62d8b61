"""One training run's lifecycle: resume, fit, test, log to MLflow, bundle, register, end.

`train(cfg)` is what the Hydra app (`midigen.train.app`) calls per job. Whatever a user
can get wrong fails before the MLflow run is created; once it exists the run ends
FINISHED, FAILED (tag `error`) or KILLED (tag `stopped`, with how to resume).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger

from midigen import tracking
from midigen.errors import MidigenError, first_line
from midigen.producer.bundle import read_checkpoint
from midigen.train import registration
from midigen.train.callbacks import EpochWindows, InterruptGuard, SamplingCallback, StopReason
from midigen.train.config import check_override_types, config_errors, flatten, git_commit
from midigen.train.module import EventLSTMModule


log = logging.getLogger(__name__)


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
        from midigen.train.note_regression import train_note_regression

        return train_note_regression(cfg)
    started = time.time()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    check_override_types(cfg, list(hydra_cfg.overrides.task))  # before any run or data: fails in seconds
    uri = tracking.tracking_uri(cfg.logger.tracking_uri)
    tracking.check_reachable(uri)  # a down server fails now, in seconds

    pl.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(max(1, int(os.environ.get("MIDIGEN_THREADS", torch.get_num_threads()))))
    ckpt_path, run_id = _resume(cfg)

    with config_errors("data"):
        datamodule = instantiate(cfg.data, _convert_="all")
    corpus = datamodule.load_corpus()  # bad data fails here, before any training
    styles = corpus.styles if cfg.style_conditioning else []
    container = OmegaConf.to_container(cfg, resolve=True)
    with config_errors("model"):
        module = EventLSTMModule(model=container["model"], tokenizer=container["tokenizer"], optim=container["optim"],
                                 scheduler=container.get("scheduler") or None, styles=styles)

    index_path = run_dir / "originality.npz"
    registration.build_originality_index(corpus, datamodule, index_path)
    classifier_path = run_dir / "style_classifier.json"
    classifier_accuracy = registration.fit_style_classifier(corpus, datamodule, container.get("style_classifier"),
                                                            classifier_path)
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
    if sweep and not cfg.run_name:  # jobs of a sweep are told apart by what they set, in the runs table too
        run_name = f"{cfg.logger.experiment_name} #{hydra_cfg.job.num} {' '.join(hydra_cfg.overrides.task)}"[:250]
    tracking.ensure_store(uri)
    tracking.ensure_experiment(cfg.logger.experiment_name, uri)
    # The logger creates (or reopens) the MLflow run on first use, after the trainer is built.
    logger = MLFlowLogger(experiment_name=cfg.logger.experiment_name, tracking_uri=uri, run_name=run_name,
                          run_id=run_id, tags=tags if run_id is None else None, log_model=False)
    with config_errors("trainer"):
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(run_dir))

    client, run_id = logger.experiment, logger.run_id
    (run_dir / "mlflow_run.json").write_text(json.dumps({"run_id": run_id, "experiment_name": cfg.logger.experiment_name,
                                                         "tracking_uri": uri}))
    try:
        results = _fit_and_log(cfg, trainer, module, datamodule, corpus, container, checkpoint, sampling,
                               client, run_id, run_dir, ckpt_path, index_path, uri, started,
                               classifier_accuracy)
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
                 started: float, classifier_accuracy: dict | None) -> dict:
    """Everything that happens while the MLflow run is open: log, fit, test, bundle, register."""
    tok_dir = run_dir / "tokenizer"
    registration.save_tokenizer(container["tokenizer"], tok_dir)  # the bundle copies it, resumed runs too
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
        for style, accuracy in (classifier_accuracy or {}).items():
            client.log_metric(run_id, f"style_classifier/val_acc/{style}", accuracy)
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
        bundle_dir = registration.write_bundle(module, run_dir, container, corpus, results, run_id, sampling,
                                                index_path, run_dir / "style_classifier.json")
        if cfg.registry.name:
            summary = corpus.summary()
            score = {"val_nll": results.get("val/best_nll"), "tokenizer": module.params.key(),
                     "val_files": summary.get("val_files"), "val_tokens": summary.get("val_tokens")}
            registered = registration.log_model(run_id, bundle_dir, uri, cfg.registry.name, cfg.registry.alias,
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
            client.set_tag(run_id, "error", first_line(message)[:1000])
            client.set_terminated(run_id, "FAILED")
    except Exception:
        log.exception("could not mark MLflow run %s as stopped", run_id)

def _stopped_message(ckpt_dir: Path) -> str:
    if (ckpt_dir / "last.ckpt").exists():
        return f"interrupted; {ckpt_dir / 'last.ckpt'} saved, resume with ckpt_path=last"
    return "interrupted before the first checkpoint"
