"""Song forms: a clip built from sections of bars (`midigen generate --form AA'`, `AABA`, `ABAC`).

A form is a string of letters, each one section; `--bars` is split evenly among them. The
dissertation notes that producers' files are often two halves, the second repeating the first
with its top melody changed (its Figure 7b), so one half can loop as a verse and the other as
a chorus: that shape is `AA'`. What each section is, in clip order:

- a letter met for the first time (A, B, C) is new music that continues the clip so far: it is
  sampled with everything before it as context (the model's state has read it, it is not
  written again), so it follows on. The first section is sampled as a clip without a form is
  (with `--primer` kept at its start, `--start`, the request's context);
- a letter met again repeats that letter's first section note for note, moved in time;
- a primed letter (A') varies the letter's section: every note of A below its top line is
  kept, and the top line (the highest note at each onset: the skyline melody of
  `midigen.evaluation.metrics.melody`) is taken from a fresh continuation of the clip so far
  instead. VARIATION_CANDIDATES continuations are drawn at once and the one whose top line
  fits A's lower notes best is kept (see `fit_score`), preferring one that differs from A's;
  its notes give way to A's kept notes where they would sound the same pitch twice or exceed
  `--voices`. A primed letter met again repeats its first variation.

Every section is cut at its end (notes sounding there close there), so each section stands on
its own and a repeat is exactly its source. Each section is sampled for every file of the batch
at once, each file's context its own clip so far (the sampler warms each file's state on its
own context and steps them together); seeds derive from `--seed` and the section, so the same
seed writes the same bytes.

Not for: the request's checks (`request.py` calls `parse_form`), the sampler (`sampling.py`), sampling the
sections (`generate.generate_formed`, which uses what is here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from midigen.data.midi_io import TICKS_PER_BEAT

MAX_SECTIONS = 16
PRIMES = "'\u2019\u2032"  # ' and the typographic apostrophe and prime a text editor may put in its place
VARIATION_CANDIDATES = 4  # continuations drawn (as one batch) for a variation's new top line
CONSONANT = frozenset({0, 3, 4, 5, 7, 8, 9})  # intervals (semitones mod 12) a top note may make with a note below
MIN_NOTE_TICKS = TICKS_PER_BEAT // 8  # as generate: a stub shorter than a 32nd left by a cut is dropped
MELODY_TOLERANCE_TICKS = TICKS_PER_BEAT / 16  # onsets closer than this are one onset (`metrics.melody`)


@dataclass(frozen=True)
class Section:
    """One section of a form: its `letter` and whether it is a variation (A')."""

    letter: str
    varied: bool = False

    @property
    def label(self) -> str:
        return self.letter + ("'" if self.varied else "")


def parse_form(text: str) -> list[Section]:
    """"AA'" -> [A, A']; "aaba" -> [A, A, B, A]. Spaces are ignored.

    ValueError(reason, in words a producer can act on) for a form that cannot be: a character
    other than a letter A-Z or ', no section, more than MAX_SECTIONS, a prime on the first
    section or on a letter not met before it, two primes on one letter."""
    sections: list[Section] = []
    for ch in str(text):
        if ch.isspace():
            continue
        if ch in PRIMES:
            if not sections:
                raise ValueError("the first section cannot be a variation (A'): nothing comes before it to vary")
            if sections[-1].varied:
                raise ValueError(f"{sections[-1].label}' has two primes: one ' per letter (A')")
            sections[-1] = Section(sections[-1].letter, True)
        elif ch.isascii() and ch.isalpha():
            sections.append(Section(ch.upper()))
        else:
            raise ValueError(f"{ch!r} is not a section: use letters A-Z, each optionally followed by ' "
                             "(e.g. AA', AB, AABA)")
    if not sections:
        raise ValueError("name the sections, e.g. AA' (a half, then it again with a new top line), AB or AABA")
    if len(sections) > MAX_SECTIONS:
        raise ValueError(f"{len(sections)} sections: use at most {MAX_SECTIONS}")
    if sections[0].varied:
        raise ValueError("the first section cannot be a variation (A'): nothing comes before it to vary")
    seen: set[str] = set()
    for section in sections:
        if section.varied and section.letter not in seen:
            raise ValueError(f"{section.label} varies {section.letter}, which does not come before it: "
                             f"put {section.letter} first")
        seen.add(section.letter)
    return sections


def form_text(sections: list[Section]) -> str:
    """The form as written back: "AA'"."""
    return "".join(s.label for s in sections)


# --- the top line ----------------------------------------------------------------------------


def top_line(on_ticks, pitches) -> np.ndarray:
    """(N,) bool: the notes of the skyline melody, the highest note at each onset.

    Onsets closer than 1/16 beat to the previous one are one onset (a rolled chord), as in
    `midigen.evaluation.metrics.melody`, whose pitches these notes are; of equal pitches the
    earliest is the one."""
    on = np.asarray(on_ticks, dtype=np.int64).ravel()
    pitch = np.asarray(pitches, dtype=np.int64).ravel()
    mask = np.zeros(on.size, dtype=bool)
    if on.size == 0:
        return mask
    order = np.argsort(on, kind="stable")
    on_s, pitch_s = on[order], pitch[order]
    group = np.cumsum(np.concatenate([[True], np.diff(on_s) >= MELODY_TOLERANCE_TICKS]))
    ranked = np.lexsort((on_s, -pitch_s, group))  # by onset group, then highest, then earliest
    firsts = np.concatenate([[True], group[ranked][1:] != group[ranked][:-1]])
    mask[order[ranked[firsts]]] = True
    return mask


def fit_top_line(kept, top, voices: int | None):  # noqa: ANN001, ANN201 - (on, off, pitch) arrays
    """The notes of `top` that can sound with `kept` (both (on, off, pitch) in ticks).

    A top note is dropped where, at its onset, `kept` sounds its pitch or the clip would sound
    more than `voices` notes; it is cut short where such a moment comes while it sounds; what
    is left shorter than MIN_NOTE_TICKS is dropped. `kept` is never changed."""
    k_on, k_off, k_pitch = (np.asarray(a, dtype=np.int64) for a in kept)
    taken: list[tuple[int, int, int]] = []

    def blocked(t: int, p: int) -> bool:
        sounding = (k_on <= t) & (k_off > t)
        if (sounding & (k_pitch == p)).any():
            return True
        if voices is None:
            return False
        return int(sounding.sum()) + sum(a <= t < b for a, b, _ in taken) >= voices

    for on, off, p in sorted(zip(*(np.asarray(a, dtype=np.int64).tolist() for a in top))):
        if blocked(on, p):
            continue
        for t in sorted(set(k_on[(k_on > on) & (k_on < off)].tolist())):
            if blocked(t, p):
                off = t
                break
        if off - on >= MIN_NOTE_TICKS:
            taken.append((on, off, p))
    if not taken:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(3))
    return tuple(np.asarray(column, dtype=np.int64) for column in zip(*taken))


