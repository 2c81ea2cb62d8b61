"""`midigen interpolate`: clips from A to B that keep generate's DAW facts, and whose ends are
exactly a continuation of A and of B."""

from __future__ import annotations

import mido
import numpy as np
import pytest

from midigen.errors import MidigenError
from midigen.producer.bundle import load_bundle
from midigen.producer.generate import GenerateRequest, generate_batch
from midigen.producer.interpolate import blend_weights, interpolate_batch, spearman

from conftest import CORPUS, REPO

A = CORPUS / "chorale" / "bwv1.6.mid"
B = sorted((CORPUS / "fiddle").glob("*.mid"))[0]


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(REPO / "models" / "pretrained")


def test_blend_weights_run_from_a_to_b():
    assert blend_weights(2) == [0.0, 1.0]
    assert blend_weights(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(MidigenError, match="--steps 1"):
        blend_weights(1)


def test_spearman_against_hand_computed_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = rank differences (0, 2, -1, -1) -> 1 - 6 * 6 / (4 * 15) = 0.4
    assert spearman([1, 2, 3, 4], [1, 4, 2, 3]) == pytest.approx(0.4)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])


def test_the_ends_are_plain_continuations_of_a_and_of_b(bundle):
    req = GenerateRequest(num=1, bars=2, seed=4, max_copy=None)
    clips = interpolate_batch(bundle, A, B, 3, req, style_a="chorale=1", style_b="fiddle=1")
    assert [c["weight"] for c in clips] == [0.0, 0.5, 1.0]
    # an interpolation is drawn as trained: the continuations without the styles' lean
    follow_a = generate_batch(bundle, GenerateRequest(num=1, bars=2, seed=4, max_copy=None, context=str(A),
                                                      style={"chorale": 1.0}, style_strength=0))[0]
    follow_b = generate_batch(bundle, GenerateRequest(num=1, bars=2, seed=4, max_copy=None, context=str(B),
                                                      style={"fiddle": 1.0}, style_strength=0))[0]
    assert clips[0]["midi"] == follow_a["midi"]
    assert clips[-1]["midi"] == follow_b["midi"]
    assert clips[1]["midi"] not in (follow_a["midi"], follow_b["midi"])


def test_every_clip_keeps_generates_daw_facts_and_is_reproducible(bundle, tmp_path):
    req = GenerateRequest(num=1, bars=4, bpm=100, seed=9, max_copy=None)
    clips = interpolate_batch(bundle, A, B, 4, req)
    again = interpolate_batch(bundle, A, B, 4, req)
    assert [c["midi"] for c in clips] == [c["midi"] for c in again]
    assert len({c["name"] for c in clips}) == 4 and clips[0]["name"].endswith("_step1of4.mid")
    for clip in clips:
        path = tmp_path / clip["name"]
        path.write_bytes(clip["midi"])
        midi = mido.MidiFile(path)
        assert len([t for t in midi.tracks if any(m.type == "note_on" for m in t)]) == 1
        ticks = sum(m.time for m in midi.tracks[-1])
        assert ticks == 4 * 4 * midi.ticks_per_beat  # exactly 4 bars
        on, off, _ = clip["notes"]
        assert len(on) > 0 and (off > on).all() and off.max() <= ticks


def test_interpolate_refuses_what_it_sets_itself(bundle, tmp_path):
    with pytest.raises(MidigenError, match="no such MIDI file"):
        interpolate_batch(bundle, tmp_path / "missing.mid", B, 3, GenerateRequest())
    with pytest.raises(MidigenError, match="leave out --primer and --style"):
        interpolate_batch(bundle, A, B, 3, GenerateRequest(style={"chorale": 1.0}))
    with pytest.raises(MidigenError, match="unknown style jazz"):
        interpolate_batch(bundle, A, B, 3, GenerateRequest(max_copy=None), style_a="jazz=1")
    with pytest.raises(MidigenError, match="an interpolation is drawn as trained"):
        interpolate_batch(bundle, A, B, 3, GenerateRequest(max_copy=None, style_strength=1))


