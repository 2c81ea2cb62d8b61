"""One training run's lifecycle: resume, fit, test, log to MLflow, end - for every task.

A task (the event-token LSTM here, `train(cfg)`; the seed's note regression in
`midigen.train.note_regression`) builds a `Job` - its data, model, callbacks and what to do
once tested - and `run_job` does the rest, the same for each; the Hydra app
(`midigen.train.app`) picks the task per job. Whatever a user can get wrong fails before the MLflow
run is created; once it exists the run ends FINISHED, FAILED (tag `error`) or KILLED
(tag `stopped`, with how to resume where the task can).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

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
from midigen.train.config import (check_override_types, check_settings, config_errors, flatten, git_commit,
                                  sweep_run_name)
from midigen.train.module import EventLSTMModule


log = logging.getLogger(__name__)


@dataclass
class Job:
    """One task's side of a run, built before the MLflow run exists; `run_job` does the rest.

    `finish(results, client, run_id)` runs last while the run is open, on the best weights
    after testing: it writes what the task leaves behind (bundle, samples), may add to
    `results`, and prints where things are.
    """

    name: str  # the run name's prefix
    datamodule: pl.LightningDataModule
    corpus: Any  # .summary() and .split(name): what the run trains and is scored on
    module: pl.LightningModule
    checkpoint: ModelCheckpoint  # its best weights are tested and handed to `finish`
    callbacks: list  # every callback but early stopping, `checkpoint` among them
    monitor: str  # what early stopping watches; its best value is logged as val/best_<name>
    params: dict  # the settings this task reads: the run's MLflow params
    dataset: dict  # dataset.json (the corpus itself is the run's MLflow dataset: `corpus_dataset`)
    finish: Callable[[dict, Any, str], None]
    tags: dict = field(default_factory=dict)  # beyond commit, experiment and overrides
    artifacts: list[Path] = field(default_factory=list)  # logged once, beside config.yaml and dataset.json
    metrics: dict = field(default_factory=dict)  # logged once, before fitting
    ckpt_path: str | None = None  # resume fitting from this checkpoint...
    run_id: str | None = None  # ...into this MLflow run
    resumable: bool = True  # whether `ckpt_path=last` can continue an interrupted run

def train(cfg: DictConfig) -> dict:
    """Fit, test, log and register one run of the event-token LSTM. Returns its final metrics."""
    return run_job(cfg, event_job)

def run_job(cfg: DictConfig, build_job: Callable[[DictConfig, Path], Job]) -> dict:
    """The lifecycle of one run of the task `build_job(cfg, run_dir)` builds. Returns its final metrics.

    Whatever a user can get wrong (an override's type or value, the data, model sizes,
    trainer options) fails before the MLflow run is created. Once it exists the run ends
    FINISHED, FAILED (tag `error`) or KILLED (Ctrl-C or SIGTERM: tag `stopped`; a resumable
    task has saved last.ckpt).
    """
    started = time.time()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    check_override_types(cfg, list(hydra_cfg.overrides.task))  # before any run or data: fails in seconds
    check_settings(cfg)
    uri = tracking.tracking_uri(cfg.logger.tracking_uri)
    tracking.check_reachable(uri)  # a down server fails now, in seconds

    pl.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(max(1, int(os.environ.get("MIDIGEN_THREADS", torch.get_num_threads()))))
    job = build_job(cfg, run_dir)  # bad data or model settings fail here, before any training
    callbacks = list(job.callbacks)
    stopping = cfg.callbacks.early_stopping
    if stopping.patience is not None:
        callbacks.append(EarlyStopping(monitor=job.monitor, mode="min", patience=stopping.patience,
                                       min_delta=stopping.min_delta))

    sweep = hydra_cfg.mode.name == "MULTIRUN"
    tags = {"commit": git_commit(), "experiment": cfg.logger.experiment_name, **job.tags,
            "overrides": " ".join(hydra_cfg.overrides.task)}
    if sweep:
        tags["sweep"] = str(Path(hydra_cfg.sweep.dir).name)
        tags["sweep_job"] = str(hydra_cfg.job.num)
    run_name = cfg.run_name or f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if sweep and not cfg.run_name:  # jobs of a sweep are told apart by what they vary, in the runs table too
        run_name = sweep_run_name(job.name, hydra_cfg)
    tracking.ensure_store(uri)
    tracking.ensure_experiment(cfg.logger.experiment_name, uri)
    # The logger creates (or reopens) the MLflow run on first use, after the trainer is built.
    logger = MLFlowLogger(experiment_name=cfg.logger.experiment_name, tracking_uri=uri, run_name=run_name,
                          run_id=job.run_id, tags=tags if job.run_id is None else None, log_model=False)
    with config_errors("trainer"):
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(run_dir))

    client, run_id = logger.experiment, logger.run_id
    run_info = {"run_id": run_id, "experiment_name": cfg.logger.experiment_name, "tracking_uri": uri}
    if "task" in job.tags:
        run_info["task"] = job.tags["task"]
    (run_dir / "mlflow_run.json").write_text(json.dumps(run_info))
    ckpt_dir = Path(job.checkpoint.dirpath)
    try:
        results = _fit_and_log(cfg, job, trainer, client, run_id, run_dir, started)
    except BaseException as exc:
        _end_run(client, run_id, exc, ckpt_dir, job.resumable)
        # Lightning turns Ctrl-C into exit(1) and SIGTERM into SIGTERMException (a SystemExit).
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise KeyboardInterrupt(_stopped_message(ckpt_dir, job.resumable)) from None
        raise
    client.set_terminated(run_id, "FINISHED")
    return results

def _fit_and_log(cfg: DictConfig, job: Job, trainer: pl.Trainer, client, run_id: str,  # noqa: ANN001
                 run_dir: Path, started: float) -> dict:
    """Everything that happens while the MLflow run is open: log, fit, test, then the job's `finish`."""
    if job.ckpt_path is None:  # a resumed run already has its parameters
        trainer.logger.log_hyperparams(flatten(job.params))
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        client.log_artifact(run_id, str(run_dir / "config.yaml"))
        for path in job.artifacts:
            client.log_artifact(run_id, str(path))
        (run_dir / "dataset.json").write_text(json.dumps(job.dataset, indent=2))
        client.log_artifact(run_id, str(run_dir / "dataset.json"))
        tracking.log_dataset(client, run_id, **corpus_dataset(job.corpus, Path(job.datamodule.root)))
        for key, value in job.metrics.items():
            client.log_metric(run_id, key, value)
    else:
        client.set_tag(run_id, "resumed_from", job.ckpt_path)

    module, datamodule, checkpoint = job.module, job.datamodule, job.checkpoint
    # weights_only: a checkpoint is data; one crafted to run code on load is refused.
    trainer.fit(module, datamodule=datamodule, ckpt_path=job.ckpt_path, weights_only=True)
    if not trainer.is_global_zero:
        return {}
    best = checkpoint.best_model_path or None
    best_score = checkpoint.best_model_score
    if best:
        saved = torch.load(best, map_location="cpu", weights_only=True)
        module.load_state_dict(saved["state_dict"])
        if best_score is None:  # ddp_spawn keeps the score in the worker; the checkpoint has it
            best_score = saved.get("callbacks", {}).get(checkpoint.state_key, {}).get("best_model_score")
    metrics = dict(trainer.callback_metrics)
    if cfg.test and job.corpus.split("test"):
        tester = _tester(cfg, trainer)
        tester.test(module, datamodule=datamodule, verbose=False)
        metrics.update(tester.callback_metrics)
    results = {k: float(v) for k, v in metrics.items() if v.numel() == 1}
    best_key = f"val/best_{job.monitor.rpartition('/')[2]}"  # val/nll -> val/best_nll
    results[best_key] = float(best_score) if best_score is not None else None
    if results[best_key] is not None:
        client.log_metric(run_id, best_key, results[best_key])
    results["train_minutes"] = (time.time() - started) / 60
    client.log_metric(run_id, "train_minutes", results["train_minutes"])
    if cfg.logger.log_checkpoints and best:
        client.log_artifact(run_id, best, "checkpoints")
    job.finish(results, client, run_id)
    return results

