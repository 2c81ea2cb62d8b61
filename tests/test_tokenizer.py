"""The event vocabulary's contract, written down as data (seed Figures 2, 8, 9)."""

from __future__ import annotations

import json

import mido
import numpy as np
import pytest
from symusic import Score

from midigen.errors import MidiReadError
from midigen.data.events import (
    EventParams,
    decode_ids,
    encode_notes,
    event_names,
    load_params,
    resolve_overlaps,
    retime,
    total_steps,
    transpose,
)
from midigen.data.midi_io import read_notes
from midigen.data.tokenizer import OoreTokenizer

from conftest import CORPUS, make_midi, run_midigen

SEED = EventParams.seed()
BEAT = EventParams.beat()
REAL_FILES = sorted(CORPUS.rglob("*.mid"))[::3]


def test_seed_vocabulary_index_order():
    names = event_names(SEED)
    assert len(names) == 382
    assert names[0] == "<pad>"
    assert names[1] == "note_on_0" and names[128] == "note_on_127"
    assert names[129] == "note_off_0" and names[256] == "note_off_127"
    assert names[257] == "time_shift_0" and names[381] == "time_shift_124"
    tok = OoreTokenizer.from_params(SEED)
    assert len(tok) == 382
    assert [tok[i] for i in (0, 1, 129, 257, 381)] == ["PAD_None", "NoteOn_0", "NoteOff_0", "TimeShift_1",
                                                       "TimeShift_125"]


def test_golden_ids_125_bpm(tmp_path):
    # 125 BPM: one beat = 480 ms = 60 steps of 8 ms -> TIME_SHIFT index 257 + 59 = 316.
    path = make_midi(tmp_path / "g.mid", [(60, 0, 1), (61, 1, 2)], bpm=125)
    assert OoreTokenizer.from_params(SEED).encode_file(path).tolist() == [61, 316, 189, 62, 316, 190]


def test_golden_ids_beat_mode(tmp_path):
    path = make_midi(tmp_path / "g.mid", [(60, 0, 1), (61, 1, 2)], bpm=125)
    # one beat = 12 steps of 1/12 beat -> 257 + 11 = 268, at any tempo
    assert OoreTokenizer.from_params(BEAT).encode_file(path).tolist() == [61, 268, 189, 62, 268, 190]
    path90 = make_midi(tmp_path / "g90.mid", [(60, 0, 1), (61, 1, 2)], bpm=90)
    assert OoreTokenizer.from_params(BEAT).encode_file(path90).tolist() == [61, 268, 189, 62, 268, 190]


def test_note_offs_come_before_note_ons_at_one_instant():
    ids = encode_notes(np.array([0, 10]), np.array([10, 20]), np.array([64, 60]), SEED)
    names = [event_names(SEED)[i] for i in ids]
    assert names == ["note_on_64", "time_shift_9", "note_off_64", "note_on_60", "time_shift_9", "note_off_60"]


def test_long_gap_is_several_shifts():
    # a 2.5 s rest: 125 + 125 + 63 steps (1 s + 1 s + 0.504 s)
    ids = encode_notes(np.array([0, 313]), np.array([1, 314]), np.array([60, 62]), SEED)
    names = [event_names(SEED)[i] for i in ids]
    assert names == ["note_on_60", "time_shift_0", "note_off_60", "time_shift_124", "time_shift_124",
                     "time_shift_61", "note_on_62", "time_shift_0", "note_off_62"]
    assert total_steps(ids, SEED) == 314


def test_leading_silence_is_kept():
    ids = encode_notes(np.array([200]), np.array([250]), np.array([60]), SEED)
    on, off, _ = decode_ids(ids, SEED)
    assert on.tolist() == [200] and off.tolist() == [250]


def test_overlapping_same_pitch_notes_keep_every_onset():
    # Two voices on one pitch: the earlier note ends where the later begins; unisons collapse.
    on, off, pitch = resolve_overlaps(np.array([0, 5, 5, 20]), np.array([30, 15, 12, 25]),
                                      np.array([60, 60, 60, 62]))
    assert list(zip(on.tolist(), off.tolist(), pitch.tolist())) == [(0, 5, 60), (5, 15, 60), (20, 25, 62)]
    ids = encode_notes(np.array([0, 5, 5, 20]), np.array([30, 15, 12, 25]), np.array([60, 60, 60, 62]), SEED)
    d_on, d_off, d_pitch = decode_ids(ids, SEED)
    assert list(zip(d_on.tolist(), d_off.tolist(), d_pitch.tolist())) == [(0, 5, 60), (5, 15, 60), (20, 25, 62)]


