"""Bad input: a corpus seeded with broken and absurd MIDI files still trains, and every unusable
file is named in the skip report with its reason.

What counts as bad: anything that cannot be read or parsed, has no usable (non-drum) notes, is
type 2 (independent patterns), or would be more tokens than `data.max_file_tokens` (a few
bytes of huge delta times stand for billions of TIME_SHIFTs). Absurd tempi, 100 000 notes at
one instant and a 3-hour piece are music the tokenizer can hold: they are kept, and must
neither crash nor take long.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from conftest import vlq as _vlq, CORPUS, make_midi, run_midigen

from midigen.data.cache import build_token_cache
from midigen.data.events import EventParams, decode_ids, total_steps

SEED = EventParams.seed()
MAX_FILE_TOKENS = 2_000_000  # conf/data/default.yaml


# --- writing MIDI byte by byte (mido refuses most of what we need to break) ----------------


def _track(events: list[tuple[int, bytes]]) -> bytes:
    """[(delta ticks, event bytes)] -> the body of an MTrk chunk, closed by end-of-track."""
    return b"".join(_vlq(delta) + event for delta, event in events) + b"\x00\xff\x2f\x00"


def _smf(tracks: list[bytes], kind: int = 0, tpb: int = 480) -> bytes:
    head = b"MThd" + struct.pack(">IHHH", 6, kind, len(tracks), tpb)
    return head + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)


def _on(pitch: int) -> bytes:
    return bytes([0x90, pitch, 80])


def _off(pitch: int) -> bytes:
    return bytes([0x80, pitch, 0])


SLOWEST_TEMPO = b"\xff\x51\x03\xff\xff\xff"  # 16.8 s a beat (3.58 BPM): MIDI cannot say 1 BPM


def seed_bad_corpus(root: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Copy the committed corpus to `root` and add broken and absurd files.

    Returns (bad: rel -> words its skip reason must contain, kept: rel -> notes it must keep).
    """
    shutil.copytree(CORPUS, root)
    chorale, fiddle = root / "chorale", root / "fiddle"
    rng = np.random.default_rng(0)
    bad: dict[str, str] = {}
    kept: dict[str, int] = {}

    def put(rel: str, data: bytes, reason: str | None = None, notes: int | None = None) -> None:
        (root / rel).write_bytes(data)
        if reason is not None:
            bad[rel] = reason
        else:
            kept[rel] = notes

    put("chorale/zufällige Bytes.mid", rng.bytes(2000), "not a readable MIDI file")
    three_notes = _track([(0, _on(60)), (480, _off(60)), (0, _on(62)), (480, _off(62)), (0, _on(64)), (480, _off(64))])
    put("chorale/truncated track.mid", _smf([three_notes])[:30], "not a readable MIDI file")
    put("fiddle/cut mid-event.mid", _smf([three_notes[:-7]]), "not a readable MIDI file")
    put("fiddle/leer – zero bytes.mid", b"", "empty: 0 bytes")
    put("fiddle/no_notes.mid", _smf([_track([(0, b"\xff\x51\x03\x07\xa1\x20")])]), "no notes")
    make_midi(chorale / "drums only.mid", [(36 + i % 4, i, i + 0.5) for i in range(16)], channel=9)
    bad["chorale/drums only.mid"] = "drum tracks only"
    put("fiddle/type2.mid", _smf([three_notes, three_notes], kind=2), "type-2")
    put("fiddle/README.mid", b"This is a text file with a .mid name.\n", "not a readable MIDI file")
    put("fiddle/picture.mid", b"\x89PNG\r\n\x1a\n" + rng.bytes(200), "not a readable MIDI file")
    # Four notes 2**28 ticks apart at the slowest tempo: 77 bytes, ~190 million TIME_SHIFTs.
    gaps = [(0, SLOWEST_TEMPO)] + [e for _ in range(4) for e in ((0x0FFFFFFF, _on(60)), (96, _off(60)))]
    put("chorale/huge gaps.mid", _smf([_track(gaps)], tpb=96), "too long to train on")

    # Kept: absurd but representable.
    slow = [(0, SLOWEST_TEMPO)] + [e for i in range(8) for e in ((0, _on(60 + i)), (480, _off(60 + i)))]
    put("chorale/tempo 3.58 bpm.mid", _smf([_track(slow)]), notes=8)
    make_midi(fiddle / "tempo 1000 bpm.mid", [(60 + i % 12, i, i + 1) for i in range(64)], bpm=1000)
    kept["fiddle/tempo 1000 bpm.mid"] = 64
    # 100 000 note-ons at one instant (all pitches, over and over), all off a beat later.
    chord = [(0, _on(i % 128)) for i in range(100_000)] + [(480 if i == 0 else 0, _off(i % 128))
                                                            for i in range(100_000)]
    put("fiddle/100k simultaneous.mid", _smf([_track(chord)]), notes=128)  # unisons merge: one per pitch
    # Three hours at 120 BPM, a note every beat.
    long = [e for i in range(21_600) for e in ((0, _on(48 + i % 24)), (480, _off(48 + i % 24)))]
    put("fiddle/three hours.mid", _smf([_track(long)]), notes=21_600)
    # Good music under awkward names.
    shutil.copyfile(CORPUS / "fiddle" / "AcaciaReel.mid", fiddle / "Acacia Reel — Ünïcødé 曲.mid")
    kept["fiddle/Acacia Reel — Ünïcødé 曲.mid"] = None
    return bad, kept


