"""The producer's `midigen generate`: DAW-ready files, controls, determinism, clean errors."""

from __future__ import annotations

import subprocess
import sys

import mido
import numpy as np
import pytest

from conftest import make_midi, run_midigen

SCALE_F_SHARP_MINOR = {6, 8, 9, 11, 1, 2, 4}


def gen(smoke_run, out, *args):
    return run_midigen("generate", "--model", str(smoke_run["bundle"]), "--out", str(out), *args,
                       env=smoke_run["env"])


def notes_of(path):
    """(pitch, on_tick, off_tick) of a file, read with mido (not our code)."""
    midi = mido.MidiFile(str(path))
    now, open_at, notes = 0, {}, []
    for msg in midi.tracks[0]:
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            assert msg.note not in open_at, "a pitch started twice"
            open_at[msg.note] = now
        elif msg.type in ("note_off", "note_on"):
            notes.append((msg.note, open_at.pop(msg.note), now))
    return notes, open_at, now


def test_files_are_daw_ready(smoke_run, tmp_path):
    proc = gen(smoke_run, tmp_path, "--num", "3", "--bars", "4", "--bpm", "140", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    files = sorted(tmp_path.glob("*.mid"))
    assert len(files) == 3
    assert proc.stdout.count("wrote ") == 3 and "in_scale" in proc.stdout
    for path in files:
        midi = mido.MidiFile(str(path))
        assert midi.type in (0, 1) and midi.ticks_per_beat == 960 and len(midi.tracks) == 1
        metas = {m.type: m for m in midi.tracks[0] if m.is_meta}
        assert mido.tempo2bpm(metas["set_tempo"].tempo) == pytest.approx(140, rel=1e-4)
        assert (metas["time_signature"].numerator, metas["time_signature"].denominator) == (4, 4)
        assert metas["track_name"].name
        channels = {m.channel for m in midi.tracks[0] if not m.is_meta}
        velocities = {m.velocity for m in midi.tracks[0] if m.type == "note_on" and m.velocity}
        assert channels == {0} and velocities == {64}
        notes, hanging, end = notes_of(path)
        assert hanging == {} and notes
        assert all(off > on for _, on, off in notes)
        assert end == 4 * 4 * 960  # ends exactly on the bar line: it loops


def test_same_seed_same_bytes_other_seed_other_bytes(smoke_run, tmp_path):
    for out in ("a", "b"):
        assert gen(smoke_run, tmp_path / out, "--num", "2", "--bars", "2", "--seed", "7").returncode == 0
    assert gen(smoke_run, tmp_path / "c", "--num", "2", "--bars", "2", "--seed", "8").returncode == 0
    a = [p.read_bytes() for p in sorted((tmp_path / "a").glob("*.mid"))]
    b = [p.read_bytes() for p in sorted((tmp_path / "b").glob("*.mid"))]
    c = [p.read_bytes() for p in sorted((tmp_path / "c").glob("*.mid"))]
    assert a == b and a != c


def test_key_restriction_and_distinct_start_notes(smoke_run, tmp_path):
    proc = gen(smoke_run, tmp_path, "--num", "8", "--bars", "2", "--key", "F# minor", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    for path in sorted(tmp_path.glob("*.mid")):
        notes, _, _ = notes_of(path)
        assert {p % 12 for p, _, _ in notes} <= SCALE_F_SHARP_MINOR
    # A file cannot say which of the notes at tick 0 was sampled first, so the start notes
    # are read from the ids: each file's first event is its start NOTE_ON.
    from midigen.producer.bundle import load_bundle
    from midigen.producer.generate import GenerateRequest, generate_batch

    bundle = load_bundle(smoke_run["bundle"])
    results = generate_batch(bundle, GenerateRequest(num=8, bars=2, key="F# minor", seed=1, start="random"))
    starts = [int(r["ids"][0]) - 1 for r in results]  # NOTE_ON ids are pitch + 1
    assert len(set(starts)) == 8 and {p % 12 for p in starts} <= SCALE_F_SHARP_MINOR  # the seed's random start
    # The default: the model opens the clip, with a note (on beat 1), in key
    for r in generate_batch(bundle, GenerateRequest(num=8, bars=2, key="F# minor", seed=1)):
        assert 1 <= int(r["ids"][0]) <= 128 and (int(r["ids"][0]) - 1) % 12 in SCALE_F_SHARP_MINOR
        assert r["notes"][0].min() == 0


def test_primer_is_kept_verbatim_at_the_start(smoke_run, tmp_path):
    primer = make_midi(tmp_path / "clip.mid", [(60, 0, 1), (64, 1, 1.5), (67, 1.5, 2)], bpm=120)
    proc = gen(smoke_run, tmp_path / "out", "--primer", str(primer), "--bars", "2", "--num", "2", "--bpm", "120")
    assert proc.returncode == 0, proc.stderr
    for path in sorted((tmp_path / "out").glob("*.mid")):
        notes, _, _ = notes_of(path)
        head = sorted(n for n in notes if n[1] < 2 * 960)
        # 8 ms steps at 120 BPM: within one step (~15 ticks) of the clip's own timing
        expected = [(60, 0, 960), (64, 960, 1440), (67, 1440, 1920)]
        assert [n[0] for n in head[:3]] == [60, 64, 67]
        for (p, on, off), (ep, eon, eoff) in zip(head[:3], expected):
            assert abs(on - eon) <= 16 and abs(off - eoff) <= 16


def test_events_length_rounds_up_to_a_bar(smoke_run, tmp_path):
    assert gen(smoke_run, tmp_path, "--events", "40", "--num", "1").returncode == 0
    _, _, end = notes_of(next(tmp_path.glob("*.mid")))
    assert end % (4 * 960) == 0


def test_never_overwrites_silently(smoke_run, tmp_path):
    assert gen(smoke_run, tmp_path, "--num", "1", "--bars", "1", "--seed", "1").returncode == 0
    proc = gen(smoke_run, tmp_path, "--num", "1", "--bars", "1", "--seed", "1")
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert gen(smoke_run, tmp_path, "--num", "1", "--bars", "1", "--seed", "1", "--force").returncode == 0


def test_file_names_cannot_escape_out(smoke_run, tmp_path):
    assert gen(smoke_run, tmp_path / "out", "--num", "1", "--bars", "1", "--name", "../../evil").returncode == 0
    assert [p.parent for p in tmp_path.rglob("*.mid")] == [tmp_path / "out"]


@pytest.mark.parametrize("args,needle", [
    (["--num", "0"], "--num"),
    (["--temperature", "-1"], "--temperature"),
    (["--key", "H# major"], "--key"),
    (["--key", "C lydian-ish"], "scale"),
    (["--style", "jazz=1"], "knows chorale, fiddle"),
    (["--primer", "missing.mid"], "--primer"),
    (["--note-range", "99-36"], "--note-range"),
])
def test_bad_input_is_one_line_exit_2_and_no_files(smoke_run, tmp_path, args, needle):
    proc = gen(smoke_run, tmp_path / "out", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("midigen: error:") and needle in lines[0]
    assert not list(tmp_path.rglob("*.mid"))


def test_corrupt_and_too_long_primers(smoke_run, tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd garbage")
    proc = gen(smoke_run, tmp_path / "out", "--primer", str(bad))
    assert proc.returncode == 2 and "not a readable MIDI file" in proc.stderr
    long = make_midi(tmp_path / "long.mid", [(60, i, i + 1) for i in range(12)])
    proc = gen(smoke_run, tmp_path / "out", "--primer", str(long), "--bars", "2")
    assert proc.returncode == 2 and "longer" in proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_missing_model_and_unknown_alias(smoke_run, tmp_path):
    proc = run_midigen("generate", "--model", str(tmp_path / "nope"), "--out", str(tmp_path), env=smoke_run["env"])
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = run_midigen("generate", "--model", "models:/midigen@nobody", "--out", str(tmp_path), env=smoke_run["env"])
    assert proc.returncode == 2 and "models:/midigen@nobody" in proc.stderr


def test_registry_uris_and_pull(smoke_run, tmp_path):
    for ref in ("models:/midigen@champion", "models:/midigen/1", "models:/midigen/latest"):
        proc = run_midigen("generate", "--model", ref, "--num", "1", "--bars", "1", "--out", str(tmp_path / "x"),
                           "--force", env=smoke_run["env"])
        assert proc.returncode == 0, (ref, proc.stderr)
    proc = run_midigen("models", "pull", "models:/midigen@champion", "--out", str(tmp_path / "models"),
                       env=smoke_run["env"])
    assert proc.returncode == 0, proc.stderr
    pulled = (tmp_path / "models" / "midigen-1")
    assert pulled.is_dir()
    # offline: a pulled folder generates with no tracking server configured
    proc = run_midigen("generate", "--model", str(pulled), "--num", "1", "--bars", "1", "--out", str(tmp_path / "y"),
                       env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert proc.returncode == 0, proc.stderr


def test_checkpoint_is_a_model_too(smoke_run, tmp_path):
    ckpt = next((smoke_run["run_dir"] / "checkpoints").glob("last.ckpt"))
    proc = run_midigen("generate", "--model", str(ckpt), "--num", "1", "--bars", "1", "--out", str(tmp_path),
                       env=smoke_run["env"])
    assert proc.returncode == 0, proc.stderr


def test_producer_path_imports_no_training_machinery(smoke_run, tmp_path):
    code = (
        "import sys\n"
        "from midigen.cli import main\n"
        f"rc = main(['generate', '--model', {str(smoke_run['bundle'])!r}, '--num', '1', '--bars', '1',"
        f" '--out', {str(tmp_path)!r}])\n"
        "heavy = [m for m in ('pytorch_lightning', 'lightning', 'hydra', 'mlflow', 'miditok') if m in sys.modules]\n"
        "print(rc, heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr


def test_anti_stuck_control_lowers_repetition(smoke_run):
    """The repetition penalty (on by default) leaves fewer repeated pitches than none at all."""
    from midigen.producer.bundle import load_bundle
    from midigen.producer.generate import GenerateRequest, generate_batch
    from midigen.evaluation.metrics import note_metrics

    bundle = load_bundle(smoke_run["bundle"])
    stuck = {}
    for penalty in (0.0, 3.0):
        results = generate_batch(bundle, GenerateRequest(num=8, bars=8, seed=5, repetition_penalty=penalty))
        stuck[penalty] = np.mean([note_metrics(*r["notes"], 960)["stuck_ratio"] for r in results])
    assert stuck[3.0] <= stuck[0.0]


def test_trained_model_reports_copy_ratio_under_its_calibrated_bound(smoke_run, tmp_path):
    import json

    from midigen.evaluation.originality import OriginalityIndex

    index = OriginalityIndex.load(smoke_run["bundle"] / "originality.npz")
    assert index.reference is not None and index.reference["files"] >= 1  # held-out files measured
    assert 0.2 <= index.max_copy <= 1.0
    proc = gen(smoke_run, tmp_path, "--num", "3", "--bars", "4", "--seed", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    copies = json.loads(proc.stdout)["copy"]
    assert len(copies) == 3
    assert all(c["max_copy"] == index.max_copy and 0.0 <= c["copy_ratio"] <= 1.0 for c in copies.values())
    lines = gen(smoke_run, tmp_path / "lines", "--num", "2", "--bars", "4").stdout.splitlines()
    assert all("copy " in line for line in lines if line.startswith("wrote"))


def test_max_copy_guard_resamples_a_planted_copy(smoke_run, tmp_path):
    """Plant the model's own output in its index: the guard must refuse it and resample."""
    import json
    import shutil

    from midigen.evaluation.originality import OriginalityIndex

    first = gen(smoke_run, tmp_path / "free", "--num", "2", "--bars", "8", "--seed", "9", "--max-copy", "off")
    assert first.returncode == 0, first.stderr
    planted = sorted((tmp_path / "free").glob("*.mid"))
    bundle = tmp_path / "bundle"
    shutil.copytree(smoke_run["bundle"], bundle)
    OriginalityIndex.from_files(planted, names=["planted_a.mid", "planted_b.mid"]).save(bundle / "originality.npz")

    proc = run_midigen("generate", "--model", str(bundle), "--out", str(tmp_path / "guarded"), "--num", "2",
                       "--bars", "8", "--seed", "9", "--max-copy", "0.5", "--json", env=smoke_run["env"])
    assert proc.returncode == 0, proc.stderr
    copies = json.loads(proc.stdout)["copy"]
    for path, original in zip(sorted(copies), planted):
        c = copies[path]
        assert c["resampled"] >= 1  # the planted copy (ratio 1.0) was refused
        assert c["copy_ratio"] < 1.0
        assert (tmp_path / "guarded" / original.name).read_bytes() != original.read_bytes()
    # unguarded, the same request reproduces the planted files and scores them 1.0 with their source
    proc = run_midigen("generate", "--model", str(bundle), "--out", str(tmp_path / "again"), "--num", "2",
                       "--bars", "8", "--seed", "9", "--max-copy", "1", "--json", env=smoke_run["env"])
    again = json.loads(proc.stdout)["copy"]
    assert [round(c["copy_ratio"], 6) for c in again.values()] == [1.0, 1.0]
    assert {c["source"] for c in again.values()} == {"planted_a.mid", "planted_b.mid"}


@pytest.mark.parametrize("value", ["1.5", "-0.1", "lots"])
def test_bad_max_copy_is_one_line(smoke_run, tmp_path, value):
    proc = gen(smoke_run, tmp_path, "--max-copy", value)
    assert proc.returncode == 2 and "--max-copy" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
