"""The Oore-style event vocabulary as plain numpy: notes <-> token ids.

This module is the codec both paths share. The training path reaches it through
`midigen.data.tokenizer.OoreTokenizer` (a miditok tokenizer); the producer path uses it
directly, so generating MIDI imports neither miditok nor any training machinery.

Vocabulary (index order is the seed's Figure 8, pad first):

    0                      PAD
    1 .. 128               NOTE_ON pitch 0..127
    129 .. 256             NOTE_OFF pitch 0..127
    257 .. 256+max_shift   TIME_SHIFT of (k+1) steps, k = 0..max_shift-1

A *step* is 8 ms in `seed` mode (max_shift 125 = 1 s, vocab 382) and 1/grid beat in
`beat` mode (default grid 12 = 16ths and triplets, max_shift 48 = one 4/4 bar).
Not for: reading MIDI files (see `midigen.data.midi_io`) or sampling (`midigen.producer.sampling`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PAD_ID = 0
NOTE_ON_OFFSET = 1
NOTE_OFF_OFFSET = 129
TIME_SHIFT_OFFSET = 257
NUM_PITCHES = 128

# One token per TIME_SHIFT amount and the note events; ids fit in uint16.
TOKEN_DTYPE = np.uint16


@dataclass(frozen=True)
class EventParams:
    """What a token means; saved as JSON with every cache and model.

    mode: "seed" (steps of `step_ms` milliseconds) or "beat" (steps of 1/`grid` beat).
    max_shift: largest single TIME_SHIFT in steps; longer gaps are several shifts.
    """

    mode: str = "seed"
    step_ms: float = 8.0
    grid: int = 12
    max_shift: int = 125
    drop_drums: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("seed", "beat"):
            raise ValueError(f"unknown tokenizer mode {self.mode!r}: use 'seed' or 'beat'")
        if self.max_shift < 1:
            raise ValueError("max_shift must be at least 1 step")

    @classmethod
    def seed(cls) -> EventParams:
        return cls(mode="seed", step_ms=8.0, max_shift=125)

    @classmethod
    def beat(cls, grid: int = 12, bar_beats: int = 4) -> EventParams:
        return cls(mode="beat", grid=grid, max_shift=grid * bar_beats)

    @property
    def vocab_size(self) -> int:
        return TIME_SHIFT_OFFSET + self.max_shift

    @property
    def steps_per_second(self) -> float:
        """Steps per second in seed mode (125 for 8 ms)."""
        return 1000.0 / self.step_ms

    def steps_per_beat(self, bpm: float) -> float:
        """How many steps make one beat at `bpm` (the tempo only matters in seed mode)."""
        return self.grid if self.mode == "beat" else self.steps_per_second * 60.0 / bpm

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, params: dict) -> EventParams:
        known = {k: params[k] for k in cls.__dataclass_fields__ if k in params}
        return cls(**known)

    def key(self) -> str:
        """A short stable string naming these parameters (cache folder names)."""
        return f"{self.mode}-s{self.step_ms:g}-g{self.grid}-m{self.max_shift}-d{int(self.drop_drums)}"


def load_params(path: str | Path) -> EventParams:
    """Read EventParams from a tokenizer JSON (ours, or the miditok file that wraps it)."""
    data = json.loads(Path(path).read_text())
    if "config" in data:  # miditok's file: our parameters live in additional_params
        data = data["config"].get("additional_params", {})
    return EventParams.from_dict(data)


def event_names(params: EventParams) -> list[str]:
    """Readable names for every id, in the seed's spelling (note_on_60, time_shift_29)."""
    names = ["<pad>"]
    names += [f"note_on_{p}" for p in range(NUM_PITCHES)]
    names += [f"note_off_{p}" for p in range(NUM_PITCHES)]
    names += [f"time_shift_{k}" for k in range(params.max_shift)]
    return names


