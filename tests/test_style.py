"""The style classifier (`midigen.evaluation.style`): features a clip's length and tempo do not
change, a classifier that tells styles apart on held-out music, and JSON that round-trips."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import CORPUS, make_midi
from midigen.errors import MidigenError
from midigen.evaluation.style import (
    FEATURE_NAMES,
    N_FEATURES,
    StyleClassifier,
    classify_files,
    corpus_examples,
    excerpts,
    file_features,
    fit_from_corpus,
    held_out_accuracy,
    note_features,
)

# A hymn: four-voice block chords in C major, a chord every beat (half notes at cadences).
HYMN_CHORDS = [(48, 55, 64, 72), (53, 57, 65, 72), (55, 59, 62, 74), (48, 55, 64, 72),
               (45, 57, 64, 72), (50, 57, 65, 69), (43, 55, 62, 71), (48, 55, 64, 72)]
# A reel: one line of running 16ths in G major.
REEL_LINE = [67, 71, 74, 71, 72, 71, 69, 67, 66, 69, 72, 69, 74, 72, 71, 69]


def hymn(bars: int, transpose: int = 0, variant: int = 0) -> list[tuple[int, float, float]]:
    notes, beat = [], 0.0
    for i in range(bars * 4):
        chord = HYMN_CHORDS[(i + variant) % len(HYMN_CHORDS)]
        length = 2.0 if (i + variant) % 8 == 7 else 1.0
        notes += [(p + transpose, beat, beat + length) for p in chord]
        beat += length
    return notes


def reel(bars: int, transpose: int = 0, variant: int = 0) -> list[tuple[int, float, float]]:
    return [(REEL_LINE[(i * (variant + 1) + variant) % len(REEL_LINE)] + transpose, i / 4, (i + 1) / 4)
            for i in range(bars * 16)]


def synthetic_corpus(root, per_style: int = 8):
    for style, music in (("hymn", hymn), ("reel", reel)):
        (root / style).mkdir(parents=True)
        for k in range(per_style):
            make_midi(root / style / f"{style}{k}.mid", music(16 + 4 * k, transpose=k - 4, variant=k % 3),
                      bpm=80 + 10 * k)
    return root


def test_features_are_finite_and_fixed_length_for_an_empty_and_a_one_note_file(tmp_path):
    empty = make_midi(tmp_path / "empty.mid", [])
    one = make_midi(tmp_path / "one.mid", [(60, 0.0, 1.0)])
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == N_FEATURES
    for path in (empty, one):
        features = file_features(path)
        assert features.shape == (N_FEATURES,) and np.all(np.isfinite(features))
    assert not file_features(empty).any()
    named = dict(zip(FEATURE_NAMES, file_features(one)))
    assert named["pc_0"] == 1.0 and named["duration_quarter"] == 1.0 and named["onset_on_beat"] == 1.0


def test_histograms_are_normalised():
    features = dict(zip(FEATURE_NAMES, note_features(*_notes(hymn(8)))))
    for prefix in ("pc_", "chord_ic_", "melodic_interval_", "ioi_", "duration_", "onset_"):
        assert sum(v for k, v in features.items() if k.startswith(prefix)) == pytest.approx(1.0)


def _notes(notes, tpb=480):
    on = [round(s * tpb) for _, s, _ in notes]
    off = [round(e * tpb) for _, _, e in notes]
    return on, off, [p for p, _, _ in notes], tpb


@pytest.mark.parametrize("music", [hymn, reel])
def test_a_piece_and_the_piece_twice_give_close_features(music):
    once = music(8)
    end = max(e for _, _, e in once)
    twice = once + [(p, s + end, e + end) for p, s, e in once]
    a, b = note_features(*_notes(once)), note_features(*_notes(twice))
    assert np.abs(a - b).max() < 0.05, dict(zip(FEATURE_NAMES, np.round(a - b, 3)))


def test_tempo_and_resolution_do_not_change_features(tmp_path):
    notes = hymn(4) + [(p + 12, s, e) for p, s, e in reel(2)]
    slow = file_features(make_midi(tmp_path / "slow.mid", notes, bpm=70, tpb=480))
    fast = file_features(make_midi(tmp_path / "fast.mid", notes, bpm=160, tpb=960,
                                   tempo_changes=[(4.0, 90.0)]))
    np.testing.assert_allclose(slow, fast, atol=1e-12)


def test_excerpts_are_bar_windows_of_the_piece():
    notes = _notes(reel(20))
    clips = excerpts(notes, bars=8, count=3, seed=1)
    assert len(clips) == 3
    for on, off, pitch, tpb in clips:
        assert on.min() >= 0 and off.max() <= 8 * 4 * tpb and on.size == 8 * 16
    assert [c[0].size for c in excerpts(_notes(reel(4)), bars=8)] == [4 * 16]  # shorter than 8 bars: itself
    assert excerpts(([], [], [], 480), bars=8) == []
    assert len(excerpts(notes, bars=8, count=None)) == 20 - 8 + 1
    np.testing.assert_array_equal(excerpts(notes, count=3, seed=1)[0][2], clips[0][2])  # seeded


def test_classifier_separates_two_synthetic_styles_on_held_out_files(tmp_path):
    root = synthetic_corpus(tmp_path / "corpus")
    held_out = {f"{style}/{style}{k}.mid": "test" if k in (2, 5) else "train" for style in ("hymn", "reel")
                for k in range(8)}
    model = fit_from_corpus(root, splits=held_out, per_file=4)
    assert model.styles == ["hymn", "reel"]
    assert held_out_accuracy(model, root, splits=held_out) == {"hymn": 1.0, "reel": 1.0}


def test_classifier_tells_bach_chorales_from_fiddle_tunes_on_held_out_excerpts():
    # Half of each style's real files held out, chosen by name, not by the corpus' hash split
    # (which leaves only one or two of 16 files for test).
    held_out = {cf: ("test" if i % 2 else "train") for style in ("chorale", "fiddle")
                for i, cf in enumerate(sorted(f"{style}/{p.name}" for p in (CORPUS / style).glob("*.mid")))}
    model = fit_from_corpus(CORPUS, splits=held_out, per_file=6)
    accuracy = held_out_accuracy(model, CORPUS, splits=held_out)
    assert set(accuracy) == {"chorale", "fiddle"}
    assert min(accuracy.values()) >= 0.8, accuracy  # chance is 0.5
    # A whole held-out piece is judged like its excerpts: length does not fool it.
    result = classify_files(model, CORPUS / "fiddle", expected="fiddle")
    assert result["folder"]["majority"] == "fiddle" and result["folder"]["fidelity"] >= 0.75


def test_fit_is_deterministic_and_class_weighted():
    rng = np.random.default_rng(0)
    features = np.vstack([rng.normal(0, 1, (90, N_FEATURES)), rng.normal(0.5, 1, (10, N_FEATURES))])
    labels = ["common"] * 90 + ["rare"] * 10
    a, b = StyleClassifier().fit(features, labels), StyleClassifier().fit(features, labels)
    np.testing.assert_array_equal(a.weights, b.weights)
    # Balanced weights: the rare style is not simply never predicted.
    assert a.per_style_accuracy(features, labels)["rare"] > 0.5
    assert a.predict_proba(features).shape == (100, 2)
    np.testing.assert_allclose(a.predict_proba(features).sum(axis=1), 1.0)


def test_save_and_load_give_identical_probabilities_and_plain_json(tmp_path):
    root = synthetic_corpus(tmp_path / "corpus", per_style=4)
    model = fit_from_corpus(root, splits=lambda rel: "train", per_file=2)
    path = model.save(tmp_path / "style.json")
    loaded = StyleClassifier.load(path)
    features, _, _ = corpus_examples(root, "train", splits=lambda rel: "train", per_file=2)
    np.testing.assert_array_equal(loaded.predict_proba(features), model.predict_proba(features))
    assert loaded.styles == model.styles and loaded.info == model.info

    text = path.read_text()
    data = json.loads(text)
    assert data["format"] == "midigen.style_classifier" and data["feature_names"] == list(FEATURE_NAMES)
    assert "pickle" not in text and "py/" not in text  # no pickle, jsonpickle or class paths

    def strings(value):
        if isinstance(value, dict):
            return [*value.keys(), *(s for v in value.values() for s in strings(v))]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    # Every string is a short name (no encoded blob of code or bytes).
    assert max(len(s) for s in strings(data)) < 64


def test_load_rejects_what_is_not_a_style_classifier(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(MidigenError, match="not a midigen style classifier"):
        StyleClassifier.load(bad)
    bad.write_text("\x80\x04not json")
    with pytest.raises(MidigenError, match="not a JSON style classifier"):
        StyleClassifier.load(bad)


def test_classify_files_reports_each_file_and_the_folder(tmp_path):
    root = synthetic_corpus(tmp_path / "corpus", per_style=4)
    model = fit_from_corpus(root, splits=lambda rel: "train", per_file=2)
    clips = tmp_path / "clips"
    clips.mkdir()
    make_midi(clips / "a.mid", hymn(8, transpose=3), bpm=140)
    make_midi(clips / "b.mid", reel(8, transpose=-2), bpm=100)
    make_midi(clips / "c.mid", hymn(8, variant=1), bpm=90)
    make_midi(clips / "silent.mid", [])
    (clips / "broken.mid").write_bytes(b"MThd nonsense")
    result = classify_files(model, clips, expected="hymn")
    assert {n: r["style"] for n, r in result["files"].items()} == {"a.mid": "hymn", "b.mid": "reel", "c.mid": "hymn"}
    assert set(result["skipped"]) == {"silent.mid", "broken.mid"}
    folder = result["folder"]
    assert folder["counts"] == {"hymn": 2, "reel": 1} and folder["majority"] == "hymn"
    assert folder["fidelity"] == pytest.approx(2 / 3)
    assert sum(folder["mean_probabilities"].values()) == pytest.approx(1.0)
    with pytest.raises(MidigenError, match="not known"):
        classify_files(model, clips, expected="polka")


def test_the_style_module_imports_no_training_stack():
    code = ("import sys, midigen.evaluation.style as s; "
            "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning', 'hydra', 'mlflow') if m in sys.modules]; "
            "bad += [m for m in sys.modules if m.startswith(('midigen.train', 'midigen.producer'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"



def test_evaluate_style_of_a_model_reports_files_and_the_folders_fidelity(tmp_path):
    """`midigen evaluate DIR --style-of MODEL --expect STYLE`: the classifier that travels in the bundle."""
    import shutil

    from conftest import REPO, run_midigen

    model = tmp_path / "model"
    shutil.copytree(REPO / "models" / "pretrained", model)
    (model / "style_classifier.json").unlink(missing_ok=True)
    folder = tmp_path / "clips"
    shutil.copytree(CORPUS / "chorale", folder)
    refused = run_midigen("evaluate", str(folder), "--style-of", str(model))
    assert refused.returncode == 2 and "carries no style classifier" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    fit_from_corpus(CORPUS, splits=lambda rel: "train", bars=8, per_file=2).save(model / "style_classifier.json")
    out = run_midigen("evaluate", str(folder), "--style-of", str(model), "--expect", "chorale", "--json")
    assert out.returncode == 0, out.stderr
    style = json.loads(out.stdout)["style"]
    assert set(style["files"]) == {p.name for p in folder.glob("*.mid")}
    assert style["folder"]["majority"] == "chorale" and style["folder"]["fidelity"] == 1.0
    table = run_midigen("evaluate", str(folder), "--style-of", str(model), "--expect", "chorale")
    assert "fidelity to chorale 1.00" in table.stdout
    wrong = run_midigen("evaluate", str(folder), "--style-of", str(model), "--expect", "jazz")
    assert wrong.returncode == 2 and "jazz" in wrong.stderr