def test_zero_length_note_lasts_one_step():
    on, off, _ = resolve_overlaps(np.array([7]), np.array([7]), np.array([60]))
    assert (on.tolist(), off.tolist()) == ([7], [8])


def _seconds_notes(path):
    score = Score(str(path)).to("second")
    rows = []
    for track in score.tracks:
        a = track.notes.numpy()
        rows += list(zip(a["pitch"].tolist(), a["time"].tolist(), (a["time"] + a["duration"]).tolist()))
    return rows


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_file_round_trip_within_8ms(path):
    """Every onset survives, within 8 ms; offsets too, except where a same-pitch note cut them."""
    ids = OoreTokenizer.from_params(SEED).encode_file(path)
    on, off, pitch = decode_ids(ids, SEED)
    decoded = {}
    for a, b, p in zip(on.tolist(), off.tolist(), pitch.tolist()):
        decoded.setdefault(p, []).append((a * 0.008, b * 0.008))
    originals = _seconds_notes(path)
    for p, start, end in originals:
        match = min(decoded[p], key=lambda n: abs(n[0] - start))
        assert abs(match[0] - start) <= 0.008 + 1e-9, (p, start, match)
        # unison duplicates collapse into the longest; a later same-pitch onset cuts the note
        end = max(e2 for q, s2, e2 in originals if q == p and abs(s2 - start) < 1e-6)
        overlapped = any(q == p and start + 1e-6 < s2 < end for q, s2, _ in originals)
        if not overlapped:
            assert abs(match[1] - max(end, start + 0.008)) <= 0.008 + 1e-9, (p, start, end, match)


@pytest.mark.parametrize("path", REAL_FILES[:3], ids=lambda p: p.name)
def test_real_file_round_trip_beat_mode(path):
    tok = OoreTokenizer.from_params(BEAT)
    ids = tok.encode_file(path)
    on, off, pitch = decode_ids(ids, BEAT)
    expected = resolve_overlaps(*read_notes(path, BEAT))
    assert np.array_equal(on, expected[0]) and np.array_equal(off, expected[1])
    assert np.array_equal(pitch, expected[2])


def test_tempo_map_is_honoured_no_timing_loss(tmp_path):
    # 8 beats at 90 BPM then 8 at 150: the seed lost a factor of 2.5 here; we keep seconds.
    notes = [(60 + i % 5, i, i + 0.5) for i in range(16)]
    path = make_midi(tmp_path / "t.mid", notes, bpm=90, tempo_changes=[(8, 150)])
    ids = OoreTokenizer.from_params(SEED).encode_file(path)
    on, off, _ = decode_ids(ids, SEED)
    expected = [i * 60 / 90 if i < 8 else 8 * 60 / 90 + (i - 8) * 60 / 150 for i in range(16)]
    assert np.allclose(on * 0.008, expected, atol=0.0041)
    assert abs(total_steps(ids, SEED) * 0.008 - (expected[-1] + 0.5 * 60 / 150)) <= 0.0041


def test_drum_tracks_are_dropped(tmp_path):
    path = make_midi(tmp_path / "drums.mid", [(36, 0, 1)], channel=9)
    with pytest.raises(MidiReadError, match="drum"):
        read_notes(path, SEED)
    keep = EventParams(mode="seed", drop_drums=False)
    assert read_notes(path, keep)[2].tolist() == [36]


@pytest.mark.parametrize("content,reason", [(b"", "not a readable"), (b"garbage bytes" * 10, "not a readable"),
                                            (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x10\x00\x90",
                                             "not a readable")])
def test_bad_files_raise_one_error_type(tmp_path, content, reason):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(MidiReadError, match=reason):
        read_notes(path, SEED)


def test_file_without_notes(tmp_path):
    path = make_midi(tmp_path / "empty.mid", [])
    with pytest.raises(MidiReadError, match="no notes"):
        read_notes(path, SEED)


