"""Musical metrics, distribution overlap, piano rolls, per-file verdicts against real music and
`midigen evaluate`, on MIDI files made here (and the committed real corpus)."""

from __future__ import annotations

import json
import subprocess
import sys

import mido
import numpy as np
import pytest

from conftest import CORPUS, make_midi

from midigen.cli import main
from midigen.evaluation.metrics import (
    METRIC_KEYS, OVERLAP_FEATURES, compare_folders, distribution_overlap, file_metrics, folder_metrics, note_metrics,
    opening_distance, stuck_ratio,
)
from midigen.evaluation.pianoroll import pianoroll_from_notes, save_pianoroll
from midigen.evaluation.reference import judge_files, real_reference, style_of, usable, window_metrics

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


def test_opening_distance_says_how_far_a_clip_opens_from_its_register(tmp_path):
    # a tune around C5 opening on its own first note; the same tune after a lone low note
    tune = [(72 + (i % 5), 1 + i / 2, 1 + (i + 1) / 2) for i in range(24)]  # median 74
    settled = file_metrics(make_midi(tmp_path / "settled.mid", [(74, 0, 1), *tune], tpb=TPB))
    assert settled["opening_distance"] == 0.0
    low = file_metrics(make_midi(tmp_path / "low.mid", [(50, 0, 1), *tune], tpb=TPB))
    assert low["opening_distance"] == 24.0
    # a chord opens together: the median of its notes, where the texture's middle is
    chords = [(p, bar * 4, bar * 4 + 4) for bar in range(4) for p in (48, 64, 67, 72)]
    assert file_metrics(make_midi(tmp_path / "chords.mid", chords, tpb=TPB))["opening_distance"] == 0.0
    assert opening_distance([], [], TPB) is None


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
    code = ("import sys, midigen.evaluation.metrics, midigen.evaluation.pianoroll, midigen.evaluation.reference;"
            "print([m for m in ('torch', 'lightning', 'pytorch_lightning', 'hydra', 'mlflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- in phase with the beat, held notes, AA -----------------------------------------------


def eighths(pitches, shift=0.0):
    """A melody of 8th notes from beat `shift` on: notes [(pitch, start, end)] in beats."""
    return [(p, shift + i / 2, shift + (i + 1) / 2) for i, p in enumerate(pitches)]


def with_meter(path, notes, signatures, tpb=TPB):
    """A type-0 file of notes [(pitch, start_beat, end_beat)] with time signatures [(beat, num, den)]."""
    events = [(round(b * tpb), 0, mido.MetaMessage("time_signature", numerator=n, denominator=d))
              for b, n, d in signatures]
    for pitch, start, end in notes:
        events += [(round(start * tpb), 2, on(pitch)), (round(end * tpb), 1, off(pitch))]
    events.sort(key=lambda e: (e[0], e[1]))
    now, messages = 0, []
    for tick, _, msg in events:
        messages.append(msg.copy(time=tick - now))
        now = tick
    return raw_file(path, messages, tpb=tpb)


def test_a_clip_a_sixteenth_out_of_phase_is_on_the_grid_but_off_the_beat(tmp_path):
    pitches = [60 + (3 * i) % 12 for i in range(64)]  # 8 bars of 8ths
    in_phase = file_metrics(make_midi(tmp_path / "on.mid", eighths(pitches), tpb=TPB))
    assert in_phase["on_grid"] == 1.0 and in_phase["on_beat"] == pytest.approx(0.5)  # "1 & 2 &": half on the beat
    quarters = [(p, i, i + 1) for i, p in enumerate(pitches[:32])]
    assert file_metrics(make_midi(tmp_path / "quarters.mid", quarters, tpb=TPB))["on_beat"] == 1.0
    # every onset on the "e" (a 16th after the beat): the grid cannot see it, on_beat can
    shifted = file_metrics(make_midi(tmp_path / "e.mid", [(p, s + 0.25, e + 0.25) for p, s, e in quarters], tpb=TPB))
    assert shifted["on_grid"] == 1.0
    assert shifted["on_beat"] == 0.0
    # a human's few ticks early still lands on the beat
    early = [(p, max(s - 9 / TPB, 0), e) for p, s, e in quarters]
    assert file_metrics(make_midi(tmp_path / "early.mid", early, tpb=TPB))["on_beat"] == 1.0


def test_on_beat_counts_from_the_files_own_bar_lines(tmp_path):
    # an 8th-note pickup (a 1/8 bar), then 3/4 with a note on every beat: on the beat in a DAW
    notes = [(67, 0, 0.5)] + [(60 + i % 7, 0.5 + i, 1.5 + i) for i in range(24)]
    path = with_meter(tmp_path / "waltz.mid", notes, [(0, 1, 8), (0.5, 3, 4)])
    assert file_metrics(path)["on_beat"] == 1.0
    # the same notes read as 4/4 from tick 0 would all be off the beat but the first
    assert note_metrics([round(s * TPB) for _, s, _ in notes], [round(e * TPB) for _, _, e in notes],
                        [p for p, _, _ in notes], TPB)["on_beat"] == pytest.approx(1 / 25)


def test_a_note_held_ten_beats_is_counted_but_a_note_never_released_is_what_fails(tmp_path):
    melody = [(p, i, i + 1) for i, p in enumerate(C_MAJOR_UP_DOWN)]
    held = file_metrics(make_midi(tmp_path / "held.mid", melody + [(48, 0, 10)], tpb=TPB))
    assert held["long_notes"] == 1 and held["hanging_notes"] == 0
    assert usable(held, reference=0.5) == (True, [])  # real music holds notes this long (breves, fermatas)
    verdict, reasons = usable({**held, "hanging_notes": 1}, reference=0.5, label="real chorale excerpts")
    assert verdict is False and reasons == ["hanging notes: 1 note never released"]
    # a whole note (4 beats) is music, not a hanging note
    whole = file_metrics(make_midi(tmp_path / "whole.mid", melody + [(48, 0, 4)], tpb=TPB))
    assert whole["long_notes"] == 0
    assert usable(whole, reference=0.5) == (True, [])


def test_usable_says_why_in_a_producers_words():
    metrics = note_metrics([TPB // 4 + k * TPB for k in range(16)], [TPB // 2 + k * TPB for k in range(16)],
                           [60] * 16, TPB, end_tick=16 * TPB)
    assert metrics["on_beat"] == 0.0 and metrics["on_grid"] == 1.0
    verdict, reasons = usable(metrics, reference=0.66, label="real chorale excerpts")
    assert verdict is False
    assert reasons == ["off the beat: 0.00 of onsets on a beat, real chorale excerpts >= 0.66"]
    # without real music the bound is a fallback, and the reason says so
    assert usable(metrics)[1] == ["off the beat: 0.00 of onsets on a beat, usable >= 0.20 "
                                  "(a fallback: no real excerpts to compare with)"]
    # the ticks a human plays late: off the grid as well
    loose = note_metrics([k * TPB + 70 for k in range(16)], [k * TPB + 400 for k in range(16)], [60] * 16, TPB)
    assert [r.split(":")[0] for r in usable(loose, reference=0.2)[1]] == ["off the grid", "off the beat"]
    assert usable(note_metrics([], [], [], TPB)) == (False, ["no notes"])


def test_repetition_half_is_one_for_aa_and_near_zero_for_unrelated_halves():
    rng = np.random.default_rng(1)
    first = rng.integers(48, 84, 32)  # 4 bars of 8ths
    onsets = np.arange(64) * TPB // 2
    clip = dict(on_ticks=onsets, off_ticks=onsets + TPB // 2, ticks_per_beat=TPB, end_tick=32 * TPB)
    assert note_metrics(pitches=np.concatenate([first, first]), **clip)["repetition_half"] == 1.0
    assert note_metrics(pitches=rng.integers(48, 84, 64), **clip)["repetition_half"] < 0.15
    varied = np.concatenate([first, first[:28], rng.integers(84, 120, 4)])  # AA': its last bar differs
    assert 0.8 < note_metrics(pitches=varied, **clip)["repetition_half"] < 1.0
    # a clip ending in a rest still has its 8 bars when the clip's end is given
    short = dict(clip, on_ticks=onsets[:60], off_ticks=onsets[:60] + TPB // 2)
    assert note_metrics(pitches=np.concatenate([first, first])[:60], **short)["repetition_half"] == pytest.approx(
        2 * 28 / (32 + 28))


# --- real music as the reference ----------------------------------------------------------


def test_real_reference_cuts_8_bar_windows_at_the_files_own_bar_lines(tmp_path):
    real = tmp_path / "real"
    (real / "waltz").mkdir(parents=True)
    (real / "march").mkdir()
    # 16 bars of 3/4 after a quarter pickup: two 8-bar windows (4/4 bars would make one)
    waltz = [(60, 0, 1)] + [(60 + i % 5, 1 + i, 2 + i) for i in range(48)]
    windows = window_metrics(with_meter(real / "waltz" / "w.mid", waltz, [(0, 1, 4), (1, 3, 4)]))
    assert len(windows) == 2
    assert all(w["on_beat"] == 1.0 and w["repetition_half"] < 1.0 for w in windows)
    # a 4-bar strain played twice: one 8-bar window whose halves are the same (AA)
    strain = [(p, i, i + 1) for i, p in enumerate([60, 62, 64, 65] * 4)]
    march = strain + [(p, s + 16, e + 16) for p, s, e in strain]
    make_midi(real / "march" / "m.mid", march, tpb=TPB)
    assert [w["repetition_half"] for w in window_metrics(real / "march" / "m.mid")] == [1.0]
    make_midi(real / "march" / "short.mid", strain, tpb=TPB)  # 4 bars: no whole window
    make_midi(real / "march" / "drums.mid", strain, tpb=TPB, channel=9)
    reference = real_reference(real)
    assert reference["styles"]["waltz"]["windows"] == 2 and reference["styles"]["march"]["windows"] == 1
    assert reference["all"]["windows"] == 3 and reference["all"]["files"] == 2
    assert reference["styles"]["waltz"]["metrics"]["on_beat"]["p5"] == 1.0
    assert sorted(reference["skipped"]) == ["march/drums.mid", "march/short.mid"]
    assert reference["styles"]["waltz"]["usable"] == 1.0  # on the grid, at the style's own p5
    assert "drum" in reference["skipped"]["march/drums.mid"] and "shorter than 8 bars" in reference["skipped"][
        "march/short.mid"]
    # each window knows its meter, and each style the meter most of its windows are in
    assert [w["meter"] for w in windows] == ["3/4", "3/4"]
    assert reference["styles"]["waltz"]["meter"] == {"meter": "3/4", "beats": 3, "share": 1.0}
    assert reference["styles"]["march"]["meter"] == {"meter": "4/4", "beats": 4, "share": 1.0}
    assert reference["all"]["meter"]["share"] == pytest.approx(2 / 3)


def test_a_styles_meter_is_the_bar_length_most_windows_have_in_the_signature_they_use_most():
    from midigen.evaluation.reference import window_meter

    rows = [{"meter": m} for m in ["6/8"] * 3 + ["3/4"] * 2 + ["4/4"] * 4 + ["9/8"]]
    # 3-beat bars: 5 of 10 windows (6/8 three times, 3/4 twice), against 4 in 4/4 and one 9/8 (not whole beats)
    assert window_meter(rows) == {"meter": "6/8", "beats": 3, "share": 0.5}
    assert window_meter([{"meter": "2/2"}, {"meter": "4/4"}, {"meter": "3/4"}])["meter"] in ("2/2", "4/4")
    assert window_meter([{"n_notes": 3}]) is None  # a reference from before windows kept their meter


def test_the_reference_says_how_usable_real_music_of_each_style_is():
    from midigen.evaluation.reference import window_stats

    steady = {"n_notes": 8, "on_beat": 0.5, "on_grid": 1.0, "stuck_ratio": 0, "repetition_half": 0, "long_notes": 0}
    rows = [dict(steady) for _ in range(18)] + [{**steady, "on_grid": 0.8}, {**steady, "on_beat": 0.1}]
    stats = window_stats(rows)
    # one window off the grid, one below the style's 5th percentile of on-beat: 18 of 20 usable
    assert stats["metrics"]["on_beat"]["p5"] > 0.1 and abs(stats["usable"] - 0.9) < 1e-12
    assert window_stats([])["usable"] is None


def test_real_reference_of_the_committed_corpus_is_fast_and_tells_chorales_from_fiddle_tunes():
    reference = real_reference(CORPUS)
    assert reference["seconds"] < 10  # measured 0.08 s for these 16 files (41 windows) on one shared core
    assert set(reference["styles"]) == {"chorale", "fiddle"} and reference["all"]["files"] == 16
    chorale, fiddle = (reference["styles"][s]["metrics"]["on_beat"] for s in ("chorale", "fiddle"))
    assert 0.6 < chorale["p5"] < chorale["mean"] < 0.95  # a tester's 8-bar excerpts: mean 0.79, p5 0.66
    assert fiddle["mean"] < chorale["p5"]


def test_files_are_judged_against_their_styles_real_excerpts():
    assert style_of("chorale_s0_01.mid", ["chorale", "fiddle"]) == "chorale"
    assert style_of("fiddle/take 3.mid", ["chorale", "fiddle"]) == "fiddle"
    assert style_of("midigen_s0_01.mid", ["chorale", "fiddle"]) is None
    reference = real_reference(CORPUS)
    phase = {"n_notes": 10, "on_grid": 1.0, "hanging_notes": 0, "long_notes": 0}
    files = {"chorale_s0_01.mid": {**phase, "on_beat": 0.5}, "fiddle_s0_01.mid": {**phase, "on_beat": 0.5},
             "idea.mid": {**phase, "on_beat": 0.02}}
    judged = judge_files(files, reference)
    assert judged["files"]["chorale_s0_01.mid"]["usable"] is False  # chorales are on the beat more than that
    assert "real chorale excerpts >= 0.7" in judged["files"]["chorale_s0_01.mid"]["reasons"][0]
    assert judged["files"]["fiddle_s0_01.mid"]["usable"] is True
    assert judged["files"]["idea.mid"]["against"].startswith("real excerpts")  # no style in its name: all pooled
    assert judged["worst"] == {"file": "idea.mid", "on_beat": 0.02} and judged["unusable"] == 2


# --- `midigen evaluate`: every file, its verdict, the worst one ---------------------------


def test_evaluate_lists_every_file_its_verdict_and_the_worst(tmp_path, capsys):
    ideas = tmp_path / "ideas"
    ideas.mkdir()
    quarters = [(p, i, i + 1) for i, p in enumerate(C_MAJOR_UP_DOWN * 2)]
    make_midi(ideas / "on the beat.mid", quarters, tpb=TPB)
    make_midi(ideas / "on the e.mid", [(p, s + 0.25, e + 0.25) for p, s, e in quarters], tpb=TPB)
    make_midi(ideas / "off grid.mid", [(p, s + 0.1, e + 0.1) for p, s, e in quarters[:4]] + quarters[4:], tpb=TPB)
    assert main(["evaluate", str(ideas)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines() if line.endswith(("yes", "NO"))}
    assert set(rows) == {"on the beat.mid", "on the e.mid", "off grid.mid"}
    assert rows["on the beat.mid"].endswith("yes") and rows["on the e.mid"].endswith("NO")
    assert "worst: on the e.mid (on_beat 0.00); 2 of 3 files not usable" in out
    assert "not usable on the e.mid: off the beat: 0.00 of onsets on a beat" in out
    assert "not usable off grid.mid: off the grid: 0.87 of onsets and offsets" in out
    assert "on_beat >= 0.20, a fallback: no real excerpts to compare with" in out  # the bound says what it is


def test_evaluate_with_real_music_judges_by_style_in_json(tmp_path, capsys):
    ideas = tmp_path / "ideas"
    ideas.mkdir()
    quarters = [(p, i, i + 1) for i, p in enumerate(C_MAJOR_UP_DOWN * 2)]
    make_midi(ideas / "chorale_s0_01.mid", quarters, tpb=TPB)
    make_midi(ideas / "chorale_s0_02.mid", [(p, s + 0.25, e + 0.25) for p, s, e in quarters], tpb=TPB)
    assert main(["evaluate", str(ideas), "--reference", str(CORPUS), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"]["chorale_s0_02.mid"]["on_beat"] == 0.0
    verdicts = report["verdicts"]
    assert verdicts["files"]["chorale_s0_01.mid"]["usable"] is True
    assert verdicts["files"]["chorale_s0_02.mid"]["usable"] is False
    assert verdicts["files"]["chorale_s0_02.mid"]["against"].startswith("real chorale excerpts")
    assert verdicts["worst"]["file"] == "chorale_s0_02.mid" and verdicts["unusable"] == 1
    assert set(report["reference"]["excerpts"]["styles"]) == {"chorale", "fiddle"}


def test_files_without_music_are_skipped_with_reasons_and_left_out_of_the_means(tmp_path, capsys):
    ideas = tmp_path / "ideas"
    ideas.mkdir()
    melody_file(ideas / "a.mid", C_MAJOR_UP_DOWN)
    melody_file(ideas / "b.mid", F_SHARP_MINOR)
    before = folder_metrics(ideas)["mean"]
    make_midi(ideas / "empty tracks.mid", [], tpb=TPB)
    make_midi(ideas / "drums.mid", [(36, i, i + 0.5) for i in range(16)], tpb=TPB, channel=9)
    make_midi(ideas / "patterns.mid", [(60, i, i + 1) for i in range(16)], tpb=TPB, kind=2)
    (ideas / "garbage.mid").write_bytes(b"this is not a MIDI file at all")
    result = folder_metrics(ideas)
    assert sorted(result["files"]) == ["a.mid", "b.mid"]
    assert result["mean"] == before
    reasons = result["skipped"]
    assert "no notes" in reasons["empty tracks.mid"] and "drum tracks only" in reasons["drums.mid"]
    assert "type-2" in reasons["patterns.mid"]
    assert "not a readable MIDI file" in reasons["garbage.mid"]
    assert main(["evaluate", str(ideas)]) == 0
    out = capsys.readouterr().out
    assert "0 of 2 files not usable; 4 skipped" in out
    for name in reasons:
        assert f"skipped {name}: " in out
    # symusic's (and so miditok's) "Invaild midi file" never reaches a user
    assert not any(word in out for word in ("Invaild", "MiniMidi", "iostream"))