def resolve_overlaps(on: np.ndarray, off: np.ndarray, pitch: np.ndarray):
    """Make notes representable: one pitch cannot sound twice at once.

    Inputs are integer step times. Unison duplicates (same pitch, same onset) collapse
    into one note keeping the longest end; a note overlapped by a later note of the same
    pitch ends where that one begins; every note lasts at least one step. No onset is
    lost. Returns (on, off, pitch) sorted by onset then pitch.
    """
    on = np.asarray(on, dtype=np.int64)
    off = np.maximum(np.asarray(off, dtype=np.int64), on + 1)
    pitch = np.asarray(pitch, dtype=np.int64)
    if on.size == 0:
        return on, off, pitch
    order = np.lexsort((-off, on, pitch))  # by pitch, then onset, longest first
    on, off, pitch = on[order], off[order], pitch[order]
    keep = np.ones(on.size, dtype=bool)
    keep[1:] = (pitch[1:] != pitch[:-1]) | (on[1:] != on[:-1])  # drop unison duplicates
    on, off, pitch = on[keep], off[keep], pitch[keep]
    next_same = np.zeros(on.size, dtype=bool)
    next_same[:-1] = pitch[1:] == pitch[:-1]
    next_on = np.empty_like(on)
    next_on[:-1] = on[1:]
    cut = next_same & (off > next_on)
    off = np.where(cut, next_on, off)
    order = np.lexsort((pitch, on))
    return on[order], off[order], pitch[order]


def encode_notes(on: np.ndarray, off: np.ndarray, pitch: np.ndarray, params: EventParams) -> np.ndarray:
    """Notes in integer steps -> token ids (uint16), vectorised.

    Time starts at step 0, so leading silence is kept as shifts. At one instant
    NOTE_OFFs come before NOTE_ONs (the seed's Figure 2), each group in pitch order.
    """
    on, off, pitch = resolve_overlaps(on, off, pitch)
    if on.size == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    times = np.concatenate([off, on])
    kinds = np.concatenate([np.zeros(off.size, np.int64), np.ones(on.size, np.int64)])
    pitches = np.concatenate([pitch, pitch])
    order = np.lexsort((pitches, kinds, times))
    times, kinds, pitches = times[order], kinds[order], pitches[order]
    event_ids = np.where(kinds == 1, NOTE_ON_OFFSET + pitches, NOTE_OFF_OFFSET + pitches)

    gaps = np.diff(times, prepend=0)  # steps to wait before each event
    full, rest = np.divmod(gaps, params.max_shift)
    n_shift = full + (rest > 0)
    # Each event is preceded by its shifts: `full` maximal ones, then one of `rest`.
    total = int(n_shift.sum()) + event_ids.size
    ids = np.empty(total, dtype=np.int64)
    event_pos = np.cumsum(n_shift + 1) - 1
    ids[event_pos] = event_ids
    is_shift = np.ones(total, dtype=bool)
    is_shift[event_pos] = False
    shift_amounts = np.full(int(n_shift.sum()), params.max_shift, dtype=np.int64)
    # The last shift before an event carries the remainder where there is one.
    last_shift_idx = np.cumsum(n_shift) - 1
    has_rest = rest > 0
    shift_amounts[last_shift_idx[has_rest]] = rest[has_rest]
    ids[is_shift] = TIME_SHIFT_OFFSET + shift_amounts - 1
    return ids.astype(TOKEN_DTYPE)