def test_decode_is_total_over_any_ids():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 382, 500)
    on, off, pitch = decode_ids(ids, SEED)
    assert (off > on).all() and ((pitch >= 0) & (pitch < 128)).all()


def test_transpose_and_retime_keep_ids_meaningful():
    ids = encode_notes(np.array([0, 50, 300]), np.array([40, 100, 310]), np.array([10, 64, 100]), SEED)
    up = transpose(ids, 5)
    assert decode_ids(up, SEED)[2].tolist() == [15, 69, 105]
    assert np.array_equal(decode_ids(up, SEED)[0], decode_ids(ids, SEED)[0])
    slow = retime(ids, 1.1, SEED)
    on, off, pitch = decode_ids(slow, SEED)
    assert pitch.tolist() == [10, 64, 100]
    assert np.allclose(on, [0, 55, 330], atol=2) and total_steps(slow, SEED) == pytest.approx(341, abs=2)


def test_tokenizer_params_round_trip_through_miditok_json(tmp_path):
    tok = OoreTokenizer.from_params(BEAT)
    tok.save(tmp_path)
    loaded = OoreTokenizer(params=tmp_path / "tokenizer.json")
    assert loaded.params == BEAT and len(loaded) == 305
    assert load_params(tmp_path / "tokenizer.json") == BEAT
    assert json.loads((tmp_path / "tokenizer.json").read_text())["tokenization"] == "OoreTokenizer"


def test_tokenize_cli_json_and_decode(tmp_path, capsys):
    from midigen.cli import main

    src = make_midi(tmp_path / "g.mid", [(60, 0, 1), (61, 1, 2)], bpm=125)
    assert main(["tokenize", str(src), "--json", "--decode", str(tmp_path / "back.mid")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"vocab_size": 382, "ids": [61, 316, 189, 62, 316, 190],
                   "events": ["note_on_60", "time_shift_59", "note_off_60", "note_on_61", "time_shift_59",
                              "note_off_61"]}
    back = mido.MidiFile(str(tmp_path / "back.mid"))
    assert back.ticks_per_beat == 960
    assert sorted(m.note for m in back if m.type == "note_on" and m.velocity) == [60, 61]


def test_tokenize_cli_on_random_bytes_is_one_line_in_our_words(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(np.random.default_rng(0).bytes(3000))
    proc = run_midigen("tokenize", str(bad))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("midigen: error: bad.mid: not a readable MIDI file"), lines
    assert not any(word in proc.stderr for word in ("Invaild", "MiniMidi", "iostream"))
    assert proc.stdout == ""


def test_tokenize_decode_never_replaces_the_input_and_an_existing_file_only_with_force(tmp_path, capsys):
    from midigen.cli import main

    src = make_midi(tmp_path / "song.mid", [(60, 0, 1), (64, 1, 2.37)], tpb=480)
    original = src.read_bytes()
    for spelling in (src, tmp_path / "sub" / ".." / "song.mid"):
        for extra in ([], ["--force"]):
            (tmp_path / "sub").mkdir(exist_ok=True)
            assert main(["tokenize", str(src), "--decode", str(spelling), *extra]) == 2
            out, err = capsys.readouterr()
            assert out == "" and len(err.strip().splitlines()) == 1 and "input file" in err
            assert src.read_bytes() == original

    other = tmp_path / "other.mid"
    other.write_bytes(b"keep me")
    assert main(["tokenize", str(src), "--decode", str(other)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "exists" in err and "--force" in err
    assert other.read_bytes() == b"keep me"

    assert main(["tokenize", str(src), "--decode", str(other), "--force"]) == 0
    capsys.readouterr()
    back = mido.MidiFile(str(other))
    assert back.ticks_per_beat == 960 and sorted(m.note for m in back if m.type == "note_on" and m.velocity) == [60, 64]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.mid", "song.mid", "sub"]  # no part file left


def test_tokenize_decode_refusals_exit_2_in_one_line(tmp_path):
    src = make_midi(tmp_path / "song.mid", [(60, 0, 1)])
    proc = run_midigen("tokenize", str(src), "--decode", str(src), "--force")
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("midigen: error: --decode")
