"""Bad configuration: every mistake below is one `midigen: error:` line and exit status 2,
before any training starts and before any MLflow run exists."""

from __future__ import annotations

import sys

import pytest

from conftest import CORPUS, REPO, run_midigen

from midigen.cli import main

EXPERIMENTS = ", ".join(sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")))


@pytest.fixture
def train(tmp_path, monkeypatch, capsys):
    """Run `midigen train experiment=smoke ...` in this process; returns (status, stderr lines)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # what run_cli sets; restored afterwards
    monkeypatch.setattr(sys, "argv", list(sys.argv))

    def run(*overrides: str, experiment: str = "smoke"):
        common = [f"experiment={experiment}", f"data.root={CORPUS}", f"paths.cache={tmp_path / 'cache'}",
                  f"paths.outputs={tmp_path / 'out'}"]
        status = main(["train", *common, *overrides])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert not list((tmp_path / "out").rglob("mlflow_run.json")), "an MLflow run was started"
        assert not list((tmp_path / "out").rglob("*.ckpt"))
        return status, err

    return run


@pytest.mark.parametrize("override,needle", [
    ("model.no_such_key=3", "no setting named model.no_such_key"),
    ("no_such_top_level=1", "no setting named no_such_top_level"),
    ("model.hidden_size=abc", "model.hidden_size takes a whole number"),
    ("optim.lr=fast", "optim.lr takes a number"),
    ("trainer.max_epochs=2.5", "trainer.max_epochs takes a whole number"),
    ("test=maybe", "test takes true or false"),
    ("experiment=nope", f"Could not find 'experiment/nope'; choose one of: {EXPERIMENTS}"),
    ("data.root=/no/such/corpus", "corpus folder /no/such/corpus does not exist"),
    ("data.seq_len=1", "data.seq_len=1 is too short"),
    ("model.hidden_size=0", "model: hidden_size must be greater than zero"),
    # Numbers a run cannot use: it would train (and register) a model that learned nothing.
    ("optim.lr=0", "optim.lr=0 must be a finite number above 0"),
    ("optim.lr=-0.001", "optim.lr=-0.001 must be a finite number above 0"),
    ("optim.lr=nan", "optim.lr=nan must be a finite number above 0"),
    ("optim.lr=inf", "optim.lr=inf must be a finite number above 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1 must be a finite number, 0 or more"),
    ("+optim.betas=[0.9,1.5]", "optim: Invalid beta parameter at index 1: 1.5"),
    ("+optim.colour=blue", "keyword argument 'colour'; check the optim.* settings"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 must be at least 1"),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1 must be at least 1"),
    ("trainer.gradient_clip_val=-1.0", "trainer.gradient_clip_val=-1.0 must be 0 or more"),
    ("data.batch_size=0", "data.batch_size=0 must be at least 1"),
    ("data.eval_batch_size=-4", "data.eval_batch_size=-4 must be at least 1"),
    ("model.dropout=1", "model.dropout=1 must be at least 0 and below 1"),
    ("model.dropout=-0.1", "model.dropout=-0.1 must be at least 0 and below 1"),
    ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience=-1 must be 0 or more"),
    ("+data.colour=blue", "unexpected keyword argument 'colour'"),
    ("data.root='/tmp/a corpus ü", "cannot read the override"),
], ids=lambda v: v if "=" in v else "")
def test_bad_override_is_one_line_before_training(train, override, needle):
    status, err = train(override)
    assert status == 2
    assert len(err) == 1 and err[0].startswith("midigen: error: "), err
    assert needle in err[0]


@pytest.mark.parametrize("override,needle", [
    ("optim.lr=0", "optim.lr=0 must be a finite number above 0"),
    ("data.batch_size=0", "data.batch_size=0 must be at least 1"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 must be at least 1"),
])
def test_the_first_approach_refuses_the_same_numbers(train, override, needle):
    status, err = train(override, experiment="seed_approach1")
    assert status == 2
    assert len(err) == 1 and err[0].startswith("midigen: error: ") and needle in err[0], err


def test_an_empty_corpus_is_one_line(train, tmp_path):
    (tmp_path / "empty" / "chorale").mkdir(parents=True)
    (tmp_path / "empty" / "chorale" / "notes.txt").write_text("no MIDI here")
    status, err = train(f"data.root={tmp_path / 'empty'}")
    assert status == 2 and len(err) == 1 and "has no MIDI files" in err[0]


def test_a_corpus_of_only_bad_files_is_one_line(train, tmp_path):
    (tmp_path / "bad" / "chorale").mkdir(parents=True)
    (tmp_path / "bad" / "chorale" / "x.mid").write_bytes(b"junk")
    status, err = train(f"data.root={tmp_path / 'bad'}")
    assert status == 2 and len(err) == 1 and "no usable MIDI file" in err[0] and "skipped.csv" in err[0]


def test_the_real_command_prints_exactly_one_line(tmp_path):
    """Through the installed entry point, Hydra adds nothing of its own to stderr."""
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    for override in ("model.no_such_key=3", "model.hidden_size=abc"):
        proc = run_midigen("train", "experiment=smoke", override, f"paths.outputs={tmp_path / 'out'}", env=env,
                           timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
        assert proc.stderr.startswith("midigen: error: ")
    assert not (tmp_path / "mlflow.db").exists()  # failed before touching the tracking store


def test_settings_declared_to_take_text_accept_it():
    """trainer.devices defaults to 1 but Lightning takes 'auto' too: no false alarm."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from midigen.errors import MidigenError
    from midigen.train.config import check_override_types

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for fine in (["trainer.devices=auto"], ["trainer.val_check_interval=0.5"], ["trainer.max_time=00:00:05:00"],
                     ["callbacks.early_stopping.patience=null"], ["optim.lr=1"]):
            overrides = ["experiment=smoke", *fine]
            check_override_types(compose(config_name="train", overrides=overrides), overrides)
        overrides = ["experiment=smoke", "trainer.log_every_n_steps=often"]
        with pytest.raises(MidigenError, match="trainer.log_every_n_steps takes a whole number"):
            check_override_types(compose(config_name="train", overrides=overrides), overrides)
    GlobalHydra.instance().clear()
