"""What a training run leaves in MLflow for a team: an experiment that opens on its runs table,
the corpus as the run's dataset (not a dozen data/ metrics), sweep runs named by what they vary,
and registry versions tagged with what teams filter by."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import CORPUS

KIND = ("mlflow.experimentKind", "custom_model_development")


def test_experiments_say_they_are_model_training(tmp_path):
    from mlflow import MlflowClient

    from midigen import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    new = tracking.ensure_experiment("fresh", uri)
    assert client.get_experiment(new).tags[KIND[0]] == KIND[1]
    old = client.create_experiment("older")  # made before the tag existed
    assert KIND[0] not in client.get_experiment(old).tags
    assert tracking.ensure_experiment("older", uri) == old
    assert client.get_experiment(old).tags[KIND[0]] == KIND[1]
    chosen = client.create_experiment("chosen", tags={KIND[0]: "finetuning"})  # someone picked a kind in the UI
    tracking.ensure_experiment("chosen", uri)
    assert client.get_experiment(chosen).tags[KIND[0]] == "finetuning"


# --- sweep run names ------------------------------------------------------------------------------


def sweep_job(tmp_path: Path, num: int, job_overrides: list[str], command_line: list[str] | None = None,
              searched: dict | None = None):
    """A sweep job's HydraConfig as `sweep_run_name` reads it, and the multirun.yaml Hydra's
    basic sweeper saves (`command_line`: the sweep's overrides as typed)."""
    if command_line is not None:
        OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": command_line}}}), tmp_path / "multirun.yaml")
    return OmegaConf.create({"sweep": {"dir": str(tmp_path)}, "sweeper": {"params": searched},
                             "overrides": {"task": job_overrides}, "job": {"num": num}})


@pytest.mark.parametrize("command_line,job,searched,name", [
    (["experiment=smoke", "data.root=/c", "model.hidden_size=16,32", "optim.lr=0.01"],
     ["experiment=smoke", "data.root=/c", "model.hidden_size=32", "optim.lr=0.01"], None,
     "smoke #1 model.hidden_size=32"),
    (["model=lstm,gru", "+trainer.fast=true", "optim.lr=range(1,3)"],
     ["model=gru", "+trainer.fast=true", "optim.lr=2"], None, "smoke #1 model=gru optim.lr=2"),
    (None, ["hparams_search=optuna", "experiment=smoke", "optim.lr=0.0031", "model.num_layers=2"],
     {"model.num_layers": "choice(1, 2)", "optim.lr": "interval(0.001, 0.01)"},
     "smoke #1 optim.lr=0.0031 model.num_layers=2"),  # an Optuna trial: its search space
    (["experiment=smoke", "seed=1"], ["experiment=smoke", "seed=1"], None, "smoke #1"),
], ids=["one-key", "group-and-range", "optuna", "nothing-varies"])
def test_a_sweep_job_is_named_by_what_differs_between_the_jobs(tmp_path, command_line, job, searched, name):
    from midigen.train.config import sweep_run_name

    assert sweep_run_name("smoke", sweep_job(tmp_path, 1, job, command_line, searched)) == name


# --- the corpus as an MLflow dataset ------------------------------------------------------------


def test_the_corpus_dataset_digest_follows_the_files_and_its_profile_adds_up(corpus_copy, tmp_path):
    from midigen.data.cache import build_token_cache
    from midigen.data.events import EventParams
    from midigen.train.run import corpus_dataset

    def dataset(params=EventParams.beat()):
        return corpus_dataset(build_token_cache(corpus_copy, params, tmp_path / "cache"), corpus_copy)

    first = dataset()
    assert dataset()["digest"] == first["digest"]  # the same files: the same dataset
    assert first["name"] == "corpus" and first["source"] == corpus_copy
    profile = first["profile"]
    assert profile["files"] == 16 and set(profile["styles"]) == {"chorale", "fiddle"}
    for split, counts in profile["splits"].items():
        assert set(counts) == {"files", "notes", "tokens"}
        for key, total in counts.items():  # the styles' figures add up to the split's
            assert sum(style[split][key] for style in profile["styles"].values()) == total, (split, key)
    assert sum(c["files"] for c in profile["splits"].values()) == 16
    assert dataset(EventParams.seed())["digest"] != first["digest"]  # other tokens: another dataset
    midi = corpus_copy / "chorale" / "bwv66.6.mid"
    midi.write_bytes(midi.read_bytes()[:-4] + bytes(4))  # the same name, other bytes
    assert dataset()["digest"] != first["digest"]


def test_the_seeds_note_corpus_is_a_dataset_too():
    from midigen.train.note_regression import load_note_corpus
    from midigen.train.run import corpus_dataset

    profile = corpus_dataset(load_note_corpus(CORPUS), CORPUS)["profile"]
    assert profile["tokenizer"] is None and profile["files"] == 16
    assert set(profile["splits"]["train"]) == {"files", "notes"}  # notes, not tokens
    assert sum(style["train"]["notes"] for style in profile["styles"].values()) == profile["splits"]["train"]["notes"]


def test_a_training_run_logs_its_corpus_as_a_dataset_not_as_metrics(smoke_run):
    from mlflow import MlflowClient

    client = MlflowClient(smoke_run["uri"])
    run = client.get_run(json.loads((smoke_run["run_dir"] / "mlflow_run.json").read_text())["run_id"])
    assert not [k for k in run.data.metrics if k.startswith("data/")]
    (logged,) = run.inputs.dataset_inputs
    dataset = logged.dataset
    assert dataset.name == "corpus" and len(dataset.digest) == 16
    assert json.loads(dataset.source) == {"uri": CORPUS.resolve().as_uri()}
    assert {t.key: t.value for t in logged.tags} == {"mlflow.data.context": "training"}
    profile = json.loads(dataset.profile)
    summary = json.loads((smoke_run["run_dir"] / "dataset.json").read_text())
    assert profile["files"] == summary["files"] and profile["skipped"] == summary["skipped"]
    for split in ("train", "val", "test"):
        assert profile["splits"][split] == {k: summary[f"{split}_{k}"] for k in ("files", "notes", "tokens")}
    assert set(profile["styles"]) == {"chorale", "fiddle"} and profile["tokenizer"]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[KIND[0]] == KIND[1]


# --- registry versions ----------------------------------------------------------------------------


def test_the_registered_version_carries_tags_teams_filter_by_and_a_signature(smoke_run):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    client = MlflowClient(smoke_run["uri"])
    version = client.get_model_version_by_alias("midigen", "champion")
    run = client.get_run(version.run_id)
    tags = version.tags
    assert tags["styles"] == "chorale,fiddle"
    assert tags["tokenizer"] and tags["val_nll"]
    assert float(tags["val_nll_per_note"]) == pytest.approx(run.data.metrics["val/nll_per_note"], abs=1e-4)
    last = sorted((smoke_run["run_dir"] / "samples").glob("epoch_*/metrics.json"))[-1]
    usable = json.loads(last.read_text())["mean"]["usable"]
    assert 0 <= float(tags["samples_usable"]) <= 1 and float(tags["samples_usable"]) == pytest.approx(usable, abs=1e-3)
    found = client.search_model_versions("name = 'midigen' and tags.styles = 'chorale,fiddle'")
    assert [v.version for v in found] == [version.version]
    with _use_tracking_uri(smoke_run["uri"]):
        info = mlflow.models.get_model_info("models:/midigen@champion")
    assert info.signature is not None and info.signature.params is not None
    assert {p.name for p in info.signature.params.params} >= {"num", "bars", "seed", "style", "temperature"}
