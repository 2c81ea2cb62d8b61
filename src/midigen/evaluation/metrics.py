"""Musical metrics of MIDI files, and how a folder of them compares with real music.

Each metric answers a question a producer asks of a generated idea. All times are MIDI
ticks at the file's ticks per beat (tempo is ignored: a beat is a quarter note), and pitches
are MIDI note numbers (60 = C4). Bars are 4/4 from tick 0 (midigen writes 4/4) for notes in
memory; a file's bars follow its own time signatures (see `bar_lines`), which for a file
midigen wrote is the same thing.

    in_scale           share of notes (by count) in the best-fitting major or natural-minor scale
    key                that scale, e.g. "F# minor" (see `key_and_in_scale` for the tie-break)
    on_grid            share of note onsets AND offsets within ticks_per_beat/48 of a 16th-note
                       or an 8th-triplet grid line (the grid starts at tick 0)
    on_beat            share of note onsets within ticks_per_beat/48 of a beat (a quarter
                       note counted from its bar line): a clip on the 16th grid but a 16th out of
                       phase (every onset on the "e") has on_grid 1.0 and on_beat 0.0
    stuck_ratio        share of the melody spent repeating one short pattern back to back
                       ("gets stuck on notes"; see `stuck_ratio`)
    repetition_half    how much the second half of the clip's whole bars replays the first half
                       (1.0 for AA, about 0 for two unrelated halves; see `repetition_half`)
    pitch_range        highest minus lowest pitch, semitones
    opening_distance   how far the clip opens from its own register: semitones between the
                       median pitch of the notes at its first onset and the median pitch of
                       all its notes (a chord opening in the middle of the texture: about 0; a
                       lone high note before the texture starts: large; see `opening_distance`)
    polyphony          notes sounding on average while anything sounds (time-weighted, silence
                       excluded): 1.0 for a melody, 3.0 for block triads
    note_density       notes per beat of the file's length
    n_notes            notes
    duration_beats     the file's length in beats: its end-of-track (arrays: `end_tick`, else last note-off)
    hanging_notes      note-ons never closed by a note-off in their track (must be 0 for our outputs)
    long_notes         notes held longer than LONG_NOTE_BEATS (4 beats, a 4/4 bar): a note left
                       sounding, the other kind of hanging note (must be 0 for our outputs)
    zero_length_notes  notes whose note-off is not after their note-on
    ends_on_bar        the file's end lies on a 4/4 bar line ("ends abruptly")

Notes come from `midigen.data.midi_io.read_midi` (symusic, the reader the training data goes
through): all non-drum tracks merged. `hanging_notes` and the file's end come from mido,
which reads the raw messages (`raw_file_facts`: symusic drops an unclosed note-on and does
not keep the end-of-track, so the two readers see different things on purpose).
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

from midigen.data.midi_io import BEATS_PER_BAR, DRUM_CHANNEL, MIDI_SUFFIXES, no_notes_reason, read_midi
from midigen.errors import MidigenError, MidiReadError, not_valid_midi

GRID_TOLERANCE_BEATS = 1 / 48  # 20 ticks at 960 ticks per beat
# Longer than a 4/4 bar, which is also `generate`'s default --max-note-beats: a note the
# sampler should have ended. A real whole note (exactly 4 beats) is not long.
LONG_NOTE_BEATS = 4.0
REPETITION_STEPS_PER_BEAT = 12  # repetition_half places onsets on a 1/12-beat lattice (16ths and triplets)
MAX_BARS = 1_000_000  # bar_lines stops here (a few absurd bytes can declare 1/32 bars over hours)
MELODY_ONSET_TOLERANCE_BEATS = 1 / 16  # onsets closer than this are one melody onset
MAX_PATTERN = 4  # stuck_ratio looks at patterns of 1..4 pitches

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor
# Krumhansl & Kessler (1982) key profiles, tonic first: only used to tell a major key from
# its relative minor (same notes) and similar ties.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

METRIC_KEYS = ("n_notes", "duration_beats", "key", "in_scale", "on_grid", "on_beat", "stuck_ratio",
               "repetition_half", "pitch_range", "opening_distance", "polyphony", "note_density", "hanging_notes",
               "long_notes", "zero_length_notes", "ends_on_bar")
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


def note_metrics(on_ticks, off_ticks, pitches, ticks_per_beat: float, end_tick: int | None = None,
                 time_signatures=None) -> dict:
    """The metrics (keys in METRIC_KEYS, see the module docstring) of notes held in memory.

    `on_ticks`, `off_ticks`: note starts and ends in ticks; `pitches`: MIDI note numbers;
    `end_tick`: where the clip ends (default: the last note-off; give it, so that a clip
    ending in a rest has all its bars for `repetition_half`); `time_signatures`:
    [(tick, numerator, denominator)] as `bar_lines` reads them (default: 4/4 from tick 0).
    Notes can be in any order and overlap. Arrays cannot leave a note open, so
    `hanging_notes` here counts the notes whose off tick is not after their on tick (a
    MIDI writer drops such a note or leaves it hanging); they are also `zero_length_notes`.
    """
    on, off, pitch, tpb = note_arrays(on_ticks, off_ticks, pitches, ticks_per_beat)
    zero_length = int(np.count_nonzero(off <= on))
    if end_tick is None:
        end_tick = int(max(on.max(), off.max())) if on.size else 0
    bars = bar_lines(time_signatures, tpb, end_tick) if time_signatures else None
    metrics = _timing_and_pitch_metrics(on, off, pitch, tpb, end_tick, bars, time_signatures)
    metrics["hanging_notes"] = zero_length
    metrics["zero_length_notes"] = zero_length
    return {k: metrics[k] for k in METRIC_KEYS}


def _timing_and_pitch_metrics(on, off, pitch, tpb: float, end_tick: int, bars=None, time_signatures=None) -> dict:
    n = int(on.size)
    duration_beats = max(float(end_tick), 0.0) / tpb
    bars = bar_lines([], tpb, end_tick) if bars is None else bars
    key, in_scale = key_and_in_scale(pitch, np.maximum(off - on, 0))
    grid_share, sounding = on_grid(np.concatenate([on, off]), tpb), polyphony(on, off)
    beat_share, repeated = on_beat(on, tpb, bars), repetition_half(on, pitch, tpb, end_tick, bars)
    return {
        "n_notes": n,
        "duration_beats": duration_beats,
        "key": key,
        "in_scale": 0.0 if in_scale is None else in_scale,
        "on_grid": 0.0 if grid_share is None else grid_share,
        "on_beat": 0.0 if beat_share is None else beat_share,
        "stuck_ratio": stuck_ratio(on, pitch, tpb),
        "repetition_half": 0.0 if repeated is None else repeated,
        "pitch_range": int(pitch.max() - pitch.min()) if n else 0,
        "opening_distance": opening_distance(on, pitch, tpb) or 0.0,
        "polyphony": 0.0 if sounding is None else sounding,
        "note_density": n / duration_beats if duration_beats > 0 else 0.0,
        "long_notes": long_notes(on, off, tpb),
        "ends_on_bar": ends_on_bar(end_tick, tpb, time_signatures),
    }


def ends_on_bar(end_tick: float, tpb: float, time_signatures=None) -> bool:
    """Whether a clip ending at `end_tick` ends on a bar line of its meter (`bar_lines`; 4/4
    without signatures), within the grid's tolerance: a clip of whole bars loops."""
    if end_tick <= 0:
        return False
    tolerance = _tolerance(tpb)
    lines = bar_lines(time_signatures or [], tpb, end_tick + tolerance + 1)
    return bool(lines.size and np.abs(lines - end_tick).min() <= tolerance)


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


