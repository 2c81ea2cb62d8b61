"""More than one process: `trainer=ddp_cpu` (2 processes, gloo, ddp_spawn) makes one MLflow run,
one set of checkpoints, samples and one registered model, with the figures of the whole run."""

from __future__ import annotations

import json

import pytest

from conftest import CORPUS, run_midigen

pytestmark = pytest.mark.slow


def test_two_processes_make_one_run_one_checkpoint_and_one_model(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_midigen("train", "experiment=smoke", "trainer=ddp_cpu", f"data.root={CORPUS}",
                       f"paths.cache={tmp_path / 'cache'}", f"paths.outputs={tmp_path / 'out'}",
                       env={"MLFLOW_TRACKING_URI": uri, "MIDIGEN_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr  # it really ran two

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["stopped"] == "completed 2 epochs"  # decided in the worker, not guessed after
    assert {"val/nll", "test/nll"} <= set(run.data.metrics)

    run_dirs = [p.parent for p in (tmp_path / "out").rglob("mlflow_run.json")]
    assert len(run_dirs) == 1
    assert json.loads((run_dirs[0] / "mlflow_run.json").read_text())["run_id"] == run.info.run_id
    assert sorted(p.name for p in (tmp_path / "out").rglob("last*.ckpt")) == ["last.ckpt"]  # rank 0 only
    assert sorted(p.name for p in (run_dirs[0] / "samples").iterdir()) == ["epoch_000", "epoch_001"]
    assert len(list((run_dirs[0] / "samples" / "epoch_001").glob("*.mid"))) == 2  # not 2 per process

    versions = client.search_model_versions("name='midigen'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    card = json.loads((run_dirs[0] / "bundle" / "config.json").read_text())
    assert card["metrics"]["val/best_nll"] == pytest.approx(min(
        m.value for m in client.get_metric_history(run.info.run_id, "val/nll")))
    assert card["samples"]["epoch"] == 1  # the last epoch's sample figures reach the model card
