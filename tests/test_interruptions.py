"""Interruptions: a killed run resumes into the same MLflow run and the same result; Ctrl-C and
SIGTERM stop cleanly with a checkpoint and a KILLED run, never one left RUNNING."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CORPUS, REPO, run_midigen

pytestmark = pytest.mark.slow

# Long enough epochs (~1.5 s on one core) to land a signal inside one; dropout on, so the resumed
# run only matches if the dropout masks of every epoch do too.
COMMON = ["experiment=smoke", f"data.root={CORPUS}", "registry.name=null", "test=false",
          "model.dropout=0.3", "data.samples_per_epoch=400", "trainer.max_epochs=3",
          "callbacks.early_stopping.patience=null", "callbacks.sampling.every_n_epochs=1"]
# Same seed, same machine, same thread count: CPU kernels are deterministic, so the
# resumed run's losses equal the uninterrupted run's to float32 rounding.
TOLERANCE = 1e-6


def _args(tmp_path: Path, name: str) -> list[str]:
    return [*COMMON, f"paths.cache={tmp_path / 'cache'}", f"paths.outputs={tmp_path / name}"]


def _env(tmp_path: Path, name: str) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "MIDIGEN_THREADS": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / name}.db"}


def _start(tmp_path: Path, name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "midigen", "train", *_args(tmp_path, name), *extra],
                            cwd=REPO, env=_env(tmp_path, name), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(root.rglob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"training ended before {pattern} appeared:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} under {root} after {timeout} s")


def _run(tmp_path: Path, name: str):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / name}.db")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    return client, runs


def _val_nll(client, run_id: str) -> dict[int, float]:  # noqa: ANN001
    """val/nll by training step; a step logged twice (before and after a kill) keeps the later value."""
    history = sorted(client.get_metric_history(run_id, "val/nll"), key=lambda m: m.timestamp)
    return {m.step: m.value for m in history}


def test_sigkill_mid_epoch_then_resume_finishes_the_same_run_with_the_same_loss(tmp_path):
    reference = run_midigen("train", *_args(tmp_path, "reference"), env=_env(tmp_path, "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    client, runs = _run(tmp_path, "reference")
    expected = _val_nll(client, runs[0].info.run_id)
    assert len(expected) == 3

    proc = _start(tmp_path, "killed")
    first = _wait_for("last.ckpt", tmp_path / "killed", proc)  # epoch 0 done and checkpointed
    written = first.stat().st_mtime
    time.sleep(0.3)  # inside epoch 1
    proc.kill()
    proc.wait(30)
    assert first.stat().st_mtime == written, "the kill landed after epoch 1 ended; make epochs longer"
    client, runs = _run(tmp_path, "killed")
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"  # SIGKILL leaves no chance to say otherwise
    run_id = runs[0].info.run_id

    resumed = run_midigen("train", *_args(tmp_path, "killed"), "ckpt_path=last", env=_env(tmp_path, "killed"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, runs = _run(tmp_path, "killed")
    assert [r.info.run_id for r in runs] == [run_id]  # continued, not a second run
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["resumed_from"].endswith("last.ckpt")
    got = _val_nll(client, run_id)
    assert got.keys() == expected.keys()
    for step in expected:
        assert abs(got[step] - expected[step]) <= TOLERANCE * abs(expected[step]), (step, got, expected)
    metas = [json.loads(p.read_text()) for p in (tmp_path / "killed").rglob("mlflow_run.json")]
    assert {m["run_id"] for m in metas} == {run_id}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_saves_a_checkpoint_and_marks_the_run_killed(tmp_path, signum):
    proc = _start(tmp_path, "stopped")
    first = _wait_for("last.ckpt", tmp_path / "stopped", proc)
    written = first.stat().st_mtime
    time.sleep(0.3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("midigen: interrupted;") and "resume with ckpt_path=last" in last_line
    assert first.stat().st_mtime > written  # saved again where it stopped, mid-epoch
    client, runs = _run(tmp_path, "stopped")
    assert len(runs) == 1 and runs[0].info.status == "KILLED"
    assert "resume with ckpt_path=last" in runs[0].data.tags["stopped"]
    assert "error" not in runs[0].data.tags
    if signum == signal.SIGINT:  # the mid-epoch checkpoint resumes too
        resumed = run_midigen("train", *_args(tmp_path, "stopped"), "ckpt_path=last", env=_env(tmp_path, "stopped"))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        client, runs = _run(tmp_path, "stopped")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