def _make_unreadable(path: Path, monkeypatch) -> str:
    """chmod 000 `path`; as root (which reads anyway) simulate the refusal. Returns how."""
    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        return "chmod 000"
    real = Path.read_bytes

    def refuse(self):  # noqa: ANN001
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    return "simulated (root ignores chmod 000)"


def _reasons(csv_path: Path) -> dict[str, str]:
    with csv_path.open(newline="", encoding="utf-8") as fh:
        return {row["rel"]: row["reason"] for row in csv.DictReader(fh)}


def test_every_bad_file_is_skipped_with_its_reason_and_the_rest_kept(tmp_path, monkeypatch):
    root = tmp_path / "corpus dir ü"
    bad, kept = seed_bad_corpus(root)
    shutil.copyfile(CORPUS / "chorale" / "bwv66.6.mid", root / "chorale" / "locked.mid")
    _make_unreadable(root / "chorale" / "locked.mid", monkeypatch)
    bad["chorale/locked.mid"] = "Permission denied"

    started = time.perf_counter()
    corpus = build_token_cache(root, SEED, tmp_path / "cache", max_file_tokens=MAX_FILE_TOKENS)
    seconds = time.perf_counter() - started

    reasons = {s["rel"]: s["reason"] for s in corpus.skipped}
    assert set(reasons) == set(bad)
    for rel, words in bad.items():
        assert words in reasons[rel], (rel, reasons[rel])
    assert _reasons(corpus.cache_dir / "skipped.csv") == reasons  # the report on disk says the same
    assert "187,650,040 tokens" in reasons["chorale/huge gaps.mid"]  # counted, never built

    files = {f["rel"]: f for f in corpus.files}
    assert set(kept) <= set(files)
    assert len(files) == 16 + len(kept)  # every committed file too
    for rel, notes in kept.items():
        f = files[rel]
        ids = np.asarray(corpus.tokens[f["offset"]: f["offset"] + f["length"]])
        if notes is not None:
            assert decode_ids(ids, SEED)[0].size == notes, rel
    three_hours = files["fiddle/three hours.mid"]
    ids = corpus.tokens[three_hours["offset"]: three_hours["offset"] + three_hours["length"]]
    assert abs(total_steps(ids, SEED) * SEED.step_ms / 1000 - 3 * 3600) < 1.0  # its length survives, in seconds
    assert seconds < 30, f"tokenizing the bad corpus took {seconds:.1f} s"


