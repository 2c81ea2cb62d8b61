"""Musical metrics, distribution overlap, piano rolls and `midigen evaluate`, on MIDI files made here."""

from __future__ import annotations

import json
import subprocess
import sys

import mido
import numpy as np
import pytest

from conftest import make_midi

from midigen.cli import main
from midigen.evaluation.metrics import (
    METRIC_KEYS, OVERLAP_FEATURES, compare_folders, distribution_overlap, file_metrics, folder_metrics, note_metrics,
    stuck_ratio,
)
from midigen.evaluation.pianoroll import pianoroll_from_notes, save_pianoroll

TPB = 960
C_MAJOR_UP_DOWN = [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60]
# F# minor: tonic arpeggio, the scale up to the 6th and back, ending long on the tonic.
F_SHARP_MINOR = [66, 69, 73, 69, 66, 68, 69, 71, 73, 74, 73, 71, 69, 68, 66, 73, 69, 66]


def melody_file(path, pitches, beat=1.0, tpb=TPB):
    """One note per `beat` (legato), the last one held two beats."""
    notes = [(p, i * beat, (i + 1) * beat) for i, p in enumerate(pitches)]
    notes[-1] = (notes[-1][0], notes[-1][1], notes[-1][1] + 2)
    return make_midi(path, notes, tpb=tpb)


def raw_file(path, messages, tpb=TPB):
    """A type-0 file of exactly these messages (times are deltas in ticks), nothing added."""
    midi = mido.MidiFile(type=0, ticks_per_beat=tpb)
    midi.tracks.append(mido.MidiTrack(messages))
    midi.save(str(path))
    return path


def on(note, time=0):
    return mido.Message("note_on", note=note, velocity=80, time=time)


def off(note, time=0):
    return mido.Message("note_off", note=note, velocity=0, time=time)


# --- key and scale ------------------------------------------------------------------------


def test_c_major_scale_is_all_in_c_major(tmp_path):
    metrics = file_metrics(melody_file(tmp_path / "scale.mid", C_MAJOR_UP_DOWN))
    assert metrics["key"] == "C major"
    assert metrics["in_scale"] == 1.0


def test_f_sharp_minor_melody_is_not_taken_for_its_relative_major(tmp_path):
    metrics = file_metrics(melody_file(tmp_path / "fsharp.mid", F_SHARP_MINOR))
    assert metrics["key"] == "F# minor"  # A major holds the same notes
    assert metrics["in_scale"] == 1.0


def test_chromatic_notes_lower_in_scale(tmp_path):
    pitches = C_MAJOR_UP_DOWN[:8] + [61, 61]  # two C#s after a C major scale
    metrics = file_metrics(melody_file(tmp_path / "chromatic.mid", pitches))
    assert metrics["key"] == "C major"  # D major, with C#, holds only 7 of the 10 notes
    assert metrics["in_scale"] == pytest.approx(0.8)


# --- stuck on notes -----------------------------------------------------------------------


def test_one_repeated_note_is_stuck(tmp_path):
    metrics = file_metrics(melody_file(tmp_path / "stuck.mid", [64] * 32, beat=0.5))
    assert metrics["stuck_ratio"] >= 0.9


def test_varied_melodies_are_not_stuck(tmp_path):
    assert file_metrics(melody_file(tmp_path / "scale.mid", C_MAJOR_UP_DOWN))["stuck_ratio"] <= 0.2
    ode_to_joy = [64, 64, 65, 67, 67, 65, 64, 62, 60, 60, 62, 64, 64, 62, 62]
    assert file_metrics(melody_file(tmp_path / "ode.mid", ode_to_joy))["stuck_ratio"] < 0.35


def test_stuck_ratio_catches_a_looping_figure_and_measures_its_share():
    beats = np.arange(32) * TPB
    trill = np.array([67, 69] * 16)
    assert stuck_ratio(beats, trill, TPB) == 1.0
    half_looped = np.array(C_MAJOR_UP_DOWN[:8] + [60, 64, 67] * 8)  # 8 varied notes, then an arpeggio loop
    assert stuck_ratio(np.arange(32) * TPB, half_looped, TPB) == pytest.approx(24 / 32, abs=1 / 32)