def on_beat(on_ticks, ticks_per_beat: float, bar_starts=None) -> float | None:
    """Share of note onsets within ticks_per_beat/48 of a beat, 0..1; None for no onsets.

    A beat is a quarter note counted from the bar line at or before the onset (`bar_starts`:
    ascending bar-line ticks as `bar_lines` gives them; default: 4/4 from tick 0, every
    ticks_per_beat ticks). Every note's onset counts, as in `on_grid` and `in_scale`: a
    four-voice chord on the beat counts four (real chorale excerpts score about 0.8 so,
    0.66 if each onset time counted once). An onset a few ticks early belongs to the beat
    (and bar) it anticipates. Quarter notes in every meter: in 6/8 (a bar of 3 quarters)
    the beats counted are eighths 1, 3 and 5, the positions a generated clip's 4/4 grid shows.
    """
    times = np.asarray(on_ticks, dtype=np.float64).ravel()
    if times.size == 0:
        return None
    tpb = float(ticks_per_beat)
    tolerance = _tolerance(tpb)
    bars = np.zeros(1) if bar_starts is None else np.asarray(bar_starts, dtype=np.float64).ravel()
    bars = bars if bars.size else np.zeros(1)
    bar = np.maximum(np.searchsorted(bars, times + tolerance, side="right") - 1, 0)
    return float(np.mean(_grid_distance(times - bars[bar], tpb) <= tolerance))


