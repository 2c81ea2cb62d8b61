"""Sweeps: one failing job does not take the others down, and its MLflow run says why."""

from __future__ import annotations

import pytest

from conftest import CORPUS, run_midigen

pytestmark = pytest.mark.slow


def test_failing_jobs_do_not_stop_the_sweep_and_their_runs_say_why(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Job 0 fails inside fit (its MLflow run exists: Lightning refuses a validation interval
    # longer than the epoch), job 1 before any run exists (a bad value), job 2 is fine and must
    # still run.
    proc = run_midigen("train", "-m", "experiment=smoke", f"data.root={CORPUS}", f"paths.cache={tmp_path / 'cache'}",
                       f"paths.outputs={tmp_path / 'out'}", "registry.name=null", "test=false",
                       "trainer.max_epochs=1", "trainer.val_check_interval=100000,abc,1.0", env={"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = [line for line in proc.stderr.splitlines() if line.startswith("midigen: error: sweep job")]
    assert len(summary) == 2, proc.stderr[-3000:]
    assert summary[0].startswith("midigen: error: sweep job 0 (trainer.val_check_interval=100000) failed: ")
    assert summary[1].startswith("midigen: error: sweep job 1 (trainer.val_check_interval=abc) failed: ")
    client = MlflowClient(uri)
    runs = {r.data.tags["sweep_job"]: r for r in client.search_runs([client.get_experiment_by_name("smoke").experiment_id])}
    assert set(runs) == {"0", "2"}  # job 1 failed before it had a run: nothing to mark
    assert runs["0"].info.status == "FAILED"
    assert "val_check_interval" in runs["0"].data.tags["error"]
    assert runs["2"].info.status == "FINISHED" and "error" not in runs["2"].data.tags
    assert runs["0"].data.tags["sweep"] == runs["2"].data.tags["sweep"]
    # named by what differs between the jobs, not by every override of the command line
    assert runs["2"].info.run_name == "smoke #2 trainer.val_check_interval=1.0"
    assert "val/nll" in runs["2"].data.metrics