def test_stuck_ratio_follows_the_top_line_of_chords():
    # the same C major triad struck 16 times: the melody (top note) never moves
    onsets = np.repeat(np.arange(16) * TPB, 3)
    chords = np.tile([60, 64, 67], 16)
    assert stuck_ratio(onsets, chords, TPB) == 1.0


# --- timing -------------------------------------------------------------------------------


def test_notes_on_sixteenths_and_triplets_are_on_grid(tmp_path):
    sixteenths = [(60 + i % 5, i / 4, (i + 1) / 4) for i in range(16)]
    triplets = [(67, 4 + i / 3, 4 + (i + 1) / 3) for i in range(6)]
    assert file_metrics(make_midi(tmp_path / "grid.mid", sixteenths + triplets, tpb=TPB))["on_grid"] == 1.0
    # a human's few ticks early or late (within 1/48 beat = 20 ticks) is still on the grid
    humanised = [(p, s + 9 / TPB, e - 11 / TPB) for p, s, e in sixteenths]
    assert file_metrics(make_midi(tmp_path / "humanised.mid", humanised, tpb=TPB))["on_grid"] == 1.0


def test_notes_off_the_grid_lower_on_grid(tmp_path):
    # every other note is 30 ticks late (20 are tolerated; no 8th-triplet line is near either):
    # 16 of the 32 onsets and offsets are off the grid
    notes = [(60 + i % 5, i / 4 + (30 / TPB if i % 2 else 0), (i + 1) / 4 + (30 / TPB if i % 2 else 0))
             for i in range(16)]
    metrics = file_metrics(make_midi(tmp_path / "loose.mid", notes, tpb=TPB))
    assert metrics["on_grid"] == pytest.approx(0.5)
    # offsets count too: notes struck on the grid but released 30 ticks early
    early_release = [(60 + i % 5, i / 4, (i + 1) / 4 - 30 / TPB) for i in range(16)]
    assert file_metrics(make_midi(tmp_path / "short.mid", early_release, tpb=TPB))["on_grid"] == pytest.approx(0.5)


def test_polyphony_range_and_density(tmp_path):
    triads = [(p, bar * 4, bar * 4 + 4) for bar in range(4) for p in (60 + bar, 64 + bar, 67 + bar)]
    metrics = file_metrics(make_midi(tmp_path / "triads.mid", triads, tpb=TPB))
    assert metrics["polyphony"] == pytest.approx(3.0)
    assert metrics["pitch_range"] == 10
    assert metrics["n_notes"] == 12
    assert metrics["duration_beats"] == 16.0
    assert metrics["note_density"] == pytest.approx(12 / 16)
    assert file_metrics(melody_file(tmp_path / "melody.mid", C_MAJOR_UP_DOWN))["polyphony"] == pytest.approx(1.0)


# --- hanging notes and endings ------------------------------------------------------------


def test_a_note_on_never_closed_is_a_hanging_note(tmp_path):
    path = raw_file(tmp_path / "hanging.mid", [
        on(60), off(60, TPB), on(64), off(64, TPB), on(67),  # 67 is never released
        mido.MetaMessage("end_of_track", time=2 * TPB),
    ])
    metrics = file_metrics(path)
    assert metrics["hanging_notes"] == 1
    assert metrics["n_notes"] == 2  # the two closed notes are still measured
    closed = raw_file(tmp_path / "closed.mid", [on(60), off(60, TPB), mido.MetaMessage("end_of_track", time=3 * TPB)])
    assert file_metrics(closed)["hanging_notes"] == 0


def test_a_velocity_zero_note_on_closes_a_note(tmp_path):
    path = raw_file(tmp_path / "running.mid", [
        on(60), mido.Message("note_on", note=60, velocity=0, time=TPB), mido.MetaMessage("end_of_track", time=3 * TPB),
    ])
    assert file_metrics(path)["hanging_notes"] == 0