def opening_distance(on_ticks, pitches, ticks_per_beat: float) -> float | None:
    """Semitones between the clip's opening and its register; None for no notes.

    The opening is the median pitch of the notes that start at the first onset (within 1/16
    beat of it: a chord, or a rolled one, opens together); the register is the median pitch
    of every note. A clip that opens where its music lies scores near 0 (a chorale's first
    chord, a tune's first note near the middle of its range); one that opens with a lone note
    an octave above what follows scores about 12: the seed's uniformly random first pitch
    (36-99) opens clips so, while the texture then settles in the style's register.
    """
    on = np.asarray(on_ticks, dtype=np.float64).ravel()
    pitch = np.asarray(pitches, dtype=np.float64).ravel()
    if on.size == 0:
        return None
    first = on <= on.min() + MELODY_ONSET_TOLERANCE_BEATS * float(ticks_per_beat)
    return float(abs(np.median(pitch[first]) - np.median(pitch)))


def long_notes(on_ticks, off_ticks, ticks_per_beat: float) -> int:
    """Notes held longer than LONG_NOTE_BEATS beats (give or take ticks_per_beat/48).

    A note left sounding: the hanging note a producer hears that `stuck_ratio` does not see
    (that measures a repeated pattern, not a held one). A whole note (4 beats) is not long.
    """
    tpb = float(ticks_per_beat)
    length = np.asarray(off_ticks, dtype=np.float64).ravel() - np.asarray(on_ticks, dtype=np.float64).ravel()
    return int(np.count_nonzero(length > LONG_NOTE_BEATS * tpb + _tolerance(tpb)))


def repetition_half(on_ticks, pitches, ticks_per_beat: float, end_tick: float, bar_starts=None) -> float | None:
    """How much the clip's second half replays its first half, 0..1; None under 2 bars or no notes.

    The clip is the N whole bars that begin before `end_tick` (bar lines `bar_starts`,
    default 4/4 from tick 0). The halves are bars [0, N//2) and [N//2, 2*(N//2)) - 8 bars
    compare bars 1-4 with 5-8; an odd last bar is left out - so the lag is half the clip
    in whole bars and an 8-bar generated clip and an 8-bar real excerpt are measured
    alike. Each half is the set of its (onset from the half's first bar line, rounded to
    1/12 beat; pitch) pairs; the score is the Dice overlap 2|A & B| / (|A| + |B|): 1.0
    when the second half plays the first again (AA), 0.0 when no note recurs at its place,
    lower when either half adds notes the other lacks (AA' scores in between).
    """
    on = np.asarray(on_ticks, dtype=np.float64).ravel()
    pitch = np.asarray(pitches, dtype=np.int64).ravel()
    tpb = float(ticks_per_beat)
    tolerance = _tolerance(tpb)
    bars = bar_lines([], tpb, end_tick) if bar_starts is None else np.asarray(bar_starts, dtype=np.float64).ravel()
    bars = bars[bars < float(end_tick) - tolerance]
    half = bars.size // 2
    if half == 0 or on.size == 0:
        return None
    stop = bars[2 * half] if 2 * half < bars.size else float(end_tick)
    halves = []
    for start, end in ((bars[0], bars[half]), (bars[half], stop)):
        inside = (on >= start - tolerance) & (on < end - tolerance)
        step = np.rint((on[inside] - start) * REPETITION_STEPS_PER_BEAT / tpb).astype(np.int64)
        halves.append(np.unique(step * 128 + pitch[inside]))
    total = halves[0].size + halves[1].size
    return 2 * np.intersect1d(halves[0], halves[1]).size / total if total else None