def test_a_lower_token_limit_skips_a_cached_file_and_a_higher_one_keeps_it(tmp_path):
    root = tmp_path / "corpus"
    seed_bad_corpus(root)
    cache = tmp_path / "cache"
    full = build_token_cache(root, SEED, cache, max_file_tokens=MAX_FILE_TOKENS)
    assert "fiddle/three hours.mid" in {f["rel"] for f in full.files}
    low = build_token_cache(root, SEED, cache, max_file_tokens=50_000)  # from the per-file cache this time
    assert "too long" in {s["rel"]: s["reason"] for s in low.skipped}["fiddle/three hours.mid"]
    again = build_token_cache(root, SEED, cache, max_file_tokens=MAX_FILE_TOKENS)  # the limit is not cached
    assert "fiddle/three hours.mid" in {f["rel"] for f in again.files}


@pytest.mark.slow
def test_smoke_training_on_a_bad_corpus_completes_and_logs_the_skip_report(tmp_path):
    from mlflow import MlflowClient

    root = tmp_path / "corpus dir ü"
    bad, kept = seed_bad_corpus(root)
    if os.geteuid() != 0:  # root reads a chmod 000 file; the in-process test above covers it then
        shutil.copyfile(CORPUS / "chorale" / "bwv66.6.mid", root / "chorale" / "locked.mid")
        (root / "chorale" / "locked.mid").chmod(0)
        bad["chorale/locked.mid"] = "Permission denied"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Hydra's override grammar takes non-ASCII only inside quotes.
    proc = run_midigen("train", "experiment=smoke", f"data.root='{root}'", f"paths.cache={tmp_path / 'cache'}",
                       f"paths.outputs={tmp_path / 'out'}", "registry.name=null",
                       env={"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"skipped {len(bad)} unusable MIDI files" in proc.stdout

    local = list((tmp_path / "cache").glob("*/corpus-*/skipped.csv"))
    assert len(local) == 1
    reasons = _reasons(local[0])
    assert set(reasons) == set(bad)
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])[0]
    assert run.info.status == "FINISHED"
    profile = json.loads(run.inputs.dataset_inputs[0].dataset.profile)  # the run's dataset
    assert profile["skipped"] == len(bad)
    assert profile["files"] == 16 + len(kept)
    logged = Path(client.download_artifacts(run.info.run_id, "skipped.csv", str(tmp_path / "dl")))
    assert _reasons(logged) == reasons


# --- one reader, one set of messages ----------------------------------------------------------


@pytest.mark.parametrize("content,words", [
    (np.random.default_rng(1).bytes(2000), "bad.mid: not a readable MIDI file"),
    (b"MThd garbage", "bad.mid: not a readable MIDI file"),
    (b"", "bad.mid: not a readable MIDI file (empty: 0 bytes)"),
    (_smf([_track([(0, _on(60)), (480, _off(60))])] * 2, kind=2), "bad.mid: type-2 MIDI"),
], ids=["random bytes", "cut header", "empty", "type 2"])
def test_every_reader_of_notes_words_a_bad_file_alike(tmp_path, content, words):
    from midigen.data.midi_io import read_notes
    from midigen.errors import MidiReadError
    from midigen.evaluation.metrics import file_metrics
    from midigen.evaluation.originality import read_onsets
    from midigen.evaluation.reference import window_metrics
    from midigen.evaluation.style import file_features

    bad = tmp_path / "bad.mid"
    bad.write_bytes(content)
    readers = {"training": lambda p: read_notes(p, SEED), "beat tokens": lambda p: read_notes(p, EventParams.beat()),
               "metrics": file_metrics, "originality": read_onsets, "style": file_features, "reference": window_metrics}
    messages = {}
    for name, read in readers.items():
        with pytest.raises(MidiReadError) as info:
            read(bad)
        messages[name] = str(info.value)
    assert len(set(messages.values())) == 1, messages
    message = messages["training"]
    assert message.startswith(words) and "\n" not in message
    assert not any(word in message for word in ("Invaild", "MiniMidi", "iostream"))


def test_audio_preview_words_a_bad_file_as_the_note_reader_does(tmp_path):
    from midigen.errors import MidiReadError
    from midigen.producer.audio import read_notes_seconds

    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"This is a text file with a .mid name.\n")
    with pytest.raises(MidiReadError, match=r"^bad\.mid: not a readable MIDI file \(") as info:
        read_notes_seconds(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(MidiReadError, match="no such MIDI file"):
        read_notes_seconds(tmp_path / "missing.mid")
