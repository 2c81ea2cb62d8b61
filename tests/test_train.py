"""Training: config composition, a smoke fit tracked in MLflow, registration, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import CORPUS, REPO, run_midigen

import midigen.train.app  # noqa: F401  (registers the midigen_root resolver)

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def _compose(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=False)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = _compose(f"experiment={experiment}")
    assert cfg.logger.experiment_name
    assert Path(cfg.paths.corpus).is_absolute()


def test_seed_experiment_is_the_dissertations_second_approach():
    cfg = _compose("experiment=seed")
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.input) == (3, 430, "onehot")
    assert (cfg.data.scheme, cfg.data.seq_len, cfg.data.batch_size) == ("seed", 219, 64)
    assert cfg.trainer.max_epochs == 150 and cfg.optim._target_ == "torch.optim.Adam"
    assert cfg.tokenizer.mode == "seed" and cfg.tokenizer.max_shift == 125
    assert cfg.data.augment.transpose == 0 and cfg.style_conditioning is False


# Each value differs from what conf/ composes to (checked below), so it is only there if the override landed.
OVERRIDES = {"model.hidden_size": 77, "model.num_layers": 4, "model.dropout": 0.25, "data.seq_len": 96,
             "data.batch_size": 12, "data.augment.transpose": 2, "optim.lr": 0.0123, "trainer.max_epochs": 5,
             "tokenizer.max_shift": 30}


@pytest.mark.parametrize("experiment", [None, "seed"])
def test_overrides_reach_the_config(experiment):
    """A command-line value wins over conf/'s groups and over the experiment file that sets the same key."""
    base = [f"experiment={experiment}"] if experiment else []
    default = _compose(*base)
    for key, value in OVERRIDES.items():
        assert OmegaConf.select(default, key) != value, f"{key}={value} is the default already: it would prove nothing"
    cfg = _compose(*base, *(f"{key}={value}" for key, value in OVERRIDES.items()))
    assert {k: OmegaConf.select(cfg, k) for k in OVERRIDES} == OVERRIDES


def test_optuna_search_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert "model.hidden_size" in cfg.hydra.sweeper.params


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def test_smoke_run_is_tracked_registered_and_sampled(smoke_run):
    client = _client(smoke_run["uri"])
    meta = json.loads((smoke_run["run_dir"] / "mlflow_run.json").read_text())
    run = client.get_run(meta["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.hidden_size"] == "32" and params["data.scheme"] == "windows"
    assert "commit" in run.data.tags and "experiment=smoke" in run.data.tags["overrides"]
    metrics = run.data.metrics
    for key in ("val/nll", "val/ppl", "val/acc", "test/nll", "sample/in_scale",
                "sample/stuck_ratio", "sample/copy_ratio"):
        assert key in metrics, key
    # per-style held-out NLL for each style with test files; they bracket the overall figure
    # (it is their event-weighted mean)
    per_style = [v for k, v in metrics.items() if k.startswith("test/nll/")]
    assert per_style and {k for k in metrics if k.startswith("test/nll/")} <= {"test/nll/chorale", "test/nll/fiddle"}
    assert min(per_style) - 1e-4 <= metrics["test/nll"] <= max(per_style) + 1e-4
    # the loss falls on a tiny real corpus
    history = client.get_metric_history(run.info.run_id, "train/nll_epoch")
    assert len(history) == 3 and history[-1].value < history[0].value
    # artifacts: config, tokenizer, dataset summary, checkpoint, samples of every epoch
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "tokenizer.json", "dataset.json", "checkpoints", "samples"} <= names
    epochs = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert epochs == {"samples/epoch_000", "samples/epoch_001", "samples/epoch_002"}
    files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "samples/epoch_002")}
    assert any(f.endswith(".mid") for f in files) and any(f.endswith(".png") for f in files)
    assert "metrics.json" in files
    assert "index.html" in files and any(f.endswith(".mp3") for f in files)  # to listen in the MLflow UI
    # registered with the alias asked for
    version = client.get_model_version_by_alias("midigen", "champion")
    assert version.run_id == run.info.run_id or version.tags.get("run_id") == run.info.run_id
    # scored, so a later `make train` can tell whether it beats this one
    assert float(version.tags["val_nll"]) == pytest.approx(metrics["val/best_nll"], rel=1e-5)
    assert version.tags["tokenizer"] and int(version.tags["val_files"]) >= 1


def test_registered_model_loads_as_pyfunc_and_matches_the_cli(smoke_run, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", smoke_run["uri"])
    mlflow.set_tracking_uri(smoke_run["uri"])
    model = mlflow.pyfunc.load_model("models:/midigen@champion")
    out = model.predict({}, params={"num": 2, "bars": 2, "bpm": 100, "seed": 11})  # the request: params
    assert list(out["name"]) == ["midigen_s11_01.mid", "midigen_s11_02.mid"]
    proc = run_midigen("generate", "--model", "models:/midigen@champion", "--num", "2", "--bars", "2", "--bpm",
                       "100", "--seed", "11", "--out", str(tmp_path), env=smoke_run["env"])
    assert proc.returncode == 0, proc.stderr
    for name, midi in zip(out["name"], out["midi"]):
        assert (tmp_path / name).read_bytes() == midi


def test_resume_continues_the_same_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["experiment=smoke", f"data.root={CORPUS}", f"paths.cache={tmp_path / 'cache'}",
              f"paths.outputs={tmp_path / 'out'}", "registry.name=null", "test=false",
              "callbacks.sampling.every_n_epochs=0"]
    first = run_midigen("train", *common, "trainer.max_epochs=1", env={"MLFLOW_TRACKING_URI": uri})
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_midigen("train", *common, "trainer.max_epochs=2", "ckpt_path=last", env={"MLFLOW_TRACKING_URI": uri})
    assert second.returncode == 0, second.stderr[-2000:]
    client = _client(uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert len(runs) == 1
    history = client.get_metric_history(runs[0].info.run_id, "val/nll")
    assert len(history) == 2  # epoch 0 from the first process, epoch 1 from the resumed one
    assert runs[0].info.status == "FINISHED" and "resumed_from" in runs[0].data.tags


def test_bad_configuration_is_one_line_before_training(tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = run_midigen("train", "experiment=smoke", f"data.root={tmp_path / 'missing'}",
                       f"paths.outputs={tmp_path / 'out'}", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("midigen: error: corpus folder")
    # an unknown key: tests/test_bad_config.py (the same command, exactly one line)
