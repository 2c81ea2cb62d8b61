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
    assert {"model.safetensors", "tokenizer.json", "config.json", "originality.npz", "MODEL_CARD.md"} <= names
    assert sum(p.stat().st_size for p in PRETRAINED.rglob("*") if p.is_file()) <= 10 * 1024 * 1024
    weights = load_file(str(PRETRAINED / "model.safetensors"))
    assert {str(v.dtype) for v in weights.values() if v.is_floating_point()} == {"torch.float16"}
    config = json.loads((PRETRAINED / "config.json").read_text())
    assert config["run_id"] and config["commit"] and config["data"]["train_files"] > 1000
    assert OriginalityIndex.load(PRETRAINED / "originality.npz").max_copy is not None  # calibrated
    card = (PRETRAINED / "MODEL_CARD.md").read_text()
    assert config["run_id"] in card and "study.py pretrained" in card and "teacher-forced" in card


def test_generate_uses_the_pretrained_model_when_there_is_no_registry(tmp_path, monkeypatch):
    from midigen.producer import generate
    from midigen import tracking

    root = tmp_path / "clone"
    shutil.copytree(PRETRAINED, root / "models" / "pretrained")
    monkeypatch.setattr(tracking, "repo_root", lambda: root)  # a fresh clone: no mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert generate.default_model_ref() == str(root / "models" / "pretrained")


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
    ids = [r["ids"] for r in generate_batch(full, GenerateRequest(num=4, bars=4, seed=11, max_copy=None))]
    with torch.no_grad():
        for seq in ids:
            x = torch.as_tensor(np.asarray(seq, dtype=np.int64))[None]
            style = torch.tensor([0])
            la, lb = full.model(x[:, :-1], style)[0][0], half.model(x[:, :-1], style)[0][0]
            nll_a, nll_b = F.cross_entropy(la, x[0, 1:]), F.cross_entropy(lb, x[0, 1:])
            assert abs(float(nll_a - nll_b)) < 1e-3 * float(nll_a)
            assert (la.softmax(-1) - lb.softmax(-1)).abs().max() < 5e-3
            assert (la.argmax(-1) == lb.argmax(-1)).float().mean() > 0.99


@pytest.mark.parametrize("style", ["chorale", "fiddle"])
def test_pretrained_model_knows_both_default_styles(style, tmp_path):
    from midigen.producer.bundle import load_bundle

    assert style in load_bundle(PRETRAINED).styles
