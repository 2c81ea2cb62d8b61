"""`scheduler=time_cosine`: a run limited by trainer.max_time ends at a low learning rate, however
many steps the machine gave it; without a time limit it is refused before training."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.callbacks import Timer

from conftest import CORPUS, run_midigen

from midigen.errors import MidigenError
from midigen.train.schedule import TimeCosine, lightning_scheduler


def _optimizer():
    shared, style = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.Adam([{"params": [shared]}, {"params": [style], "lr": 0.01}], lr=0.001)


def test_the_rate_falls_along_a_half_cosine_of_the_time_spent():
    opt = _optimizer()
    sched = TimeCosine(opt, min_ratio=0.1)
    share = [0.0]
    sched.progress = lambda: share[0]
    seen = []
    for s in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5):
        share[0] = s
        opt.step()
        sched.step()
        seen.append([g["lr"] for g in opt.param_groups])
    assert seen[0] == pytest.approx([0.001, 0.01])
    assert seen[2] == pytest.approx([0.00055, 0.0055])  # half way: half way between 1 and 0.1
    assert seen[4] == pytest.approx([0.0001, 0.001]) and seen[5] == seen[4]  # floor at min_ratio, past the end too
    shared = [lr for lr, _ in seen]
    assert all(a > b for a, b in zip(shared[:4], shared[1:5]))
    assert all(s / f == pytest.approx(10) for f, s in seen)  # each group keeps its own scale (a style's lr_scale)
    assert sched.factor() == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi)))


def test_min_ratio_out_of_range_is_refused():
    with pytest.raises(ValueError, match="min_ratio=1.5"):
        TimeCosine(_optimizer(), min_ratio=1.5)


def _module_with(callbacks):
    return SimpleNamespace(trainer=SimpleNamespace(callbacks=callbacks))


def test_the_share_comes_from_the_trainers_clock(monkeypatch):
    timer = Timer(duration=timedelta(seconds=100))
    monkeypatch.setattr(timer, "time_elapsed", lambda stage="train": 25.0)
    sched = TimeCosine(_optimizer(), min_ratio=0.0)
    entry = lightning_scheduler(_module_with([timer]), sched)
    assert entry == {"scheduler": sched, "interval": "step"}
    assert sched.progress() == pytest.approx(0.25)
    assert sched.factor() == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    sched.progress = None
    no_clock = lightning_scheduler(_module_with([]), sched)["scheduler"]
    with pytest.raises(MidigenError, match="needs trainer.max_time"):
        no_clock.progress()


def test_other_schedulers_step_per_epoch_watching_val_nll():
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(_optimizer())
    assert lightning_scheduler(_module_with([]), sched) == {"scheduler": sched, "monitor": "val/nll"}


def test_a_timed_run_ends_at_a_low_rate(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_midigen("train", "experiment=smoke", f"data.root={CORPUS}", f"paths.cache={tmp_path / 'cache'}",
                       f"paths.outputs={tmp_path / 'out'}", "scheduler=time_cosine", "trainer.max_epochs=1000",
                       "trainer.max_time='00:00:00:04'", "callbacks.sampling.every_n_epochs=1000", "test=false",
                       "callbacks.early_stopping.patience=null",
                       env={"MLFLOW_TRACKING_URI": uri, "MIDIGEN_CACHE": str(tmp_path / "model-cache")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from mlflow import MlflowClient

    run_id = json.loads(next((tmp_path / "out").rglob("mlflow_run.json")).read_text())["run_id"]
    history = sorted(MlflowClient(uri).get_metric_history(run_id, "lr-Adam"), key=lambda m: m.step)
    assert len(history) > 4
    first, last = history[0].value, history[-1].value
    assert first == pytest.approx(0.002, rel=0.05)  # conf/optim/adam.yaml's rate at the start
    assert last < 0.5 * first, [m.value for m in history]
    assert all(a.value >= b.value for a, b in zip(history, history[1:]))


@pytest.mark.parametrize("overrides,needle", [
    (["scheduler=time_cosine"], "scheduler=time_cosine decays over trainer.max_time: set it"),
    (["scheduler=time_cosine", "scheduler.min_ratio=2", "trainer.max_time='00:00:01:00'"], "scheduler: min_ratio=2"),
])
def test_a_time_schedule_it_cannot_follow_is_one_line(tmp_path, overrides, needle):
    proc = run_midigen("train", "experiment=smoke", f"data.root={CORPUS}", f"paths.cache={tmp_path / 'cache'}",
                       f"paths.outputs={tmp_path / 'out'}", *overrides,
                       env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(err) == 1 and needle in err[0], proc.stderr
