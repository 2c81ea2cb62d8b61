"""Sweeps: one failing job does not take the others down, and its MLflow run says why."""

from __future__ import annotations

import pytest

from conftest import CORPUS, run_midigen

pytestmark = pytest.mark.slow


def test_failing_jobs_do_not_stop_the_sweep_and_their_runs_say_why(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Job 0 fails inside fit (its MLflow run exists), job 1 before any run exists (a bad
    # value), job 2 is fine and must still run.
    proc = run_midigen("train", "-m", "experiment=smoke", f"data.root={CORPUS}", f"paths.cache={tmp_path / 'cache'}",
                       f"paths.outputs={tmp_path / 'out'}", "registry.name=null", "test=false",
                       "trainer.max_epochs=1", "optim.lr=-1,abc,0.002", env={"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = [line for line in proc.stderr.splitlines() if line.startswith("midigen: error: sweep job")]
    assert summary == [
        "midigen: error: sweep job 0 (optim.lr=-1) failed: ValueError: Invalid learning rate: -1",
        "midigen: error: sweep job 1 (optim.lr=abc) failed: optim.lr=abc: optim.lr takes a number "
        "(like its default 0.002), not 'abc'",
    ]
    client = MlflowClient(uri)
    runs = {r.data.tags["sweep_job"]: r for r in client.search_runs([client.get_experiment_by_name("smoke").experiment_id])}
    assert set(runs) == {"0", "2"}  # job 1 failed before it had a run: nothing to mark
    assert runs["0"].info.status == "FAILED"
    assert runs["0"].data.tags["error"] == "ValueError: Invalid learning rate: -1"
    assert runs["2"].info.status == "FINISHED" and "error" not in runs["2"].data.tags
    assert runs["0"].data.tags["sweep"] == runs["2"].data.tags["sweep"]
    # named by what differs between the jobs, not by every override of the command line
    assert runs["2"].info.run_name == "smoke #2 optim.lr=0.002"
    assert "val/nll" in runs["2"].data.metrics