def bar_lines(time_signatures, ticks_per_beat: float, end_tick: float) -> np.ndarray:
    """Bar-line ticks from tick 0 up to (not including) `end_tick`, float64, ascending.

    `time_signatures`: [(tick, numerator, denominator)] in any order. A bar lasts
    numerator * 4 / denominator beats (3/4: 3 beats; 6/8: 3 beats); a signature starts a
    new bar where it stands (the last of several at one tick wins); before the first one,
    or without any, bars are 4/4 from tick 0. At most MAX_BARS bar lines.
    """
    tpb = float(ticks_per_beat)
    by_tick = {int(tick): (int(num), int(den)) for tick, num, den in sorted(time_signatures, key=lambda s: s[0])}
    if 0 not in by_tick:
        by_tick[0] = (BEATS_PER_BAR, 4)
    end = max(float(end_tick), 0.0)
    starts = sorted(t for t in by_tick if 0 <= t < end) or [0]
    parts, budget = [], MAX_BARS
    for start, next_start in zip(starts, starts[1:] + [end]):
        num, den = by_tick[start]
        length = max(num * 4 / max(den, 1) * tpb, tpb / 8)  # a 0/x or 1/128 bar: one 32nd, not a tick
        count = min(max(math.ceil((next_start - start) / length), 0), budget)
        parts.append(start + length * np.arange(count))
        budget -= count
    return np.concatenate(parts) if parts else np.zeros(0)


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
        raise MidiReadError(not_valid_midi(path.name, exc)) from None
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
    (end-of-track, which sets `duration_beats`, `note_density`, `ends_on_bar` and the bars
    `repetition_half` halves) come from the raw messages (mido); bars follow the file's
    time signatures (4/4 from tick 0 without any). A file without notes is measured too
    (n_notes 0, the shares 0.0, key None; `folder_metrics` skips it). Raises MidiReadError
    for a file that cannot be read or is type 2.
    """
    notes = read_midi(path)
    on, off, pitch, tpb = notes.on, notes.off, notes.pitch, float(notes.ticks_per_beat)
    raw = raw_file_facts(path)
    end_tick = max(raw["end_tick"], int(off.max()) if off.size else 0)
    bars = bar_lines(notes.time_signatures, tpb, end_tick)
    metrics = _timing_and_pitch_metrics(on, off, pitch, tpb, end_tick, bars, notes.time_signatures)
    metrics["hanging_notes"] = raw["hanging_notes"]
    metrics["zero_length_notes"] = int(np.count_nonzero(off <= on))
    return {k: metrics[k] for k in METRIC_KEYS}


# --- folders ------------------------------------------------------------------------------


def midi_files(path: str | Path) -> list[Path]:
    """The MIDI files (MIDI_SUFFIXES, any case) under a folder, recursively and sorted; a file is itself.

    MidigenError for a missing path or a folder without MIDI files.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    suffixes = ", ".join(MIDI_SUFFIXES)
    if not path.is_dir():
        raise MidigenError(f"{path}: no such folder; give a folder of MIDI files ({suffixes})")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)
    if not files:
        raise MidigenError(f"{path}: no MIDI files ({suffixes}) in this folder or below it")
    return files


def folder_metrics(path: str | Path) -> dict:
    """`file_metrics` of every MIDI file under a folder (see `midi_files`), and their means.

    Returns {"files": {relative path: metrics}, "mean": {metric: mean over files},
    "skipped": {relative path: reason}}. Files that cannot be measured are skipped with
    their reason, never fatal, and are in no mean: unreadable, not valid MIDI, type 2, no
    notes (empty tracks) or drum tracks only. `ends_on_bar`'s mean is the share of files
    ending on a bar; `key` has no mean. MidigenError for a missing folder or one without
    MIDI files.
    """
    root = Path(path).expanduser()
    files, skipped = {}, {}
    for file in midi_files(root):
        name = file.relative_to(root).as_posix() if root.is_dir() else file.name
        try:
            metrics = file_metrics(file)
        except MidiReadError as exc:
            skipped[name] = str(exc)
            continue
        if metrics["n_notes"] == 0:
            skipped[name] = f"{file.name}: {no_notes_reason(read_midi(file).drum_notes)}"
        else:
            files[name] = metrics
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

