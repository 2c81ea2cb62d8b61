"""Musical metrics of MIDI files, and how a folder of them compares with real music.

Each metric answers a question a producer asks of a generated idea. All times are MIDI
ticks at the file's ticks per beat (tempo is ignored: a beat is a quarter note), bars are
4/4 (midigen writes 4/4), and pitches are MIDI note numbers (60 = C4).

    in_scale           share of notes (by count) in the best-fitting major or natural-minor scale
    key                that scale, e.g. "F# minor" (see `key_and_in_scale` for the tie-break)
    on_grid            share of note onsets AND offsets within ticks_per_beat/48 of a 16th-note
                       or an 8th-triplet grid line (the grid starts at tick 0)
    stuck_ratio        share of the melody spent repeating one short pattern back to back
                       ("gets stuck on notes"; see `stuck_ratio`)
    pitch_range        highest minus lowest pitch, semitones
    polyphony          notes sounding on average while anything sounds (time-weighted, silence
                       excluded): 1.0 for a melody, 3.0 for block triads
    note_density       notes per beat of the file's length
    n_notes            notes
    duration_beats     the file's length in beats: its end-of-track (arrays: `end_tick`, else last note-off)
    hanging_notes      note-ons never closed by a note-off in their track (must be 0 for our outputs)
    zero_length_notes  notes whose note-off is not after their note-on
    ends_on_bar        the file's end lies on a 4/4 bar line ("ends abruptly")

Notes come from symusic (the reader the training data goes through): all non-drum tracks
merged. `hanging_notes` and the file's end come from mido, which reads the raw messages.
Every metric but `key` is always a number: an idea without notes scores 0.0 on every
share and on polyphony (no NaN, so means and JSON stay valid); its `key` is None.

`distribution_overlap` and `compare_folders` measure how close generated and real music
are, per feature, as the overlapping area of the two features' estimated densities
(Yang & Lerch 2018, "On the evaluation of generative models in music"; they compare
distributions of pairwise distances, here the feature values themselves are compared).

This module is on the producer path: numpy, mido and symusic only (no torch, Lightning,
Hydra or MLflow).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from midigen.errors import MidigenError, MidiReadError

MIDI_SUFFIXES = (".mid", ".midi")
DRUM_CHANNEL = 9  # MIDI channel 10, counted from 0
BEATS_PER_BAR = 4
GRID_TOLERANCE_BEATS = 1 / 48  # 20 ticks at 960 ticks per beat
MELODY_ONSET_TOLERANCE_BEATS = 1 / 16  # onsets closer than this are one melody onset
MAX_PATTERN = 4  # stuck_ratio looks at patterns of 1..4 pitches

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor
# Krumhansl & Kessler (1982) key profiles, tonic first: only used to tell a major key from
# its relative minor (same notes) and similar ties.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

METRIC_KEYS = ("n_notes", "duration_beats", "key", "in_scale", "on_grid", "stuck_ratio", "pitch_range",
               "polyphony", "note_density", "hanging_notes", "zero_length_notes", "ends_on_bar")
# Features whose generated vs reference distributions are compared. Length (n_notes,
# duration_beats) is the producer's choice, and defects (hanging notes) are not style.
OVERLAP_FEATURES = ("in_scale", "on_grid", "stuck_ratio", "pitch_range", "polyphony", "note_density")


# --- metrics of notes ---------------------------------------------------------------------


def note_arrays(on_ticks, off_ticks, pitches, ticks_per_beat: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Notes as three int64 arrays (ticks rounded to whole ticks) and ticks per beat as a float;
    ValueError when the arrays differ in length or ticks_per_beat is not positive."""
    on = np.rint(np.asarray(on_ticks, dtype=np.float64)).astype(np.int64).ravel()
    off = np.rint(np.asarray(off_ticks, dtype=np.float64)).astype(np.int64).ravel()
    pitch = np.asarray(pitches, dtype=np.int64).ravel()
    if not on.size == off.size == pitch.size:
        raise ValueError(f"{on.size} onsets, {off.size} offsets and {pitch.size} pitches: give one of each per note")
    tpb = float(ticks_per_beat)
    if not tpb > 0:
        raise ValueError(f"ticks_per_beat={ticks_per_beat}: must be positive")
    return on, off, pitch, tpb


