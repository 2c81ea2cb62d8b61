"""The originality index: training songs played back are caught, new melodies are not."""

from __future__ import annotations

import mido
import numpy as np
import pytest

from midigen.errors import MidigenError, MidiReadError
from midigen.evaluation.originality import (
    OriginalityIndex,
    copy_report,
    melody_intervals,
    passage_hashes,
    read_onsets,
    skyline,
)

N = 8


def write_midi(path, voices, tpb=480, bpm=120.0):
    """voices: list of (channel, [(on_beats, dur_beats, pitch), ...]); one track per voice."""
    midi = mido.MidiFile(type=1, ticks_per_beat=tpb)
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0)]))
    for channel, notes in voices:
        events = []
        for on, dur, pitch in notes:
            events.append((round(on * tpb), 1, pitch))
            events.append((round((on + dur) * tpb), 0, pitch))
        track, now = mido.MidiTrack(), 0
        for tick, kind, pitch in sorted(events):
            msg = "note_on" if kind else "note_off"
            track.append(mido.Message(msg, note=int(pitch), velocity=80 if kind else 0, channel=channel,
                                      time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(str(path))
    return path


def random_melody(seed, count=64, low=55, high=80):
    """(onsets in beats, pitches): random pitches on a random rhythm of common note values."""
    rng = np.random.default_rng(seed)
    onsets = np.concatenate([[0.0], np.cumsum(rng.choice([0.25, 0.5, 1.0, 1.5], size=count - 1))])
    return onsets, rng.integers(low, high, size=count)


# A training song: melody (varied rhythm) over chords, with a drum track pitched above it.
TUNE_BEATS = np.array([0, 1, 1.5, 2, 3, 4, 4.5, 5, 5.75, 6, 7, 8, 9, 9.5, 10, 10.5, 11, 12, 13.5, 14, 16,
                       17, 17.5, 18, 19, 20])
TUNE_PITCHES = np.array([67, 69, 71, 72, 74, 76, 74, 72, 71, 69, 67, 71, 74, 72, 76, 79, 77, 76, 74, 72,
                         71, 72, 74, 71, 69, 67])


def tune_voices(shift=0, stretch=1.0):
    melody = [(b * stretch, 0.5 * stretch, p + shift) for b, p in zip(TUNE_BEATS, TUNE_PITCHES)]
    chords = [(bar * stretch, 4 * stretch, root + shift + k) for bar in range(0, 20, 4)
              for root in (48,) for k in (0, 4, 7)]
    return melody, chords


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Training files: the tune (with chords and drums) and two Bach chorales from music21."""
    music21 = pytest.importorskip("music21")
    root = tmp_path_factory.mktemp("corpus")
    melody, chords = tune_voices()
    drums = [(b / 2, 0.25, 81) for b in range(42)]  # hi-hat (pitch 81) on every half beat, above the melody
    paths = {"tune.mid": write_midi(root / "tune.mid", [(0, melody), (1, chords), (9, drums)])}
    for work in ("bwv66.6", "bwv7.7"):
        path = root / f"{work}.mid"
        music21.corpus.parse(f"bach/{work}").write("midi", fp=str(path))
        paths[path.name] = path
    return paths


@pytest.fixture(scope="module")
def index(corpus):
    return OriginalityIndex.from_files(list(corpus.values()), names=list(corpus))


def test_melody_representation_contract():
    # onsets (beats): a chord at 0 and a rolled chord at 4 (second note 1/32 beat late) are one onset each
    beats = [0, 0, 1, 2, 4, 4 + 1 / 32, 4.5, 5, 6.5, 7, 8, 12, 12.75]
    pitches = [60, 64, 62, 64, 55, 67, 65, 64, 60, 62, 67, 72, 71]
    on = np.rint(np.array(beats) * 480).astype(int)
    sky_on, sky_pitch = skyline(on, pitches, 480)
    assert (sky_on / 480).tolist() == [0, 1, 2, 4, 4.5, 5, 6.5, 7, 8, 12, 12.75]
    assert sky_pitch.tolist() == [64, 62, 64, 67, 65, 64, 60, 62, 67, 72, 71]
    steps, rhythm = melody_intervals(on, pitches, 480)
    assert steps.tolist() == [-2, 2, 3, -2, -1, -4, 2, 5, 5, -1]
    # onset intervals 1, 1, 2, .5, .5, 1.5, .5, 1, 4, .75 -> ratios 1, 2, 1/4, 1, 3, 1/3, 2, 4, 3/16
    assert rhythm.tolist() == [2, 3, 0, 2, 4, 0, 3, 4, 0]


def test_passage_hashes_are_pinned():
    # Changing the representation or the hash invalidates every shipped index: bump VERSION then.
    on = np.array([0, 480, 720, 960, 1440, 1920, 2160, 2400, 2880])
    pitches = [60, 62, 64, 65, 67, 65, 64, 62, 60]
    hashes = passage_hashes(on, pitches, 480, n=8)
    assert hashes.dtype == np.uint64
    assert hashes.tolist() == [13948538456496575961, 3451823715974927187]


def test_training_file_fed_back_scores_one_and_names_its_source(index, corpus):
    for name, path in corpus.items():
        on, pitch, tpb = read_onsets(path)
        melody_notes = skyline(on, pitch, tpb)[0].size
        check = index.check_file(path)
        assert check == {"copy_ratio": 1.0, "longest_run": melody_notes, "source": name,
                         "n_passages": melody_notes - N + 1}


def test_transposed_copy_scores_one(index, tmp_path):
    melody, _ = tune_voices(shift=5)
    check = index.check_file(write_midi(tmp_path / "up5.mid", [(0, melody)]))
    assert check["copy_ratio"] == 1.0
    assert check["source"] == "tune.mid"
    assert check["longest_run"] == len(TUNE_BEATS)


def test_copy_at_other_resolution_tempo_and_time_scale_scores_one(index, tmp_path):
    # as a melody rendered from seconds at another bpm would be: every time shrunk by 0.8
    melody, chords = tune_voices(shift=-3, stretch=0.8)
    path = write_midi(tmp_path / "fast.mid", [(2, melody), (3, chords)], tpb=960, bpm=150.0)
    check = index.check_file(path)
    assert check["copy_ratio"] == 1.0
    assert check["source"] == "tune.mid"


def test_random_melodies_score_near_zero(index):
    for seed in range(5):
        beats, pitches = random_melody(seed)
        check = index.check_notes(np.rint(beats * 480), pitches, 480)
        assert check["n_passages"] == 64 - N + 1
        assert check["copy_ratio"] < 0.1, check


def test_quotation_inside_a_new_melody_is_found_with_its_length_and_source(index, corpus):
    on, pitch, tpb = read_onsets(corpus["bwv66.6.mid"])
    quote_on, quote_pitch = skyline(on, pitch, tpb)
    quote_beats = quote_on[10:22] / tpb - quote_on[10] / tpb  # 12 chorale notes, transposed below
    before, before_pitch = random_melody(1, count=20)
    after, after_pitch = random_melody(2, count=20)
    start = before[-1] + 1.0
    beats = np.concatenate([before, start + quote_beats, start + quote_beats[-1] + 0.5 + after])
    pitches = np.concatenate([before_pitch, quote_pitch[10:22] + 3, after_pitch])
    check = index.check_notes(np.rint(beats * 480), pitches, 480)
    assert check["longest_run"] == 12
    assert check["source"] == "bwv66.6.mid"
    assert check["n_passages"] == 52 - N + 1
    assert check["copy_ratio"] == pytest.approx((12 - N + 1) / (52 - N + 1))


def test_source_is_the_file_holding_most_of_the_run():
    # "medley" (indexed first) quotes the tune's first 20 notes; "tune" holds all 26
    on = np.rint(TUNE_BEATS * 480)
    tail, tail_pitches = random_melody(6, count=30)
    medley = (np.concatenate([on[:20], on[19] + 480 + np.rint(tail * 480)]),
              np.concatenate([TUNE_PITCHES[:20], tail_pitches]), 480)
    index = OriginalityIndex.build([("medley", medley), ("tune", (on, TUNE_PITCHES, 480))])
    check = index.check_notes(on, TUNE_PITCHES, 480)
    assert check["source"] == "tune" and check["longest_run"] == len(TUNE_BEATS)
    assert index.check_notes(on[:20], TUNE_PITCHES[:20], 480)["copy_ratio"] == 1.0


def test_fewer_than_n_melody_notes_score_zero(index):
    on = np.rint(TUNE_BEATS * 480)
    assert index.check_notes(on[:N - 1], TUNE_PITCHES[:N - 1], 480) == {
        "copy_ratio": 0.0, "longest_run": 0, "source": None, "n_passages": 0}
    assert index.check_notes(on[:N], TUNE_PITCHES[:N], 480)["copy_ratio"] == 1.0
    assert index.check_notes([], [], 480)["n_passages"] == 0


def test_index_from_arrays_matches_index_from_files(index, corpus):
    by_arrays = OriginalityIndex.build((name, read_onsets(path)) for name, path in corpus.items())
    beats, pitches = random_melody(3)
    for query in [read_onsets(corpus["tune.mid"]), (np.rint(beats * 480), pitches, 480)]:
        assert by_arrays.check_notes(*query) == index.check_notes(*query)


def test_save_load_round_trip_gives_identical_results(index, corpus, tmp_path):
    path = index.save(tmp_path / "originality.npz")
    assert path.exists() and not (tmp_path / "originality.npz.npz").exists()
    with np.load(path) as data:
        assert data["hashes"].dtype == np.uint64
        assert np.all(np.diff(data["hashes"]) >= 0)
        assert data["sources"].dtype == np.int32
    loaded = OriginalityIndex.load(path)
    assert loaded.names == index.names and loaded.n == index.n
    beats, pitches = random_melody(4)
    for path in corpus.values():
        assert loaded.check_file(path) == index.check_file(path)
    random_query = (np.rint(beats * 480), pitches, 480)
    assert loaded.check_notes(*random_query) == index.check_notes(*random_query)


def test_copy_report_flags_a_planted_copy_in_a_folder(index, tmp_path):
    model = tmp_path / "model"
    index.save(model / "artifacts" / "bundle" / "originality.npz")
    ideas = tmp_path / "ideas"
    ideas.mkdir()
    melody, _ = tune_voices(shift=2)
    write_midi(ideas / "planted.mid", [(0, melody)])
    beats, pitches = random_melody(5)
    write_midi(ideas / "fresh.mid", [(0, [(b, 0.25, p) for b, p in zip(beats, pitches)])])
    (ideas / "notes.txt").write_text("not midi")

    report = copy_report(ideas, model)
    assert sorted(report["files"]) == ["fresh.mid", "planted.mid"]
    planted, fresh = report["files"]["planted.mid"], report["files"]["fresh.mid"]
    assert planted["copy_ratio"] == 1.0 and planted["source"] == "tune.mid"
    assert fresh["copy_ratio"] < 0.1
    assert report["folder"] == {"copy_ratio_mean": pytest.approx((1.0 + fresh["copy_ratio"]) / 2),
                                "copy_ratio_max": 1.0, "longest_run_max": len(TUNE_BEATS), "n_files": 2}
    # an index file given directly works the same
    assert copy_report([ideas / "planted.mid"], model / "artifacts" / "bundle" / "originality.npz")[
        "files"]["planted.mid"] == planted


def test_missing_or_broken_index_is_a_user_error(tmp_path):
    take = write_midi(tmp_path / "take.mid", [(0, [(b, 0.5, 60 + b) for b in range(10)])])
    (tmp_path / "old_model").mkdir()
    with pytest.raises(MidigenError, match=r"old_model: no originality index \(originality\.npz\); "
                                           r"retrain or pull a newer model"):
        copy_report([take], tmp_path / "old_model")
    (tmp_path / "broken.npz").write_bytes(b"not an index")
    with pytest.raises(MidigenError, match="broken.npz: not an originality index"):
        OriginalityIndex.load(tmp_path / "broken.npz")


def test_unreadable_midi_is_a_user_error(index, tmp_path):
    (tmp_path / "bad.mid").write_bytes(b"MThd garbage")
    with pytest.raises(MidiReadError, match="bad.mid"):
        index.check_file(tmp_path / "bad.mid")


def test_calibration_sets_a_mild_default_bound_from_held_out_files(corpus, tmp_path):
    index = OriginalityIndex.from_files(list(corpus.values()), names=list(corpus))
    assert index.max_copy is None  # never calibrated: generate only reports
    # held-out files that share nothing with the corpus: the bound is the floor
    fresh = []
    for k in range(9):
        onsets, pitches = random_melody(100 + k)
        fresh.append(write_midi(tmp_path / f"fresh{k}.mid", [(0, [(o, 0.25, p) for o, p in zip(onsets, pitches)])]))
    reference = index.calibrate(fresh)
    assert reference["files"] == 9 and reference["copy_ratio_mean"] < 0.1
    assert index.max_copy == pytest.approx(0.2)
    saved = OriginalityIndex.load(index.save(tmp_path / "i.npz"))
    assert saved.reference == reference and saved.max_copy == index.max_copy
    # held-out files that quote the corpus heavily raise the bound (rounded up to 0.05)
    melody, chords = tune_voices(shift=3)
    quoting = [write_midi(tmp_path / f"quote{k}.mid", [(0, melody)]) for k in range(3)]
    assert index.calibrate(fresh[:1] + quoting)["max_copy"] == pytest.approx(1.0)