def corpus_dataset(corpus, root: Path) -> dict:  # noqa: ANN001 - a TokenCorpus or the seed's NoteCorpus
    """The run's corpus as an MLflow dataset: {name, digest, source, profile}.

    The name is the corpus folder's; the digest hashes every file the run uses (its bytes,
    style and split) with the tokenizer, so another file, split or tokenizer is another
    dataset. The profile holds the figures the `data/...` metrics used to: files and skipped
    files, then files, notes and tokens (where the corpus is tokenized) per split, overall
    and per style."""
    params = getattr(corpus, "params", None)
    tokenizer = params.key() if params is not None else None
    files = sorted(corpus.files, key=lambda f: f["rel"])
    digest = hashlib.sha256(json.dumps(tokenizer).encode())
    for f in files:
        digest.update(json.dumps([f["rel"], f["style"], f["split"]]).encode())
        digest.update(hashlib.sha256((root / f["rel"]).read_bytes()).digest())

    def per_split(summary: dict) -> dict:
        return {split: {k: summary[f"{split}_{k}"] for k in ("files", "notes", "tokens") if f"{split}_{k}" in summary}
                for split in ("train", "val", "test")}

    summary = corpus.summary()
    styles = sorted({f["style"] for f in files})
    profile = {"files": summary["files"], "skipped": summary["skipped"], "tokenizer": tokenizer,
               "splits": per_split(summary),
               "styles": {s: per_split(replace(corpus, files=[f for f in files if f["style"] == s]).summary())
                          for s in styles}}
    return {"name": root.name, "digest": digest.hexdigest()[:16], "source": root, "profile": profile}

