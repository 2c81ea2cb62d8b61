"""The shipped pretrained model: a producer who never trains can generate on a fresh clone."""

from __future__ import annotations

import json
import shutil

import mido
import pytest

from conftest import REPO, run_midigen

PRETRAINED = REPO / "models" / "pretrained"


def test_pretrained_bundle_is_small_complete_and_documented():
    from safetensors.torch import load_file

    from midigen.evaluation.originality import OriginalityIndex

    names = {p.name for p in PRETRAINED.iterdir()}
    assert {"model.safetensors", "tokenizer.json", "config.json", "originality.npz", "MODEL_CARD.md",
            "style_classifier.json"} <= names
    assert sum(p.stat().st_size for p in PRETRAINED.rglob("*") if p.is_file()) <= 10 * 1024 * 1024
    weights = load_file(str(PRETRAINED / "model.safetensors"))
    assert {str(v.dtype) for v in weights.values() if v.is_floating_point()} == {"torch.float16"}
    config = json.loads((PRETRAINED / "config.json").read_text())
    assert config["run_id"] and config["commit"] and config["data"]["train_files"] > 1000
    assert OriginalityIndex.load(PRETRAINED / "originality.npz").max_copy is not None  # calibrated
    card = (PRETRAINED / "MODEL_CARD.md").read_text()
    assert config["run_id"] in card and "style_study/ship.py" in card and "teacher-forced" in card


def test_generate_uses_the_pretrained_model_when_there_is_no_registry(tmp_path, monkeypatch):
    from midigen.producer import registry
    from midigen import tracking

    root = tmp_path / "clone"
    shutil.copytree(PRETRAINED, root / "models" / "pretrained")
    monkeypatch.setattr(tracking, "repo_root", lambda: root)  # a fresh clone: no mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert registry.default_model_ref() == str(root / "models" / "pretrained")


def test_pretrained_model_writes_daw_ready_files_with_their_copy_ratio(tmp_path):
    proc = run_midigen("generate", "--model", str(PRETRAINED), "--num", "2", "--bars", "4", "--seed", "1",
                       "--style", "chorale=0.5,fiddle=0.5", "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["files"]) == 2 and len(out["copy"]) == 2
    for path in out["files"]:
        midi = mido.MidiFile(path)
        assert midi.ticks_per_beat == 960 and round(midi.length, 3) == 8.0  # 4 bars at 120 bpm
        assert sum(m.type == "note_on" and m.velocity > 0 for m in midi.tracks[0]) > 4


def test_half_precision_bundle_predicts_like_the_full_one(smoke_run, tmp_path):
    """The export path the pretrained model went through: fp16 weights on disk, the same model."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from midigen.producer.bundle import TOKENIZER, load_bundle, save_bundle
    from midigen.producer.generate import GenerateRequest, generate_batch

    full = load_bundle(smoke_run["bundle"])
    half_dir = save_bundle(tmp_path / "half", full.model, smoke_run["bundle"] / TOKENIZER,
                           {k: v for k, v in full.meta.items() if k != "model"}, half=True)
    size = (half_dir / "model.safetensors").stat().st_size
    assert size < 0.6 * (smoke_run["bundle"] / "model.safetensors").stat().st_size
    half = load_bundle(half_dir)
    # teacher-forced on real token sequences (a generated batch): the same predictions
    ids = [r["ids"] for r in generate_batch(full, GenerateRequest(num=4, bars=4, seed=11, max_copy=None,
                                                                  start="random"))]
    with torch.no_grad():
        for seq in ids:
            x = torch.as_tensor(np.asarray(seq, dtype=np.int64))[None]
            style = torch.tensor([0])
            la, lb = full.model(x[:, :-1], style)[0][0], half.model(x[:, :-1], style)[0][0]
            nll_a, nll_b = F.cross_entropy(la, x[0, 1:]), F.cross_entropy(lb, x[0, 1:])
            assert abs(float(nll_a - nll_b)) < 1e-3 * float(nll_a)
            assert (la.softmax(-1) - lb.softmax(-1)).abs().max() < 5e-3
            assert (la.argmax(-1) == lb.argmax(-1)).float().mean() > 0.99


SHIPPED_STYLES = json.loads((PRETRAINED / "config.json").read_text())["model"]["styles"]


def test_the_shipped_model_knows_every_style_of_the_default_corpus():
    from midigen.data.corpus import DEFAULT_STYLES

    assert len(SHIPPED_STYLES) >= 6 and set(DEFAULT_STYLES) <= set(SHIPPED_STYLES)


@pytest.fixture(scope="module")
def shipped():
    from midigen.producer.bundle import load_bundle

    return load_bundle(PRETRAINED)


@pytest.mark.parametrize("style", SHIPPED_STYLES)
def test_the_shipped_model_generates_every_style(style, shipped):
    from midigen.data.midi_io import TICKS_PER_BEAT
    from midigen.producer.generate import GenerateRequest, generate_batch

    clips = generate_batch(shipped, GenerateRequest(num=2, bars=2, seed=3, style={style: 1.0}, max_copy=None))
    for clip in clips:
        on, off, _ = clip["notes"]
        assert len(on) >= 2 and (off > on).all() and off.max() <= 2 * 4 * TICKS_PER_BEAT


def test_any_two_styles_blend(shipped):
    from midigen.producer.generate import GenerateRequest, generate_batch

    a, b = SHIPPED_STYLES[0], SHIPPED_STYLES[-1]
    blend = generate_batch(shipped, GenerateRequest(num=2, bars=2, seed=3, style={a: 0.5, b: 0.5}, max_copy=None))
    pure = generate_batch(shipped, GenerateRequest(num=2, bars=2, seed=3, style={a: 1.0}, max_copy=None))
    assert all(len(c["notes"][0]) >= 2 for c in blend)
    assert [c["midi"] for c in blend] != [c["midi"] for c in pure]  # the second style changes the draw


def test_a_bundle_written_before_the_package_was_regrouped_still_loads_and_generates(tmp_path):
    """tests/data/bundle_before_regroup was written by commit 3a2ceb0 (flat `midigen.bundle`)."""
    old = REPO / "tests" / "data" / "bundle_before_regroup"
    proc = run_midigen("generate", "--model", str(old), "--num", "2", "--bars", "2", "--style", "fiddle",
                       "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["files"]) == 2 and len(out["copy"]) == 2  # its originality index loads too
    assert all(round(mido.MidiFile(path).length, 3) == 4.0 for path in out["files"])