def count_tokens(on: np.ndarray, off: np.ndarray, pitch: np.ndarray, params: EventParams) -> int:
    """How many ids `encode_notes` would return for these notes, without building them.

    A size check before encoding: a few bytes of MIDI (one huge delta time) can stand for
    billions of TIME_SHIFTs, and the ids are built in memory at once.
    """
    on, off, pitch = resolve_overlaps(on, off, pitch)
    if on.size == 0:
        return 0
    times = np.sort(np.concatenate([off, on]))
    gaps = np.diff(times, prepend=0)
    return int((-(-gaps // params.max_shift)).sum()) + int(times.size)  # ceil(gap / max_shift) shifts each


def decode_ids(ids, params: EventParams, close_at: int | None = None):
    """Token ids -> notes (on, off, pitch) in integer steps.

    Tolerant of any id sequence, as a sampler can produce: a NOTE_OFF with no open note
    is ignored, a NOTE_ON of a sounding pitch first ends it (notes last >= 1 step), pad
    and unknown ids are skipped, notes still open at the end are closed at `close_at`
    (default: the final time, or one step after the onset), and notes of one pitch never
    overlap (`resolve_overlaps`). Returns (on, off, pitch) sorted by onset then pitch.
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    shifts = np.where((ids >= TIME_SHIFT_OFFSET) & (ids < TIME_SHIFT_OFFSET + params.max_shift),
                      ids - TIME_SHIFT_OFFSET + 1, 0)
    clock = np.cumsum(shifts)  # time at each token (after its own shift)
    open_at = np.full(NUM_PITCHES, -1, dtype=np.int64)
    notes_on: list[int] = []
    notes_off: list[int] = []
    notes_pitch: list[int] = []
    note_mask = (ids >= NOTE_ON_OFFSET) & (ids < TIME_SHIFT_OFFSET)
    for i in np.flatnonzero(note_mask).tolist():
        tok = int(ids[i])
        t = int(clock[i])
        if tok < NOTE_OFF_OFFSET:
            p = tok - NOTE_ON_OFFSET
            if open_at[p] >= 0:
                notes_on.append(int(open_at[p]))
                notes_off.append(max(t, int(open_at[p]) + 1))
                notes_pitch.append(p)
            open_at[p] = t
        else:
            p = tok - NOTE_OFF_OFFSET
            if open_at[p] >= 0:
                notes_on.append(int(open_at[p]))
                notes_off.append(max(t, int(open_at[p]) + 1))
                notes_pitch.append(p)
                open_at[p] = -1
    end = int(clock[-1]) if ids.size else 0
    if close_at is not None:
        end = close_at
    for p in np.flatnonzero(open_at >= 0).tolist():
        start = int(open_at[p])
        notes_on.append(start)
        notes_off.append(max(end, start + 1))
        notes_pitch.append(p)
    on = np.asarray(notes_on, dtype=np.int64)
    off = np.asarray(notes_off, dtype=np.int64)
    pitch = np.asarray(notes_pitch, dtype=np.int64)
    # A pitch struck twice at one instant (NOTE_ON x2, or ON OFF ON) would overlap itself,
    # which MIDI cannot hold: the same rule as encoding makes it one note.
    return resolve_overlaps(on, off, pitch)


def cut_ids(ids, params: EventParams, steps: int) -> np.ndarray:
    """The first `steps` steps of an id sequence as a closed excerpt, int64: the notes that start
    before `steps`, each ended there at the latest, then rests up to it (so what follows starts
    at `steps`); as a real excerpt is cut at a bar line, a note held over the cut is not in it."""
    on, off, pitch = decode_ids(ids, params, close_at=steps)
    keep = on < steps
    on, off, pitch = on[keep], np.minimum(off[keep], steps), pitch[keep]
    cut = encode_notes(on, off, pitch, params).astype(np.int64)
    return np.concatenate([cut, rests(int(steps) - (int(off.max()) if off.size else 0), params)])


def rests(steps: int, params: EventParams) -> np.ndarray:
    """TIME_SHIFT ids that wait `steps` steps (none for steps <= 0), int64: whole maximal shifts, then the rest."""
    full, part = divmod(max(int(steps), 0), params.max_shift)
    shifts = [TIME_SHIFT_OFFSET + params.max_shift - 1] * full + ([TIME_SHIFT_OFFSET + part - 1] if part else [])
    return np.asarray(shifts, dtype=np.int64)


def total_steps(ids, params: EventParams) -> int:
    """Duration of an id sequence in steps (the sum of its TIME_SHIFTs)."""
    ids = np.asarray(ids, dtype=np.int64)
    mask = (ids >= TIME_SHIFT_OFFSET) & (ids < TIME_SHIFT_OFFSET + params.max_shift)
    return int((ids[mask] - TIME_SHIFT_OFFSET + 1).sum())


def bar_positions(ids, params: EventParams, meter, start: int = 0) -> np.ndarray:
    """Where each event leaves the music in its bar: steps since the last bar line at the time
    after the event (when the next event happens), int64 (n,). A position-aware model reads it.

    meter: the bar length in steps (one meter throughout, bar lines at 0, L, 2L, ...), or
        [(step, bar_steps), ...]: each entry puts a bar line at `step`, with bars of `bar_steps`
        after it until the next entry (a time signature map; a pickup is a short first bar).
        Times before the first entry count back from it in its bars; of entries at one step, the
        last counts.
    start: the time before the first id, in steps (a window cut from inside a file: the file's
        steps before it; a clip that opens on a bar line: 0).
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    shifts = np.where((ids >= TIME_SHIFT_OFFSET) & (ids < TIME_SHIFT_OFFSET + params.max_shift),
                      ids - TIME_SHIFT_OFFSET + 1, 0)
    time = int(start) + np.cumsum(shifts)
    meter = [(0, meter)] if np.isscalar(meter) else sorted(meter, key=lambda entry: entry[0])
    lines = np.asarray([int(step) for step, _ in meter], dtype=np.int64)
    lengths = np.asarray([max(int(steps), 1) for _, steps in meter], dtype=np.int64)
    part = np.maximum(np.searchsorted(lines, time, side="right") - 1, 0)
    return np.remainder(time - lines[part], lengths[part])


def transpose(ids: np.ndarray, semitones: int) -> np.ndarray:
    """Shift every NOTE_ON/NOTE_OFF by `semitones`; the caller keeps pitches in 0..127."""
    ids = np.asarray(ids, dtype=np.int64)
    is_note = (ids >= NOTE_ON_OFFSET) & (ids < TIME_SHIFT_OFFSET)
    return np.where(is_note, ids + semitones, ids)


def pitch_bounds(ids: np.ndarray) -> tuple[int, int] | None:
    """Lowest and highest pitch named by any note event, or None if there are none."""
    ids = np.asarray(ids, dtype=np.int64)
    on = ids[(ids >= NOTE_ON_OFFSET) & (ids < NOTE_OFF_OFFSET)] - NOTE_ON_OFFSET
    off = ids[(ids >= NOTE_OFF_OFFSET) & (ids < TIME_SHIFT_OFFSET)] - NOTE_OFF_OFFSET
    pitches = np.concatenate([on, off])
    if pitches.size == 0:
        return None
    return int(pitches.min()), int(pitches.max())


def retime(ids: np.ndarray, factor: float, params: EventParams) -> np.ndarray:
    """Stretch time by `factor`: each run of TIME_SHIFTs is re-expressed at its scaled length.

    Runs are rounded independently (a run never shrinks below one step), so the order
    of events is kept. Used for the Oore et al. time-stretch augmentation.
    """
    ids = np.asarray(ids, dtype=np.int64)
    is_shift = (ids >= TIME_SHIFT_OFFSET) & (ids < TIME_SHIFT_OFFSET + params.max_shift)
    if not is_shift.any():
        return ids
    amounts = np.where(is_shift, ids - TIME_SHIFT_OFFSET + 1, 0)
    run_start = is_shift & ~np.concatenate([[False], is_shift[:-1]])
    run_id = np.cumsum(run_start) - 1
    run_totals = np.bincount(run_id[is_shift], weights=amounts[is_shift]).astype(np.int64)
    new_totals = np.maximum(np.rint(run_totals * factor).astype(np.int64), 1)
    full, rest = np.divmod(new_totals, params.max_shift)
    counts = full + (rest > 0)
    pieces = []
    starts = np.flatnonzero(run_start)
    prev = 0
    for r, s in enumerate(starts.tolist()):
        pieces.append(ids[prev:s][~is_shift[prev:s]])
        run = np.full(int(counts[r]), TIME_SHIFT_OFFSET + params.max_shift - 1, dtype=np.int64)
        if rest[r] > 0:
            run[-1] = TIME_SHIFT_OFFSET + rest[r] - 1
        pieces.append(run)
        prev = s
    pieces.append(ids[prev:][~is_shift[prev:]])
    return np.concatenate(pieces)