def _tester(cfg: DictConfig, trainer):  # noqa: ANN001, ANN202
    """The fitted trainer, or a one-process copy of it after multi-process training: there a
    DistributedSampler would pad the test split with repeated windows."""
    if trainer.world_size == 1:
        return trainer
    return instantiate(cfg.trainer, devices=1, num_nodes=1, strategy="auto", logger=trainer.logger, callbacks=[],
                       enable_progress_bar=False, default_root_dir=trainer.default_root_dir)

def _end_run(client, run_id: str, exc: BaseException, ckpt_dir: Path, resumable: bool) -> None:  # noqa: ANN001
    """Mark the MLflow run KILLED (Ctrl-C, SIGTERM) or FAILED with the error as tag `error`.

    Never masks `exc`: a tracking failure here is logged, not raised.
    """
    try:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            client.set_tag(run_id, "stopped", _stopped_message(ckpt_dir, resumable))
            client.set_terminated(run_id, "KILLED")
        else:
            message = str(exc) if isinstance(exc, MidigenError) else f"{type(exc).__name__}: {exc}"
            client.set_tag(run_id, "error", first_line(message)[:1000])
            client.set_terminated(run_id, "FAILED")
    except Exception:
        log.exception("could not mark MLflow run %s as stopped", run_id)

def _stopped_message(ckpt_dir: Path, resumable: bool = True) -> str:
    if not resumable:
        return "interrupted; this task does not resume, start a new run"
    if (ckpt_dir / "last.ckpt").exists():
        return f"interrupted; {ckpt_dir / 'last.ckpt'} saved, resume with ckpt_path=last"
    return "interrupted before the first checkpoint"


# --- the event-token LSTM (task=events) -----------------------------------------------------


def event_job(cfg: DictConfig, run_dir: Path) -> Job:
    """The event-token LSTM: resume, data, model, originality index, style classifier, callbacks;
    once tested, the bundle, its registered version and the per-note NLL."""
    ckpt_path, run_id = _resume(cfg)
    index_path, reference_path = run_dir / "originality.npz", run_dir / "reference.json"
    # The samples' request is checked now, not at the end of the first epoch.
    sampling = SamplingCallback(run_dir / "samples", index_path=index_path, reference_path=reference_path,
                                seed=cfg.seed, **OmegaConf.to_container(cfg.callbacks.sampling))
    with config_errors("data"):
        datamodule = instantiate(cfg.data, _convert_="all")
    corpus = datamodule.load_corpus()  # bad data fails here, before any training
    styles = corpus.styles if cfg.style_conditioning else []
    container = OmegaConf.to_container(cfg, resolve=True)
    with config_errors("model"):
        module = EventLSTMModule(model=container["model"], tokenizer=container["tokenizer"], optim=container["optim"],
                                 scheduler=container.get("scheduler") or None, styles=styles)

    registration.build_originality_index(corpus, datamodule, index_path)
    registration.build_reference(corpus, datamodule, reference_path)
    classifier_path = run_dir / "style_classifier.json"
    classifier_accuracy = registration.fit_style_classifier(corpus, datamodule, container.get("style_classifier"),
                                                            classifier_path)
    tok_dir = run_dir / "tokenizer"
    registration.save_tokenizer(container["tokenizer"], tok_dir)  # the bundle copies it, resumed runs too
    checkpoint, callbacks = event_callbacks(cfg, run_dir, sampling)
    artifacts = [tok_dir / "tokenizer.json"]
    if corpus.skipped:
        artifacts.append(corpus.cache_dir / "skipped.csv")
        print(f"midigen: skipped {len(corpus.skipped)} unusable MIDI files (reasons: {corpus.cache_dir / 'skipped.csv'})")
    left = Leftovers(run_dir, sampling, index_path, classifier_path, reference_path)

    def finish(results: dict, client, run_id: str) -> None:  # noqa: ANN001
        finish_event_run(cfg, module, corpus, container, left, results, client, run_id)

    return Job(name=cfg.logger.experiment_name, datamodule=datamodule, corpus=corpus, module=module,
               checkpoint=checkpoint, callbacks=callbacks, monitor="val/nll", params=container,
               dataset=corpus.summary(), finish=finish, artifacts=artifacts,
               metrics={f"style_classifier/val_acc/{style}": accuracy
                        for style, accuracy in (classifier_accuracy or {}).items()},
               ckpt_path=ckpt_path, run_id=run_id)