def note_metrics(on_ticks, off_ticks, pitches, ticks_per_beat: float, end_tick: int | None = None) -> dict:
    """The metrics (keys in METRIC_KEYS, see the module docstring) of notes held in memory.

    `on_ticks`, `off_ticks`: note starts and ends in ticks; `pitches`: MIDI note numbers;
    `end_tick`: where the clip ends (default: the last note-off). Notes can be in any
    order and overlap. Arrays cannot leave a note open, so `hanging_notes` here counts the
    notes whose off tick is not after their on tick (a MIDI writer drops such a note or
    leaves it hanging); they are also `zero_length_notes`.
    """
    on, off, pitch, tpb = note_arrays(on_ticks, off_ticks, pitches, ticks_per_beat)
    zero_length = int(np.count_nonzero(off <= on))
    if end_tick is None:
        end_tick = int(max(on.max(), off.max())) if on.size else 0
    metrics = _timing_and_pitch_metrics(on, off, pitch, tpb, end_tick)
    metrics["hanging_notes"] = zero_length
    metrics["zero_length_notes"] = zero_length
    return {k: metrics[k] for k in METRIC_KEYS}


def _timing_and_pitch_metrics(on, off, pitch, tpb: float, end_tick: int) -> dict:
    n = int(on.size)
    duration_beats = max(float(end_tick), 0.0) / tpb
    key, in_scale = key_and_in_scale(pitch, np.maximum(off - on, 0))
    grid_share, sounding = on_grid(np.concatenate([on, off]), tpb), polyphony(on, off)
    return {
        "n_notes": n,
        "duration_beats": duration_beats,
        "key": key,
        "in_scale": 0.0 if in_scale is None else in_scale,
        "on_grid": 0.0 if grid_share is None else grid_share,
        "stuck_ratio": stuck_ratio(on, pitch, tpb),
        "pitch_range": int(pitch.max() - pitch.min()) if n else 0,
        "polyphony": 0.0 if sounding is None else sounding,
        "note_density": n / duration_beats if duration_beats > 0 else 0.0,
        "ends_on_bar": bool(end_tick > 0 and _grid_distance(end_tick, BEATS_PER_BAR * tpb) <= _tolerance(tpb)),
    }


def key_and_in_scale(pitches, durations=None) -> tuple[str | None, float | None]:
    """The best-fitting major or natural-minor key, and the share of notes in its scale.

    All 24 keys are tried; the share counts notes (each note weighs 1, whatever its length).
    A major key and its relative minor hold the same notes, so among the keys with the
    highest share, the one whose Krumhansl-Kessler profile correlates best with the
    duration-weighted pitch-class histogram (`durations` in ticks; default equal) wins.
    Returns (None, None) for no notes.
    """
    pc = np.asarray(pitches, dtype=np.int64).ravel() % 12
    if pc.size == 0:
        return None, None
    counts = np.bincount(pc, minlength=12).astype(np.float64)
    weights = None if durations is None else np.maximum(np.asarray(durations, dtype=np.float64).ravel(), 1.0)
    histogram = np.bincount(pc, weights=weights, minlength=12)
    best_share, best_corr, best_name = -1.0, -np.inf, None
    for mode, scale, profile in (("major", MAJOR_SCALE, MAJOR_PROFILE), ("minor", MINOR_SCALE, MINOR_PROFILE)):
        for tonic in range(12):
            share = counts[[(tonic + step) % 12 for step in scale]].sum() / pc.size
            corr = _correlation(histogram, np.roll(profile, tonic))
            if share > best_share + 1e-12 or (abs(share - best_share) <= 1e-12 and corr > best_corr):
                best_share, best_corr, best_name = share, corr, f"{NOTE_NAMES[tonic]} {mode}"
    return best_name, float(best_share)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def on_grid(ticks, ticks_per_beat: float) -> float | None:
    """Share of times (ticks) within ticks_per_beat/48 of a 16th-note or 8th-triplet grid line.

    The grids start at tick 0 (a file with a pickup that is not a whole 16th scores low).
    None for no times.
    """
    ticks = np.asarray(ticks, dtype=np.float64).ravel()
    if ticks.size == 0:
        return None
    tpb = float(ticks_per_beat)
    distance = np.minimum(_grid_distance(ticks, tpb / 4), _grid_distance(ticks, tpb / 3))
    return float(np.mean(distance <= _tolerance(tpb)))


