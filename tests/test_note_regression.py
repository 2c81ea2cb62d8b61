"""The dissertation's first approach: note windows, the regression network, generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CORPUS, REPO, make_midi, run_midigen

from midigen.data.cache import build_token_cache
from midigen.data.events import EventParams
from midigen.data.midi_io import read_notes
from midigen.train.note_regression import (
    NoteLSTM,
    NoteModelConfig,
    NoteRegressionModule,
    NoteWindows,
    file_notes,
    generate_notes,
    load_note_corpus,
    window_starts,
    write_notes,
)

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def test_a_note_is_pitch_step_from_the_previous_onset_and_duration_in_seconds(tmp_path):
    # 125 bpm: a beat is 0.48 s (60 steps of 8 ms). Two notes together, then one a beat later.
    path = make_midi(tmp_path / "a.mid", [(64, 0, 1), (60, 0, 2), (67, 1, 1.5)], bpm=125)
    expected = [[60, 0.0, 0.96], [64, 0.0, 0.48], [67, 0.48, 0.24]]
    assert file_notes(path).tolist() == [pytest.approx(row, abs=1e-6) for row in expected]


def test_windows_are_20_notes_to_the_21st_and_never_cross_files(tmp_path):
    root = tmp_path / "corpus"
    (root / "low").mkdir(parents=True)
    (root / "high").mkdir()
    # 22 low notes and 25 high ones: 2 + 5 windows, and a window mixing the files would mix registers.
    make_midi(root / "low" / "a.mid", [(40 + i % 12, i, i + 1) for i in range(22)])
    make_midi(root / "high" / "b.mid", [(80 + i % 12, i * 0.5, i * 0.5 + 0.5) for i in range(25)])
    corpus = load_note_corpus(root, val_fraction=0.0, test_fraction=0.0)
    windows = NoteWindows(corpus, corpus.files, window=20)
    assert len(windows) == 7
    for i in range(len(windows)):
        notes, target = windows[i]
        assert notes.shape == (20, 3) and target.shape == (3,)
        pitches = torch.cat([notes[:, 0], target[:1]])
        assert bool((pitches < 60).all()) or bool((pitches >= 80).all())
    # The target is the note right after the window.
    notes, target = windows[0]
    assert torch.equal(target, torch.from_numpy(corpus.notes[20]))


def test_held_out_files_are_the_event_models(tmp_path):
    notes = load_note_corpus(CORPUS, max_file_tokens=2_000_000)
    tokens = build_token_cache(CORPUS, EventParams.seed(), tmp_path / "cache", max_file_tokens=2_000_000)
    assert {f["rel"]: f["split"] for f in notes.files} == {f["rel"]: f["split"] for f in tokens.files}
    assert notes.split("val") and notes.split("test")


def test_the_network_is_the_seeds_shape():
    net = NoteLSTM(NoteModelConfig())
    assert net.lstm.hidden_size == 256 and net.lstm.num_layers == 1
    linears = [m for m in net.dense if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5120, 3), (3, 3), (3, 3)]
    assert net(torch.zeros(5, 20, 3)).shape == (5, 3)
    relu = NoteLSTM(NoteModelConfig(dense_activation="relu"))
    assert sum(isinstance(m, torch.nn.ReLU) for m in relu.dense) == 2  # never after the last layer


def test_a_few_fit_steps_lower_the_mse_on_a_fixed_batch():
    import pytorch_lightning as pl

    torch.manual_seed(0)
    corpus = load_note_corpus(CORPUS)
    windows = NoteWindows(corpus, corpus.split("train"), window=20)
    batch = [torch.stack(t) for t in zip(*(windows[i] for i in range(0, 64 * 7, 7)))]
    module = NoteRegressionModule({"window": 20, "hidden": 32}, ADAM)
    with torch.no_grad():
        before = float(torch.nn.functional.mse_loss(module(batch[0]), batch[1]))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*batch), batch_size=64)
    trainer = pl.Trainer(max_epochs=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, train_dataloaders=loader)
    with torch.no_grad():
        after = float(torch.nn.functional.mse_loss(module(batch[0]), batch[1]))
    assert after < before
    assert float(trainer.callback_metrics["train/mse"]) == pytest.approx(after, rel=0.5)


def test_generation_gives_50_playable_notes_that_write_as_midi(tmp_path):
    torch.manual_seed(0)
    corpus = load_note_corpus(CORPUS)
    net = NoteLSTM(NoteModelConfig(hidden=16))
    primer = corpus.notes[window_starts(corpus.files, 20)[0]:][:20]
    notes = generate_notes(net, primer, num_notes=50)
    assert notes.shape == (50, 3)
    assert (notes[:, 2] > 0).all() and (notes[:, 1] >= 0).all()
    assert np.array_equal(notes[:, 0], np.rint(notes[:, 0])) and notes[:, 0].min() >= 0 and notes[:, 0].max() <= 127
    path = write_notes(tmp_path / "out.mid", notes)
    on, off, pitch = read_notes(path, EventParams.seed())
    assert 1 <= on.size <= 50 and set(pitch.tolist()) <= set(notes[:, 0].astype(int).tolist())


def test_the_experiment_selects_the_first_approach():
    from test_train import _compose

    cfg = _compose("experiment=seed_approach1")
    assert cfg.task == "note_regression" and cfg.logger.experiment_name == "seed_study"
    assert (cfg.note_model.window, cfg.note_model.hidden, list(cfg.note_model.dense)) == (20, 256, [3, 3, 3])
    assert cfg.data.batch_size == 64 and cfg.trainer.max_epochs == 10 and cfg.optim._target_ == "torch.optim.Adam"
    assert _compose().task == "events"


@pytest.mark.slow
def test_training_the_first_approach_logs_mse_and_samples(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_midigen("train", "experiment=seed_approach1", f"data.root={CORPUS}", "trainer.max_epochs=1",
                       "note_model.hidden=16", f"paths.outputs={tmp_path / 'out'}", env={"MLFLOW_TRACKING_URI": uri},
                       cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("seed_study").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["model"] == "seed_approach1"
    assert {"train/mse_epoch", "val/mse", "test/mse"} <= set(run.data.metrics)
    samples = [a.path for a in client.list_artifacts(run.info.run_id, "samples/final")]
    assert sum(p.endswith(".mid") for p in samples) == 8
