"""The token cache, splits, sampling schemes and augmentation of the DataModule."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from midigen.data.cache import (
    assign_splits,
    build_token_cache,
    list_corpus,
    split_of,
)
from midigen.data.datamodule import Augmentation, EventDataModule, WindowSequences
from midigen.errors import MidigenError
from midigen.data.events import NOTE_OFF_OFFSET, NOTE_ON_OFFSET, PAD_ID, TIME_SHIFT_OFFSET, EventParams, bar_positions

from conftest import make_midi

SEED = EventParams.seed()


def test_cache_reused_and_rebuilt_only_for_changed_files(corpus_copy, tmp_path, monkeypatch):
    import midigen.data.cache as data

    calls = []
    real = data.read_notes
    monkeypatch.setattr(data, "read_notes", lambda path, params: calls.append(path) or real(path, params))
    first = build_token_cache(corpus_copy, SEED, tmp_path / "cache")
    n_files = len(list_corpus(corpus_copy))
    assert len(calls) == n_files and len(first.files) == n_files
    calls.clear()
    again = build_token_cache(corpus_copy, SEED, tmp_path / "cache")
    assert calls == [] and again.cache_dir == first.cache_dir  # warm cache: no MIDI parsing at all
    assert isinstance(again.tokens, np.memmap)
    # change one file: only it is re-tokenized
    changed = sorted((corpus_copy / "fiddle").glob("*.mid"))[0]
    make_midi(changed, [(60, 0, 1), (64, 1, 2)])
    third = build_token_cache(corpus_copy, SEED, tmp_path / "cache")
    assert [p.name for p in calls] == [changed.name]
    assert third.cache_dir != first.cache_dir


def test_splits_are_stable_when_files_are_added():
    rels = [f"style/file{i:03d}.mid" for i in range(200)]
    before = {r: split_of(r, 0.1, 0.1) for r in rels}
    more = rels + [f"style/new{i:03d}.mid" for i in range(100)]
    after = {r: split_of(r, 0.1, 0.1) for r in more}
    assert all(after[r] == before[r] for r in rels)
    counts = {s: list(before.values()).count(s) for s in ("train", "val", "test")}
    assert 10 <= counts["val"] <= 32 and 10 <= counts["test"] <= 32


def test_a_dozen_files_still_get_train_and_val(tmp_path):
    rels = [f"a/{i}.mid" for i in range(12)]
    splits = assign_splits(rels, 0.1, 0.1)
    assert {"train", "val", "test"} <= set(splits.values())


def test_bad_files_are_skipped_and_reported(corpus_copy, tmp_path):
    (corpus_copy / "fiddle" / "garbage.mid").write_bytes(b"not midi at all")
    (corpus_copy / "fiddle" / "empty.mid").write_bytes(b"")
    make_midi(corpus_copy / "chorale" / "drums.mid", [(36, 0, 1)], channel=9)
    corpus = build_token_cache(corpus_copy, SEED, tmp_path / "cache")
    reasons = {s["rel"]: s["reason"] for s in corpus.skipped}
    assert set(reasons) == {"fiddle/garbage.mid", "fiddle/empty.mid", "chorale/drums.mid"}
    assert "drum" in reasons["chorale/drums.mid"]
    report = (corpus.cache_dir / "skipped.csv").read_text()
    assert "fiddle/garbage.mid" in report and "not a readable MIDI file" in report


def test_missing_and_empty_corpus_are_clear_errors(tmp_path):
    with pytest.raises(MidigenError, match="does not exist"):
        list_corpus(tmp_path / "nope")
    (tmp_path / "empty" / "style").mkdir(parents=True)
    with pytest.raises(MidigenError, match="no MIDI files"):
        list_corpus(tmp_path / "empty")
    (tmp_path / "bad" / "style").mkdir(parents=True)
    (tmp_path / "bad" / "style" / "x.mid").write_bytes(b"junk")
    with pytest.raises(MidigenError, match="no usable MIDI file"):
        build_token_cache(tmp_path / "bad", SEED, tmp_path / "cache")


def _module(corpus, tmp_path, **kw):
    args = dict(root=str(corpus), cache_dir=str(tmp_path / "cache"), tokenizer=SEED.to_dict(), seq_len=64,
                batch_size=4)
    args.update(kw)
    dm = EventDataModule(**args)
    dm.prepare_data()
    dm.setup()
    return dm


def test_seed_scheme_is_first_220_events_padded(corpus_dir, tmp_path):
    dm = _module(corpus_dir, tmp_path, scheme="seed", seq_len=219)
    corpus = dm.corpus
    f = dm.train_set.files[0]
    inputs, targets, style, positions = dm.train_set[0]
    first = np.asarray(corpus.tokens[f["offset"]: f["offset"] + min(220, f["length"])])
    assert inputs.shape == (219,) and targets.shape == (219,)
    assert np.array_equal(inputs.numpy()[: len(first) - 1], first[:-1])
    assert np.array_equal(targets.numpy()[: len(first) - 1], first[1:])
    assert (targets.numpy()[len(first) - 1:] == PAD_ID).all()
    assert dm.styles[int(style)] == f["style"]
    assert not positions.any()  # seed-mode steps are milliseconds: no beats to count


def test_windows_cover_whole_files_and_change_each_epoch(corpus_dir, tmp_path):
    dm = _module(corpus_dir, tmp_path, scheme="windows", augment={"transpose": 0, "stretch": 0.0})
    ds = dm.train_set
    starts0 = [tuple(ds[i][0][:5].tolist()) for i in range(len(ds))]
    assert [tuple(ds[i][0][:5].tolist()) for i in range(len(ds))] == starts0  # deterministic
    ds.epoch = 1
    assert [tuple(ds[i][0][:5].tolist()) for i in range(len(ds))] != starts0
    # windows come from beyond the first 220 events (the seed never saw those)
    corpus = dm.corpus
    long_file = max(ds.files, key=lambda f: f["length"])
    assert long_file["length"] > 400
    tail = np.asarray(corpus.tokens[long_file["offset"] + 300: long_file["offset"] + long_file["length"]])
    seen_tail = False
    for epoch in range(4):
        ds.epoch = epoch
        for i in range(len(ds)):
            window = ds[i][0].numpy()
            seen_tail |= any(np.array_equal(window[:8], tail[j:j + 8]) for j in range(0, len(tail) - 8, 1))
        if seen_tail:
            break
    assert seen_tail


def test_augmentation_keeps_ids_in_range(corpus_dir, tmp_path):
    dm = _module(corpus_dir, tmp_path, scheme="windows", augment={"transpose": 6, "stretch": 0.1})
    ds = dm.train_set
    for epoch in range(3):
        ds.epoch = epoch
        for i in range(len(ds)):
            inputs, targets, *_ = ds[i]
            assert inputs.min() >= 0 and inputs.max() < SEED.vocab_size
            assert targets.min() >= 0 and targets.max() < SEED.vocab_size


def test_transposition_never_leaves_midi_range(corpus_dir, tmp_path):
    dm = _module(corpus_dir, tmp_path)
    ds = WindowSequences(dm.corpus, dm.corpus.split("train"), 64, dm.style_index, Augmentation(transpose=60))
    for i in range(len(ds)):
        ids = ds[i][0].numpy()
        notes = ids[(ids >= 1) & (ids < 257)]
        assert notes.min() >= 1 and notes.max() <= 256


def test_val_and_test_tile_every_event_once(corpus_dir, tmp_path):
    dm = _module(corpus_dir, tmp_path)
    val_files = dm.corpus.split("val")
    assert val_files, "a 16-file corpus still has a validation split"
    targets = sum(int((dm.val_set[i][1] != PAD_ID).sum()) for i in range(len(dm.val_set)))
    assert targets == sum(f["length"] - 1 for f in val_files)


def test_bad_options_fail_before_training(corpus_dir, tmp_path):
    with pytest.raises(MidigenError, match="seq_len"):
        _module(corpus_dir, tmp_path, seq_len=1)
    with pytest.raises(MidigenError, match="scheme"):
        _module(corpus_dir, tmp_path, scheme="bogus")
    with pytest.raises(MidigenError, match="styles"):
        _module(corpus_dir, tmp_path, styles=["jazz"])


def test_note_counts_are_the_music_not_the_vocabulary(tmp_path):
    """NLL per note compares models over different tokenizers: both must count the same notes."""
    import mido

    from conftest import CORPUS

    seed = build_token_cache(CORPUS, SEED, tmp_path / "cache")
    beat = build_token_cache(CORPUS, EventParams.beat(), tmp_path / "cache")
    for split in ("train", "val", "test"):
        assert seed.notes(split) == beat.notes(split) > 0
        assert seed.summary()[f"{split}_notes"] == seed.notes(split)
    # and they are the files' notes, read with mido (these files have no unison duplicates)
    expected = 0
    for f in seed.split("val"):
        midi = mido.MidiFile(CORPUS / f["rel"])
        expected += sum(m.type == "note_on" and m.velocity > 0 for t in midi.tracks for m in t)
    assert seed.notes("val") == expected


def test_nll_per_note_rescales_the_per_event_figure():
    from types import SimpleNamespace

    from midigen.train.run import per_note

    corpus = SimpleNamespace(summary=lambda: {"val_files": 2, "val_tokens": 302, "val_notes": 100,
                                              "test_files": 1, "test_tokens": 101, "test_notes": 0})
    out = per_note(corpus, {"val/best_nll": 1.5, "test/nll": 2.0})
    # 300 predicted events (each file's first is not predicted) at 1.5 nats over 100 notes
    assert out == {"val/nll_per_note": pytest.approx(4.5)}  # no notes in test: no figure, not a division by 0


# --- bar positions (a position-aware model's input) -----------------------------------------------

BEAT = EventParams.beat()  # 12 steps a beat


def with_time_signatures(path, signatures: list[tuple[float, int, int]]):
    """Add time signatures [(beat, numerator, denominator)] to a one-track file written by make_midi."""
    import mido

    midi = mido.MidiFile(str(path))
    timed, tick = [], 0
    for msg in midi.tracks[0]:
        tick += msg.time
        if msg.type != "end_of_track":
            timed.append((tick, 1, msg))
    timed += [(round(beat * midi.ticks_per_beat), 0, mido.MetaMessage("time_signature", numerator=num, denominator=den))
              for beat, num, den in signatures]
    timed.sort(key=lambda entry: entry[:2])  # a signature before the notes at its tick
    before = [0] + [t for t, _, _ in timed]
    midi.tracks[0][:] = [msg.copy(time=t - b) for (t, _, msg), b in zip(timed, before)]
    midi.save(str(path))
    return path


def onset_beats(corpus, f: dict) -> list[int]:
    """The beat within its bar (0 = the downbeat) of each NOTE_ON of a cached file."""
    ids = np.asarray(corpus.tokens[f["offset"]: f["offset"] + f["length"]])
    at = np.asarray(corpus.positions[f["offset"]: f["offset"] + f["length"]])
    on = (ids >= NOTE_ON_OFFSET) & (ids < NOTE_OFF_OFFSET)
    assert (at[on] % BEAT.grid == 0).all()  # every onset of these files is on a beat
    return (at[on] // BEAT.grid).tolist()


def test_bar_positions_follow_each_files_time_signatures(tmp_path):
    quarters = [(60 + b, b, b + 1) for b in range(10)]
    root = tmp_path / "corpus" / "style"
    root.mkdir(parents=True)
    make_midi(root / "plain.mid", quarters)  # no signature: 4/4
    with_time_signatures(make_midi(root / "waltz.mid", quarters), [(0, 3, 4)])
    with_time_signatures(make_midi(root / "jig.mid", quarters), [(0, 6, 8)])  # 6/8: a bar of 3 quarter beats
    with_time_signatures(make_midi(root / "cut.mid", quarters), [(0, 2, 2)])  # 2/2: 4 quarter beats
    # the corpus exporter's pickup: a 1/4 bar of its own, then the piece's 4/4 (and here a change to 3/4)
    with_time_signatures(make_midi(root / "pickup.mid", quarters), [(0, 1, 4), (1, 4, 4), (5, 3, 4)])
    corpus = build_token_cache(tmp_path / "corpus", BEAT, tmp_path / "cache", val_fraction=0, test_fraction=0)
    beats = {f["rel"].split("/")[-1]: onset_beats(corpus, f) for f in corpus.files}
    assert beats == {"plain.mid": [0, 1, 2, 3, 0, 1, 2, 3, 0, 1], "waltz.mid": [0, 1, 2, 0, 1, 2, 0, 1, 2, 0],
                     "jig.mid": [0, 1, 2, 0, 1, 2, 0, 1, 2, 0], "cut.mid": [0, 1, 2, 3, 0, 1, 2, 3, 0, 1],
                     "pickup.mid": [0, 0, 1, 2, 3, 0, 1, 2, 0, 1]}
    # a warm cache gives the same positions; seed-mode tokens have none
    again = build_token_cache(tmp_path / "corpus", BEAT, tmp_path / "cache", val_fraction=0, test_fraction=0)
    assert again.cache_dir == corpus.cache_dir and np.array_equal(again.positions, corpus.positions)
    assert build_token_cache(tmp_path / "corpus", SEED, tmp_path / "cache").positions is None


def test_window_positions_count_from_the_file_start_not_the_window(tmp_path):
    """A window from the middle of a 3/4 file reads the positions the whole file has there; a
    transposition keeps them, a time stretch recounts them from the stretched shifts."""
    root = tmp_path / "corpus" / "style"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    notes, beat = [], 0.0
    for pitch in range(24, 124):  # a pitch per note: a window's events say where in the file it is
        length = float(rng.choice([0.25, 0.5, 0.75, 1.0, 1.5]))
        notes.append((pitch, beat, beat + length))
        beat += length + float(rng.choice([0.0, 0.25, 1.0]))
    with_time_signatures(make_midi(root / "waltz.mid", notes), [(0, 3, 4)])
    args = dict(root=str(tmp_path / "corpus"), cache_dir=str(tmp_path / "cache"), tokenizer=BEAT.to_dict(), seq_len=24,
                batch_size=4, val_fraction=0.0, test_fraction=0.0, samples_per_epoch=40)
    plain = EventDataModule(**args, augment={"transpose": 0, "stretch": 0.0})
    plain.prepare_data()
    plain.setup()
    f = plain.corpus.files[0]
    ids = np.asarray(plain.corpus.tokens[f["offset"]: f["offset"] + f["length"]], dtype=np.int64)
    whole = bar_positions(ids, BEAT, 3 * BEAT.grid)  # the file's positions, counted from its start
    assert np.array_equal(np.asarray(plain.corpus.positions[f["offset"]: f["offset"] + f["length"]]), whole)
    starts = []
    for i in range(len(plain.train_set)):
        inputs, _, _, positions = (t.numpy() for t in plain.train_set[i])
        start = next(s for s in range(len(ids)) if np.array_equal(ids[s: s + len(inputs)], inputs))
        starts.append(start)
        assert np.array_equal(positions, whole[start: start + len(inputs)])
    assert max(starts) > 100  # windows from deep inside the file
    transposed = EventDataModule(**args, augment={"transpose": 6, "stretch": 0.0})
    transposed.prepare_data()
    transposed.setup()
    moved = 0
    for i in range(len(plain.train_set)):  # the same windows, moved in pitch: the same positions
        window, same = transposed.train_set[i], plain.train_set[i]
        moved += not np.array_equal(window[0], same[0])
        assert np.array_equal(window[3], same[3])
    assert moved > len(plain.train_set) // 2
    stretched = EventDataModule(**args, augment={"transpose": 0, "stretch": 0.2})
    stretched.prepare_data()
    stretched.setup()
    for i in range(len(stretched.train_set)):
        inputs, _, _, positions = (t.numpy() for t in stretched.train_set[i])
        shift = np.where(inputs >= TIME_SHIFT_OFFSET, inputs - TIME_SHIFT_OFFSET + 1, 0)
        assert np.array_equal((positions[1:] - positions[:-1]) % 36, shift[1:] % 36)  # counted from its shifts
