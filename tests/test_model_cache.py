"""Registry models and their download cache: `models:/midigen/1` of one store is never served
for `models:/midigen/1` of another (every MLflow store numbers its versions from 1)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_midigen


def register_tiny_model(store, seed: int) -> str:
    """A tiny model logged and registered as `make train` does (`log_model`); returns its run id."""
    import torch
    from mlflow import MlflowClient

    from midigen import tracking
    from midigen.data.events import EventParams
    from midigen.model import EventLSTM, ModelConfig
    from midigen.producer.bundle import save_bundle
    from midigen.train.registration import log_model, save_tokenizer

    uri = f"sqlite:///{store / 'mlflow.db'}"
    tracking.ensure_store(uri)
    client = MlflowClient(uri)
    run_id = client.create_run(tracking.ensure_experiment("cache-test", uri)).info.run_id
    params = EventParams.beat()
    torch.manual_seed(seed)
    model = EventLSTM(ModelConfig(vocab_size=params.vocab_size, hidden_size=16, num_layers=1, embedding_dim=8))
    with torch.no_grad():  # a strong, seed-specific preference so the two models write different files
        model.head.bias.add_(torch.randn_like(model.head.bias) * 3)
    save_tokenizer(params.to_dict(), store / "tok")
    bundle = save_bundle(store / "bundle", model, store / "tok" / "tokenizer.json", {"run_id": run_id})
    result = log_model(run_id, bundle, uri, "midigen", alias="champion")
    client.set_terminated(run_id)
    assert result["version"] == 1  # the collision the cache must survive
    return run_id


def generate(store, cache, out, *extra):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "MIDIGEN_CACHE": str(cache)}
    proc = run_midigen("generate", "--model", "models:/midigen@champion", "--num", "2", "--bars", "2",
                       "--seed", "3", "--max-copy", "off", "--out", str(out), "--json", *extra, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads(proc.stdout)
    files = [open(f, "rb").read() for f in payload["files"]]
    return payload["model_source"], files


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """A migrated, empty SQLite store to copy (creating one runs MLflow's migrations: seconds)."""
    from midigen import tracking

    folder = tmp_path_factory.mktemp("template")
    tracking.ensure_store(f"sqlite:///{folder / 'mlflow.db'}")
    return folder / "mlflow.db"


def quick_version(empty_store, store: Path, seed: int) -> str:
    """Version 1 of `midigen` in a new store at `store`: a tiny model's bundle as a run's model
    artifact, registered by source (what `log_model` does, without building a pyfunc)."""
    import torch
    from mlflow import MlflowClient

    from midigen import tracking
    from midigen.data.events import EventParams
    from midigen.model import EventLSTM, ModelConfig
    from midigen.producer.bundle import save_bundle
    from midigen.train.registration import save_tokenizer

    store.mkdir()
    shutil.copyfile(empty_store, store / "mlflow.db")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(tracking.ensure_experiment("cache-test", uri)).info.run_id
    params = EventParams.beat()
    torch.manual_seed(seed)
    model = EventLSTM(ModelConfig(vocab_size=params.vocab_size, hidden_size=16, num_layers=1, embedding_dim=8))
    with torch.no_grad():
        model.head.bias.add_(torch.randn_like(model.head.bias) * 3)
    save_tokenizer(params.to_dict(), store / "tok")
    bundle = save_bundle(store / "bundle", model, store / "tok" / "tokenizer.json", {"run_id": run_id})
    client.log_artifacts(run_id, str(bundle), "model/artifacts/bundle")
    client.create_registered_model("midigen")
    version = client.create_model_version("midigen", f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias("midigen", "champion", version.version)
    assert str(version.version) == "1"
    return run_id


def test_the_cache_serves_each_store_its_own_version_1(tmp_path, monkeypatch, empty_store):
    from midigen.producer.bundle import load_bundle
    from midigen.producer.generate import GenerateRequest, generate_batch
    from midigen.producer.registry import locate_model

    monkeypatch.setenv("MIDIGEN_CACHE", str(tmp_path / "cache"))
    runs, files = {}, {}
    for store, seed, origin in (("a", 1, "registry"), ("b", 2, "registry"), ("a", None, "cache"),
                                ("b", None, "cache"), ("c", 3, "registry")):
        if seed is not None:
            runs[store] = quick_version(empty_store, tmp_path / store, seed)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / store / 'mlflow.db'}")
        source = locate_model("models:/midigen@champion")
        assert (source.origin, source.run_id, source.version) == (origin, runs[store], "1")
        assert runs[store] in source.describe() and "models:/midigen/1" in source.describe()
        bundle = load_bundle(source.path)
        midi = [r["midi"] for r in generate_batch(bundle, GenerateRequest(num=2, bars=2, seed=3, max_copy=None))]
        assert files.setdefault(store, midi) == midi  # the cached copy is the same model
    assert len({runs["a"], runs["b"], runs["c"]}) == 3
    assert files["a"] != files["b"] != files["c"]


@pytest.mark.slow
def test_each_store_gets_its_own_version_1_through_one_cache(tmp_path):
    """End to end, as producers meet it: models logged by `make train`'s own `log_model`, `midigen
    generate` processes sharing one MIDIGEN_CACHE, a store deleted and trained into again."""
    cache = tmp_path / "cache"
    a, b = tmp_path / "store-a", tmp_path / "store-b"
    a.mkdir(), b.mkdir()
    run_a, run_b = register_tiny_model(a, seed=1), register_tiny_model(b, seed=2)

    source_a, files_a = generate(a, cache, tmp_path / "out-a")
    assert source_a["run_id"] == run_a and source_a["origin"] == "registry" and source_a["version"] == "1"
    source_b, files_b = generate(b, cache, tmp_path / "out-b")
    assert source_b["run_id"] == run_b and source_b["origin"] == "registry"  # not A's cached copy
    assert files_a != files_b
    again, files_again = generate(a, cache, tmp_path / "out-a2")
    assert again["origin"] == "cache" and again["run_id"] == run_a and files_again == files_a

    # Delete store A and retrain into a new one at the same path: version 1 again, another run.
    # (In a fresh process, as a second `make train` is: this one's MLflow keeps the old database open.)
    shutil.rmtree(a)
    a.mkdir()
    proc = subprocess.run([sys.executable, "-c", "import sys; from test_model_cache import register_tiny_model; "
                           f"print(register_tiny_model(__import__('pathlib').Path({str(a)!r}), seed=3))"],
                          cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_new = proc.stdout.strip().splitlines()[-1]
    source_new, files_new = generate(a, cache, tmp_path / "out-a3")
    assert source_new["run_id"] == run_new != run_a and source_new["origin"] == "registry"
    assert files_new != files_a

    # The text summary names the model it used.
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{b / 'mlflow.db'}", "MIDIGEN_CACHE": str(cache)}
    proc = run_midigen("generate", "--num", "1", "--bars", "1", "--seed", "3", "--out", str(tmp_path / "txt"),
                       env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"run {run_b}" in proc.stdout and "models:/midigen/1" in proc.stdout and "cached copy" in proc.stdout

    # The cache can be listed and cleared.
    listing = run_midigen("models", "cache", "list", "--json", env=env)
    entries = json.loads(listing.stdout)["models"]
    assert {e["run_id"] for e in entries} == {run_a, run_b, run_new}
    cleared = run_midigen("models", "cache", "clear", env=env)
    assert cleared.returncode == 0 and "removed 3 cached models" in cleared.stdout
    assert not any(p for p in cache.glob("models/*"))


def test_pull_refuses_a_folder_holding_another_model(tmp_path, empty_store, monkeypatch):
    from midigen.errors import MidigenError
    from midigen.producer.registry import locate_model, pull_model

    a, b = tmp_path / "store-a", tmp_path / "store-b"
    run_a, run_b = quick_version(empty_store, a, seed=1), quick_version(empty_store, b, seed=2)
    out = tmp_path / "models"
    monkeypatch.setenv("MIDIGEN_CACHE", str(tmp_path / "c"))

    def pull(store, force=False):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
        return pull_model("models:/midigen@champion", out, force=force)

    first = pull(a)
    assert first.path == out / "midigen-1" and (first.origin, first.run_id) == ("registry", run_a)
    assert pull(a).origin == "folder"  # the same model: kept as it is
    with pytest.raises(MidigenError, match=f"holds another model \\(run {run_a}.*--force"):
        pull(b)
    assert pull(b, force=True).run_id == run_b
    # the pulled folder says which run it holds, offline
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    held = locate_model(str(out / "midigen-1"))
    assert (held.origin, held.run_id, held.version) == ("folder", run_b, "1")

    # the command line: one line, exit 2, the folder untouched
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{a / 'mlflow.db'}", "MIDIGEN_CACHE": str(tmp_path / "c")}
    clash = run_midigen("models", "pull", "models:/midigen@champion", "--out", str(out), env=env)
    assert clash.returncode == 2 and clash.stderr.count("\n") == 1 and "holds another model" in clash.stderr
    assert json.loads((out / "midigen-1" / "midigen-source.json").read_text())["run_id"] == run_b


def test_a_registry_that_fails_is_an_error_not_the_shipped_model(tmp_path, monkeypatch):
    """A registry that answers but refuses must not silently hand the producer another model."""
    from mlflow.exceptions import MlflowException

    from midigen.errors import MidigenError
    from midigen.producer import registry

    class Broken:
        def search_model_versions(self, *_):
            raise MlflowException("permission denied")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setattr(registry, "_client", lambda: (Broken(), "sqlite:///x.db"))
    with pytest.raises(MidigenError, match="answered with an error.*permission denied"):
        registry.default_model_ref()

    class Empty:
        def search_model_versions(self, *_):
            return []

    monkeypatch.setattr(registry, "_client", lambda: (Empty(), "sqlite:///x.db"))
    assert registry.default_model_ref() == str(REPO / "models" / "pretrained")