def _grid_distance(ticks, step: float):
    return np.abs(ticks - step * np.round(np.asarray(ticks, dtype=np.float64) / step))


def _tolerance(tpb: float) -> float:
    return GRID_TOLERANCE_BEATS * tpb + 1e-9


def melody(on_ticks, pitches, ticks_per_beat: float) -> np.ndarray:
    """The melody line's pitches in time order: the highest pitch at each distinct onset.

    Onsets closer than 1/16 beat to the previous one join its onset (a rolled chord is one
    onset); the same skyline `midigen.evaluation.originality` matches passages on.
    """
    on = np.asarray(on_ticks, dtype=np.int64).ravel()
    pitch = np.asarray(pitches, dtype=np.int64).ravel()
    if on.size == 0:
        return pitch
    order = np.argsort(on, kind="stable")
    on, pitch = on[order], pitch[order]
    first = np.flatnonzero(np.concatenate([[True], np.diff(on) >= MELODY_ONSET_TOLERANCE_BEATS * ticks_per_beat]))
    return np.maximum.reduceat(pitch, first)


def stuck_ratio(on_ticks, pitches, ticks_per_beat: float) -> float:
    """How much of the melody is one short pattern repeated back to back, 0..1.

    The melody is `melody(...)`, N pitches. A repeat is a stretch of at least two
    consecutive copies of a pattern of L = 1..4 pitches (C C C; C D C D C D), counting
    whole copies only. Patterns that are rotations of each other (C-D entered at C, D-C
    entered at D) count as one pattern. For each pattern, its share is the number of
    melody notes inside any of its repeats divided by N; stuck_ratio is the largest share.

    One note throughout: 1.0. A trill throughout: 1.0. A scale up and down: 0.0 (nothing
    is played twice in a row). A tune with a few repeated notes: its longest-held habit,
    typically below 0.3. Fewer than 2 melody notes: 0.0.
    """
    seq = melody(on_ticks, pitches, ticks_per_beat)
    n = int(seq.size)
    if n < 2:
        return 0.0
    best = 0
    for length in range(1, min(MAX_PATTERN, n // 2) + 1):
        same = seq[length:] == seq[:-length]  # same[i]: note i is repeated `length` notes later
        edges = np.diff(np.concatenate([[0], same.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        covered: dict[tuple, list[tuple[int, int]]] = {}
        for start, end in zip(starts.tolist(), ends.tolist()):
            copies = (end - start + length) // length  # seq[start:end+length] has period `length`
            if copies < 2:
                continue
            pattern = tuple(seq[start:start + length].tolist())
            canonical = min(pattern[i:] + pattern[:i] for i in range(length))
            covered.setdefault(canonical, []).append((start, start + copies * length))
        for spans in covered.values():
            best = max(best, _union_length(spans))
    return best / n


def _union_length(spans: list[tuple[int, int]]) -> int:
    total, reach = 0, -1
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def polyphony(on_ticks, off_ticks) -> float | None:
    """Mean number of notes sounding, averaged over the time at least one note sounds.

    Time-weighted: the summed note lengths divided by the length of their union. 1.0 for a
    melody, 3.0 for block triads; None if no note has a positive length.
    """
    on = np.asarray(on_ticks, dtype=np.int64).ravel()
    off = np.asarray(off_ticks, dtype=np.int64).ravel()
    keep = off > on
    on, off = on[keep], off[keep]
    if on.size == 0:
        return None
    order = np.argsort(on, kind="stable")
    on, off = on[order], off[order]
    reach = np.maximum.accumulate(off)
    first = np.flatnonzero(np.concatenate([[True], on[1:] > reach[:-1]]))
    union = int((np.maximum.reduceat(off, first) - on[first]).sum())
    return float((off - on).sum() / union)


# --- metrics of files ---------------------------------------------------------------------


def read_file_notes(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A MIDI file's non-drum notes, all tracks merged: (on_ticks, off_ticks, pitches, ticks_per_beat).

    Read with symusic, like the training data; a note never closed is not a note here (see
    `raw_file_facts`). Raises MidiReadError for a missing, empty or unparseable file.
    """
    from symusic import Score

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise MidiReadError(f"{path.name}: not a readable MIDI file (empty: 0 bytes)")
        score = Score(str(path))
    except OSError as exc:
        raise MidiReadError(f"{path.name}: unreadable ({exc.strerror or exc})") from None
    except MidiReadError:
        raise
    except Exception as exc:  # symusic raises plain RuntimeError/ValueError on bad bytes
        raise MidiReadError(f"{path.name}: not a readable MIDI file ({_first_line(exc)})") from None
    on, off, pitch = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for track in score.tracks:
        if track.is_drum or track.note_num() == 0:
            continue
        notes = track.notes.numpy()
        start = notes["time"].astype(np.int64)
        on.append(start)
        off.append(start + notes["duration"].astype(np.int64))
        pitch.append(notes["pitch"].astype(np.int64))  # int8 in symusic: widen before any arithmetic
    return np.concatenate(on), np.concatenate(off), np.concatenate(pitch), max(int(score.ticks_per_quarter), 1)


def raw_file_facts(path: str | Path) -> dict:
    """What only the raw messages tell, read with mido: {"hanging_notes", "end_tick"}.

    `hanging_notes`: note-ons (velocity > 0) left open at the end of their track; a
    note-off or a velocity-0 note-on closes the oldest open note of its channel and pitch.
    The drum channel (10) is not counted: one-shot drum hits often carry no note-off.
    `end_tick`: the latest end-of-track over all tracks, in ticks. MidiReadError if mido
    cannot parse the file.
    """
    import mido

    path = Path(path)
    try:
        midi = mido.MidiFile(str(path), clip=True)
    except Exception as exc:  # mido raises OSError, EOFError, ValueError, KeyError... on bad bytes
        raise MidiReadError(f"{path.name}: not a readable MIDI file ({_first_line(exc)})") from None
    hanging, end_tick = 0, 0
    for track in midi.tracks:
        now = 0
        open_notes: dict[tuple[int, int], int] = {}
        for msg in track:
            now += msg.time
            if msg.type not in ("note_on", "note_off") or msg.channel == DRUM_CHANNEL:
                continue
            key = (msg.channel, msg.note)
            if msg.type == "note_on" and msg.velocity > 0:
                open_notes[key] = open_notes.get(key, 0) + 1
            elif open_notes.get(key, 0) > 0:
                open_notes[key] -= 1
        hanging += sum(open_notes.values())
        end_tick = max(end_tick, now)
    return {"hanging_notes": hanging, "end_tick": end_tick}


def file_metrics(path: str | Path) -> dict:
    """The metrics (keys in METRIC_KEYS, see the module docstring) of one MIDI file.

    Notes are the file's non-drum notes (symusic); `hanging_notes` and the file's end
    (end-of-track, which sets `duration_beats`, `note_density` and `ends_on_bar`) come
    from the raw messages (mido). A file without notes is measured too (n_notes 0, the
    shares 0.0, key None). Raises MidiReadError for a file that cannot be read.
    """
    on, off, pitch, tpb = read_file_notes(path)
    raw = raw_file_facts(path)
    end_tick = max(raw["end_tick"], int(off.max()) if off.size else 0)
    metrics = _timing_and_pitch_metrics(on, off, pitch, float(tpb), end_tick)
    metrics["hanging_notes"] = raw["hanging_notes"]
    metrics["zero_length_notes"] = int(np.count_nonzero(off <= on))
    return {k: metrics[k] for k in METRIC_KEYS}


# --- folders ------------------------------------------------------------------------------


def midi_files(path: str | Path) -> list[Path]:
    """The *.mid / *.midi files (any case) under a folder, recursively and sorted; a file is itself.

    MidigenError for a missing path or a folder without MIDI files.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MidigenError(f"{path}: no such folder; give a folder of MIDI files (.mid, .midi)")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)
    if not files:
        raise MidigenError(f"{path}: no MIDI files (.mid, .midi) in this folder or below it")
    return files


def folder_metrics(path: str | Path) -> dict:
    """`file_metrics` of every MIDI file under a folder (see `midi_files`), and their means.

    Returns {"files": {relative path: metrics}, "mean": {metric: mean over files},
    "skipped": {relative path: reason}}. Unreadable files are skipped, never fatal; a file
    without notes is measured (it pulls the means down, as an empty idea should).
    `ends_on_bar`'s mean is the share of files ending on a bar; `key` has no mean.
    MidigenError for a missing folder or one without MIDI files.
    """
    root = Path(path).expanduser()
    files, skipped = {}, {}
    for file in midi_files(root):
        name = file.relative_to(root).as_posix() if root.is_dir() else file.name
        try:
            files[name] = file_metrics(file)
        except MidiReadError as exc:
            skipped[name] = str(exc)
    return {"files": files, "mean": mean_metrics(files.values()), "skipped": skipped}


def mean_metrics(metrics) -> dict:
    """Mean of each numeric metric over a collection of metrics dicts (None values left out)."""
    metrics = list(metrics)
    mean = {}
    for key in METRIC_KEYS:
        values = _values(metrics, key)
        if key != "key":
            mean[key] = float(np.mean(values)) if values.size else None
    return mean


def _values(metrics, key: str) -> np.ndarray:
    values = [m[key] for m in metrics if m.get(key) is not None and not isinstance(m.get(key), str)]
    return np.asarray(values, dtype=np.float64)


# --- comparing distributions --------------------------------------------------------------


def distribution_overlap(a_values, b_values) -> float:
    """Overlapping area of two samples' densities, 0 (disjoint) .. 1 (the same distribution).

    Each sample's density is a Gaussian kernel density estimate with Scott's bandwidth
    (std * n^-1/5, as scipy.stats.gaussian_kde). A sample with no spread (every reference
    file exactly on the grid) borrows the other sample's bandwidth, so it is compared at the
    resolution the other is known to; if neither has spread the kernels are narrow (1e-3 of
    the pooled range, or of 1), and equal values overlap fully, different ones not at all.
    The area under the minimum of the two densities is integrated numerically. ValueError
    if either sample is empty; non-finite values are left out.
    """
    a = np.asarray(a_values, dtype=np.float64).ravel()
    b = np.asarray(b_values, dtype=np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        raise ValueError(f"distribution_overlap needs values on both sides (got {a.size} and {b.size})")
    pooled = np.concatenate([a, b])
    floor = 1e-3 * (float(np.ptp(pooled)) or 1.0)
    width_a, width_b = _scott_bandwidth(a), _scott_bandwidth(b)
    width_a, width_b = max(width_a or width_b, floor), max(width_b or width_a, floor)
    lo = float(pooled.min()) - 5 * max(width_a, width_b)
    hi = float(pooled.max()) + 5 * max(width_a, width_b)
    points = int(min(max(2049, 8 * (hi - lo) / min(width_a, width_b)), 200_001))
    grid = np.linspace(lo, hi, points)
    density = np.minimum(_kde(a, width_a, grid), _kde(b, width_b, grid))
    return float(np.clip(np.sum((density[1:] + density[:-1]) / 2) * (grid[1] - grid[0]), 0.0, 1.0))


def _scott_bandwidth(values: np.ndarray) -> float:
    if values.size < 2:
        return 0.0
    return float(np.std(values, ddof=1)) * values.size ** (-1 / 5)


def _kde(values: np.ndarray, width: float, grid: np.ndarray) -> np.ndarray:
    density = np.zeros_like(grid)
    chunks = math.ceil(values.size * grid.size / 2_000_000)  # bounds the (chunk, grid) array at ~16 MB
    for chunk in np.array_split(values, chunks):
        z = (grid[None, :] - chunk[:, None]) / width  # (chunk, grid)
        density += np.exp(-0.5 * z * z).sum(axis=0)
    return density / (values.size * width * math.sqrt(2 * math.pi))


def compare_folders(gen_dir: str | Path, ref_dir: str | Path) -> dict:
    """{feature: distribution_overlap of generated vs reference files} for OVERLAP_FEATURES.

    Files without notes are left out of both distributions (a drum-only reference file says
    nothing about melody); a feature without values on one side maps to None.
    """
    return overlaps(folder_metrics(gen_dir)["files"].values(), folder_metrics(ref_dir)["files"].values())


def overlaps(gen_metrics, ref_metrics) -> dict:
    """`compare_folders` for metrics already computed (two collections of metrics dicts)."""
    gen_metrics = [m for m in gen_metrics if m["n_notes"] > 0]
    ref_metrics = [m for m in ref_metrics if m["n_notes"] > 0]
    result = {}
    for feature in OVERLAP_FEATURES:
        gen, ref = _values(gen_metrics, feature), _values(ref_metrics, feature)
        result[feature] = distribution_overlap(gen, ref) if gen.size and ref.size else None
    return result


# --- the `midigen evaluate` command --------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