def event_callbacks(cfg: DictConfig, run_dir: Path, sampling: SamplingCallback) -> tuple[ModelCheckpoint, list]:
    """(the checkpoint callback, every callback but early stopping) of an event-LSTM run."""
    cb_cfg = cfg.callbacks
    # save_last: last.ckpt is rewritten at the end of every epoch, the point `ckpt_path=last` resumes from.
    ckpt_dir = run_dir / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, monitor=cb_cfg.checkpoint.monitor, mode="min",
                                 save_top_k=cb_cfg.checkpoint.save_top_k, save_last=cb_cfg.checkpoint.save_last,
                                 filename="epoch{epoch:03d}-nll{val/nll:.4f}", auto_insert_metric_name=False)
    return checkpoint, [checkpoint, sampling, EpochWindows(cfg.seed), InterruptGuard(ckpt_dir), StopReason(),
                        LearningRateMonitor()]


@dataclass
class Leftovers:
    """What an event-LSTM run writes beside its checkpoints for the bundle."""

    run_dir: Path
    sampling: SamplingCallback
    index_path: Path
    classifier_path: Path
    reference_path: Path


def finish_event_run(cfg: DictConfig, module: EventLSTMModule, corpus, container: dict, left: Leftovers,  # noqa: ANN001
                     results: dict, client, run_id: str, card_extra: str = "", tags: dict | None = None,  # noqa: ANN001
                     meta_extra: dict | None = None) -> Path:
    """Once tested: NLL per note, the bundle (its card with `card_extra`, its config.json with
    `meta_extra`), the registered version
    (tagged with `tags` too) and what a user reads at the end. Returns the bundle folder."""
    cut = client.get_run(run_id).data.tags.get("stopped", "stopped")  # set by StopReason where fit ran
    for key, value in per_note(corpus, results).items():
        results[key] = value
        client.log_metric(run_id, key, value)
    styles = list(module.net.config.styles)
    bundle_dir = registration.write_bundle(module, left.run_dir, container, corpus, results, run_id, left.sampling,
                                           left.index_path, left.classifier_path, left.reference_path, card_extra,
                                           meta_extra)
    if cfg.registry.name:
        summary = corpus.summary()
        score = {"val_nll": results.get("val/best_nll"), "tokenizer": module.params.key(),
                 "val_files": summary.get("val_files"), "val_tokens": summary.get("val_tokens")}
        version_tags = {**registration.version_tags(styles, results, registration.last_samples(left.sampling)),
                        **(tags or {})}
        uri = tracking.tracking_uri(cfg.logger.tracking_uri)
        results.update(registration.log_model(run_id, bundle_dir, uri, cfg.registry.name, cfg.registry.alias,
                                              cfg.registry.get("promote", "always"), score, version_tags))
    print(f"midigen: run {run_id} ({cfg.logger.experiment_name}) {cut}; val/nll {results.get('val/best_nll')}")
    print(f"midigen: samples in {left.run_dir / 'samples'}; model in {bundle_dir}")
    if results.get("version"):
        print(f"midigen: registered models:/{cfg.registry.name}/{results['version']}"
              + (f"; {results['promotion']}" if results.get("promotion") else ""))
    return bundle_dir


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