def test_variations_share_their_random_numbers_along_the_steps(bundle):
    req = GenerateRequest(num=2, bars=2, seed=5, max_copy=None)
    clips = interpolate_batch(bundle, A, B, 2, req, style_a="chorale=1", style_b="fiddle=1")
    assert [(c["step"], c["variation"]) for c in clips] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert clips[0]["name"].endswith("_step1of2_01.mid") and clips[3]["name"].endswith("_step2of2_02.mid")
    assert clips[0]["midi"] != clips[1]["midi"]  # two variations of a step differ
    again = interpolate_batch(bundle, A, B, 2, req, style_a="chorale=1", style_b="fiddle=1")
    assert [c["midi"] for c in again] == [c["midi"] for c in clips]


def test_the_arithmetic_mix_keeps_exact_ends_and_differs_between_them(bundle):
    req = GenerateRequest(num=1, bars=2, seed=4, max_copy=None)
    geometric = interpolate_batch(bundle, A, B, 3, req, style_a="chorale=1", style_b="fiddle=1")
    arithmetic = interpolate_batch(bundle, A, B, 3, req, style_a="chorale=1", style_b="fiddle=1", mix="arithmetic")
    assert arithmetic[0]["midi"] == geometric[0]["midi"] and arithmetic[2]["midi"] == geometric[2]["midi"]
    assert arithmetic[1]["midi"] != geometric[1]["midi"]
    with pytest.raises(ValueError, match="mix='median'"):
        interpolate_batch(bundle, A, B, 2, req, mix="median")


@pytest.mark.parametrize("form", ["AB", "AA'"])
def test_with_a_form_the_ends_are_still_continuations_of_a_and_of_b(bundle, form):
    """Each section of a formed interpolation is drawn between A and B: B's stream hears the clip
    so far after B's own end, so the last clip is exactly the formed continuation of B."""
    req = GenerateRequest(num=1, bars=4, seed=5, max_copy=None, form=form)
    clips = interpolate_batch(bundle, A, B, 3, req, style_a="chorale=1", style_b="fiddle=1")
    follow = {name: generate_batch(bundle, req.but(context=str(path), style={style: 1.0}, style_strength=0))[0]
              for name, path, style in (("a", A, "chorale"), ("b", B, "fiddle"))}
    assert clips[0]["midi"] == follow["a"]["midi"]
    assert clips[-1]["midi"] == follow["b"]["midi"]
    for clip in clips:  # the form holds at every step: A' keeps A below its top line, B is new music
        on, off, pitch = clip["notes"]
        bar2 = 2 * 4 * 960
        first = {(o, f, p) for o, f, p in zip(on.tolist(), off.tolist(), pitch.tolist()) if o < bar2}
        second = {(o - bar2, f - bar2, p) for o, f, p in zip(on.tolist(), off.tolist(), pitch.tolist()) if o >= bar2}
        assert first and second and second != first


def test_interpolate_takes_a_form_on_the_command_line(tmp_path):
    from conftest import run_midigen

    proc = run_midigen("interpolate", str(A), str(B), "--steps", "2", "--bars", "4", "--form", "AA",
                       "--model", str(REPO / "models" / "pretrained"), "--seed", "3", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted((tmp_path / "o").glob("*.mid"))
    assert len(files) == 2
    for path in files:  # AA: the second half is the first, note for note
        notes = [(m.note, t) for t, m in _timed(mido.MidiFile(path)) if m.type == "note_on" and m.velocity]
        half = 2 * 4 * mido.MidiFile(path).ticks_per_beat
        first = sorted((n, t) for n, t in notes if t < half)
        assert first and sorted((n, t - half) for n, t in notes if t >= half) == first


def _timed(midi):
    now = 0
    for m in mido.merge_tracks(midi.tracks):
        now += m.time
        yield now, m