@pytest.mark.parametrize("last_off_beat, end_of_track_beat, on_bar", [
    (8, 8, True),     # last note ends on bar 3's downbeat
    (7, 7, False),    # stops a beat early: "ends abruptly"
    (7, 8, True),     # a rest fills the bar: the file ends on the bar line
    (6.5, 6.5, False),
], ids=["ends-on-bar", "ends-mid-bar", "rest-to-bar", "ends-off-beat"])
def test_ends_on_bar_uses_the_files_end(tmp_path, last_off_beat, end_of_track_beat, on_bar):
    last_off, end = round(last_off_beat * TPB), round(end_of_track_beat * TPB)
    path = raw_file(tmp_path / "end.mid", [
        on(60), off(60, last_off), mido.MetaMessage("end_of_track", time=end - last_off),
    ])
    metrics = file_metrics(path)
    assert metrics["ends_on_bar"] is on_bar
    assert metrics["duration_beats"] == end_of_track_beat


def test_files_midigen_writes_never_hang_and_end_on_the_bar(tmp_path):
    from midigen.data.midi_io import write_midi

    # a zero-length note and a note still sounding at the clip's end (2 bars)
    path = write_midi(tmp_path / "idea.mid", [0, TPB, 2 * TPB, 7 * TPB], [TPB, TPB, 3 * TPB, 9 * TPB],
                      [60, 62, 64, 67], end_tick=8 * TPB)
    metrics = file_metrics(path)
    assert metrics["hanging_notes"] == 0 and metrics["zero_length_notes"] == 0
    assert metrics["ends_on_bar"] is True and metrics["duration_beats"] == 8.0


# --- notes in memory ----------------------------------------------------------------------


def test_note_metrics_in_memory_match_the_file(tmp_path):
    notes = [(p, i / 2, i / 2 + 0.75) for i, p in enumerate(F_SHARP_MINOR)]
    from_file = file_metrics(make_midi(tmp_path / "idea.mid", notes, tpb=TPB))
    on_ticks = [round(s * TPB) for _, s, _ in notes]
    off_ticks = [round(e * TPB) for _, _, e in notes]
    in_memory = note_metrics(on_ticks, off_ticks, [p for p, _, _ in notes], TPB)
    assert list(in_memory) == list(METRIC_KEYS) == list(from_file)
    assert in_memory == from_file


def test_note_metrics_count_zero_length_notes_and_take_a_clip_end():
    metrics = note_metrics([0, TPB, 2 * TPB], [TPB, TPB, 3 * TPB], [60, 62, 64], TPB, end_tick=4 * TPB)
    assert metrics["zero_length_notes"] == 1
    assert metrics["hanging_notes"] == 1  # written out naively, a note without length never closes
    assert metrics["ends_on_bar"] is True
    assert metrics["duration_beats"] == 4.0
    # an idea without notes is measured, scores 0 on every share, and never yields NaN or None to average
    empty = note_metrics([], [], [], TPB)
    assert empty["key"] is None
    assert all(float(empty[k]) == 0.0 for k in METRIC_KEYS if k != "key")


# --- folders and distributions ------------------------------------------------------------


def test_folder_metrics_skip_unreadable_files_with_a_reason(tmp_path):
    melody_file(tmp_path / "a.mid", C_MAJOR_UP_DOWN)
    (tmp_path / "takes").mkdir()
    melody_file(tmp_path / "takes" / "b.MIDI", F_SHARP_MINOR)
    (tmp_path / "garbage.mid").write_bytes(b"this is not a MIDI file at all")
    (tmp_path / "empty.mid").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not MIDI, not looked at")
    result = folder_metrics(tmp_path)
    assert sorted(result["files"]) == ["a.mid", "takes/b.MIDI"]
    assert sorted(result["skipped"]) == ["empty.mid", "garbage.mid"]
    assert all("garbage.mid" in reason or "empty.mid" in reason for reason in result["skipped"].values())
    assert result["mean"]["n_notes"] == pytest.approx((15 + 18) / 2)
    assert result["mean"]["in_scale"] == 1.0