def fit_score(kept, top, replaced_ticks: int) -> float:
    """How well a new top line sits on the kept notes, 0..1: the share of its sounding time in
    notes that lie above every kept note sounding at their onset and make a consonance with each
    (CONSONANT), over the longer of its own sounding time and `replaced_ticks` (the old top
    line's), so a sparse line does not win by leaving the melody out."""
    k_on, k_off, k_pitch = (np.asarray(a, dtype=np.int64) for a in kept)
    good = total = 0
    for on, off, p in zip(*(np.asarray(a, dtype=np.int64).tolist() for a in top)):
        total += off - on
        below = k_pitch[(k_on <= on) & (k_off > on)]
        if np.all(below < p) and all(int(i) in CONSONANT for i in (p - below) % 12):
            good += off - on
    span = max(total, replaced_ticks)
    return good / span if span else 0.0


# --- sampling the sections ---------------------------------------------------------------------


def section_seed(seed: int, section: int) -> int:
    """The seed of a sampled section after the first, drawn for every file of the batch at once
    (the first is the batch's `seed`)."""
    return int(np.random.SeedSequence([int(seed), section]).generate_state(1)[0])


def _ticks_to_steps(ticks, params, bpm: float) -> np.ndarray:  # noqa: ANN001
    """MIDI ticks -> event steps (the inverse of `midi_io.steps_to_ticks`, rounded in seed mode)."""
    ticks = np.asarray(ticks, dtype=np.float64)
    if params.mode == "beat":
        return np.rint(ticks * params.grid / TICKS_PER_BEAT).astype(np.int64)
    return np.rint(ticks / TICKS_PER_BEAT * 60.0 / bpm * 1000.0 / params.step_ms).astype(np.int64)


def clip_ids(notes, until_tick: int, params, bpm: float) -> np.ndarray:  # noqa: ANN001
    """Notes in ticks -> token ids, with rests after the last note up to `until_tick`, so what
    is sampled after them starts there."""
    from midigen.data.events import encode_notes, rests

    on, off, pitch = (_ticks_to_steps(notes[0], params, bpm), _ticks_to_steps(notes[1], params, bpm), notes[2])
    ids = encode_notes(on, off, pitch, params).astype(np.int64)
    return np.concatenate([ids, rests(int(_ticks_to_steps(until_tick, params, bpm)) - (int(off.max()) if off.size else 0),
                                      params)])


def _cut_bar(ids: np.ndarray, params, opts, bpm: float) -> int | None:  # noqa: ANN001
    """The bar (0-based, in the section) a sampled section stopped in when its event budget ran out."""
    from midigen.data.events import total_steps

    steps = total_steps(ids, params)
    if opts.max_steps is None or steps >= opts.max_steps:
        return None
    return int(steps // (opts.bar_beats * params.steps_per_beat(bpm)))


def _shifted(notes, by: int):  # noqa: ANN001, ANN202
    return notes[0] + by, notes[1] + by, notes[2]


def _joined(parts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    on, off, pitch = (np.concatenate([p[k] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)
                      for k in range(3))
    order = np.lexsort((pitch, on))
    return on[order], off[order], pitch[order]


def _vary(source, candidates: list[np.ndarray], to_notes, voices: int | None):  # noqa: ANN001, ANN202
    """A variation of `source` (notes in section ticks): its notes below the top line, and the
    top line of the candidate continuation that fits them best (`fit_score`), preferring one
    that changes the top line. Returns (on, off, pitch)."""
    on, off, pitch = source
    is_top = top_line(on, pitch)
    kept = (on[~is_top], off[~is_top], pitch[~is_top])
    old_top = sorted(zip(on[is_top].tolist(), off[is_top].tolist(), pitch[is_top].tolist()))
    replaced_ticks = int((off[is_top] - on[is_top]).sum())
    best = None
    for ids in candidates:
        c_on, c_off, c_pitch = to_notes(ids)
        c_top = top_line(c_on, c_pitch)
        top = fit_top_line(kept, (c_on[c_top], c_off[c_top], c_pitch[c_top]), voices)
        changed = sorted(zip(*(a.tolist() for a in top))) != old_top
        rank = (changed, fit_score(kept, top, replaced_ticks))
        if best is None or rank > best[0]:  # the first of equals: a seed's choice does not hang on float ties
            best = (rank, top)
    return _joined([kept, best[1]])