def test_overlap_of_distributions():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, 2000)
    assert distribution_overlap(a, a) == pytest.approx(1.0, abs=1e-6)
    assert distribution_overlap(a, rng.normal(0.0, 1.0, 2000)) > 0.93
    assert distribution_overlap(a, rng.normal(20.0, 1.0, 2000)) < 0.01
    # two unit normals one standard deviation apart share 2 * Phi(-0.5) = 0.617 of their area
    assert distribution_overlap(a, rng.normal(1.0, 1.0, 2000)) == pytest.approx(0.617, abs=0.05)
    assert distribution_overlap([1.0] * 5, [1.0] * 7) == pytest.approx(1.0, abs=0.01)
    assert distribution_overlap([1.0] * 5, [2.0] * 7) < 0.01
    # a reference without spread (every file exactly on the grid) still meets a mostly-on-grid set
    assert distribution_overlap([1.0] * 8, [1.0] * 6 + [0.9, 0.95]) > 0.5
    assert distribution_overlap([1.0] * 8, [0.5, 0.6, 0.55, 0.52]) < 0.01


def test_compare_folders_tells_stuck_output_from_real_melodies(tmp_path):
    real, stuck = tmp_path / "real", tmp_path / "stuck"
    real.mkdir(), stuck.mkdir()
    for k in range(4):
        melody_file(real / f"real{k}.mid", [p + k for p in C_MAJOR_UP_DOWN])
        melody_file(stuck / f"stuck{k}.mid", [60 + k] * 15)
    same = compare_folders(real, real)
    assert set(same) == set(OVERLAP_FEATURES)
    assert same["stuck_ratio"] == pytest.approx(1.0, abs=0.01)
    assert compare_folders(stuck, real)["stuck_ratio"] < 0.05


# --- piano rolls --------------------------------------------------------------------------


def test_pianorolls_are_small_pngs(tmp_path):
    notes = [(p, i / 2, i / 2 + 0.5) for i, p in enumerate(F_SHARP_MINOR)] + [(54, 0, 4), (57, 4, 8)]
    png = save_pianoroll(make_midi(tmp_path / "idea.mid", notes, tpb=TPB), tmp_path / "rolls" / "idea.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 5_000 < len(data) < 300_000
    png = pianoroll_from_notes([0, TPB], [TPB, 2 * TPB], [60, 64], TPB, tmp_path / "two.png", title="two notes")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the command --------------------------------------------------------------------------


def test_evaluate_prints_json(tmp_path, capsys):
    ideas, reference = tmp_path / "ideas", tmp_path / "reference"
    ideas.mkdir(), reference.mkdir()
    melody_file(ideas / "idea1.mid", C_MAJOR_UP_DOWN)
    melody_file(ideas / "idea2.mid", [64] * 16)
    (ideas / "broken.mid").write_bytes(b"MThd garbage")
    for k in range(3):
        melody_file(reference / f"song{k}.mid", F_SHARP_MINOR[k:])
    assert main(["evaluate", str(ideas), "--json", "--reference", str(reference)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["files"]) == ["idea1.mid", "idea2.mid"]
    assert list(report["skipped"]) == ["broken.mid"]
    assert report["files"]["idea2.mid"]["stuck_ratio"] == 1.0
    assert report["mean"]["stuck_ratio"] == pytest.approx(0.5)
    assert set(report["overlap"]) == set(OVERLAP_FEATURES)
    assert all(v is None or 0.0 <= v <= 1.0 for v in report["overlap"].values())


def test_evaluate_prints_a_table(tmp_path, capsys):
    melody_file(tmp_path / "idea1.mid", C_MAJOR_UP_DOWN)
    assert main(["evaluate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "idea1.mid" in out and "C major" in out and "mean" in out


@pytest.mark.parametrize("make_folder", ["missing", "empty", "unreadable"])
def test_evaluate_bad_folder_is_one_line_error(tmp_path, capsys, make_folder):
    folder = tmp_path / "ideas"
    if make_folder != "missing":
        folder.mkdir()
    if make_folder == "unreadable":
        (folder / "broken.mid").write_bytes(b"nope")
    assert main(["evaluate", str(folder), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("midigen: error:") and "ideas" in err and "\n" not in err


def test_metrics_and_pianoroll_stay_off_the_training_stack():
    code = ("import sys, midigen.evaluation.metrics, midigen.evaluation.pianoroll;"
            "print([m for m in ('torch', 'lightning', 'pytorch_lightning', 'hydra', 'mlflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
