"""Autoregressive sampling of event sequences, batched and stateful.

The sampler never re-feeds the growing prefix (the seed's loop did): it carries each
layer's (h, c) from step to step, samples all files as one batch, and turns the first
layer's input projection into a table lookup (one-hot or embedding, plus the style
vector, times W_ih is the same for every step), so a step is one small matmul per layer.

Musical controls act on the logits before sampling: temperature, top-k, top-p, a key and a
pitch range (NOTE_ON restricted to both), an anti-stuck repetition penalty on recently played
pitches, a cap on how long a note may sound, a cap on how many notes sound at once, a rhythmic
grid (a TIME_SHIFT only where it lands on the grid, so every onset and offset sits on it), and
grammar masks (NOTE_OFF only for a sounding pitch, NOTE_ON only for a silent one). Before them,
the logits may lean into the clip's style, away from the even blend of the model's styles read
by a second state (`SamplingOptions.style_strength`), or mix in a second conditioning (`Towards`).
Producer path: plain torch, no Lightning.

How a clip without primer or context opens (`SamplingOptions.start`): the model has no
begin-of-sequence token (it was trained on windows cut anywhere in files), so "model" warms
its state with one input that carries no pitch, a one-beat TIME_SHIFT (`neutral_start`,
neither written nor counted in the clip's length), and draws the first event from the
model's NOTE_ON distribution (within key, range and filters), everything after freely. The
first event is held to a NOTE_ON because a producer's clip is a loop cut at bar lines: it
opens on beat 1 with a note, as every clip did before (an opening rest would push the phrase
off the bar, and the evaluation counts bars from the clip's first tick); left free, the
shipped model would open on a rest almost every time (after the warm-up it puts 5-6% of its
mass on NOTE_ONs). "random", the seed's experiment, opens every file on a NOTE_ON of a given
or uniformly drawn pitch.

A note drawn after a rest alone is drawn from everything the style plays: the first note of a
clip so opened lay far from where the clip then settled (scottish, 128 clips: 9.8 semitones from
its median pitch on average against 2.8 in real 8-bar excerpts, 49 opening on a low note further
off than 95% of real windows do; the model then climbs to the tune's register). So a model start may first play a
lead-in (`SamplingOptions.lead_in_steps`, a bar when `generate` asks): the model plays from its
neutral start, the lead-in is cut at its end as a real excerpt is cut at a bar line (notes held
over the cut are not kept, `events.cut_ids`), and the clip follows on from it as from a context,
opening on a note on the bar line: in the register and the texture the music has settled in, as
an excerpt cut from a longer piece opens. The lead-in is not written. `generate` asks for a bar
by default (`--lead-in 0` turns it off; README, Styles: where a clip opens, for what it gains and
costs per style).

Where the beat is (a model with `position="beat"`, see `midigen.model.ModelConfig`): each input
is read with its bar position, the steps since the last bar line once it is read, counted in the
clip's meter (`SamplingOptions.bar_beats`). A clip opens on a bar line: the model start's
warm-up beat is the last beat of the bar before it, a random start's note and a primer start at
0. A context keeps its own phase (counted from `context_start`; `generate` places a context so that it
ends on the clip's first bar line) and the clip goes on from where
the context ends in its bar; a `Towards` partner's own context is counted from its own start, and
after it the partner reads the clip's positions. A model without positions reads none, as before.

Where the time goes (3 x 430 model, 8 files, 2-core CPU): each step streams the weight
matrices through the cache, so the matmuls are bound by memory, not arithmetic: they use
weights prepacked for oneDNN (twice MKL's speed at this shape) and, where the CPU has
native bfloat16, bf16 weights (`SamplingOptions.precision`). The rest is per-step overhead
on (8, 382) arrays, kept small: the LSTM step writes into preallocated buffers with two
sigmoid calls per layer and no tanh (see `StepLSTM`), and the musical controls, the filters and
the draw run in numpy on a view of the logits (a numpy call on an array this small costs
a fraction of a torch op). A draw inverts the CDF at one uniform number per file (drawn
in blocks of steps): exactly softmax(logits), without a softmax or `torch.multinomial`
call per step.

That Python path is the reference. Its per-step overhead (some thirty torch ops and a
dozen numpy calls of a few microseconds each) was as large as the matmuls, so where the
native kernels are built (`midigen.producer.native`) a step is instead the four matmuls, one fused
`midigen::lstm_cell_` call per layer and one `midigen::choose_` call for the controls, the
filters, the draw and the state update: 0.08 s instead of 0.13 s for 8 x 220 events
(`midigen bench`, row sampling_native_vs_python). Preparing the step weights (reordered,
scaled, prepacked) is cached per model, keyed on its parameters' versions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from midigen.data.events import (NOTE_OFF_OFFSET, NOTE_ON_OFFSET, NUM_PITCHES, PAD_ID, TIME_SHIFT_OFFSET,
                                 EventParams, bar_positions, cut_ids, total_steps)
from midigen.data.midi_io import BEATS_PER_BAR
from midigen.producer import native as kernels
from midigen.producer.request import MAX_STYLE_STRENGTH
from midigen.model import EventLSTM, StepLSTM, resolve_precision

NEG_INF = float("-inf")
MIXES = ("geometric", "arithmetic")  # how `Towards` mixes two next-event distributions
STARTS = ("model", "random")  # how a clip without primer or context opens (`SamplingOptions.start`)
UNIFORM_BLOCK = 64  # steps of random numbers drawn at once; fixed, so a seed always gives the same ids


@dataclass
class SamplingOptions:
    """What to sample. Times are in event steps (see `midigen.data.events`).

    max_events: events generated per file after the primer/start note (a cap; with
        start="model", the first note is one of them).
    max_steps: stop a file once its clip reaches this length in steps (None: no limit).
    temperature: logits are divided by it (> 0; 1 = as trained).
    top_k: keep each step's k likeliest events (0: all). top_p: nucleus filter, in (0, 1].
    scale: allowed pitch classes (0 = C) for NOTE_ON, or None for all.
    note_range: (low, high) MIDI pitches, inclusive: every NOTE_ON of the clip, its first one
        included, is within it (masked like a pitch out of key; a primer is kept verbatim).
        None: no limit. It must hold at least one pitch of `scale`.
    voices: at most this many notes sound at once in a file (>= 1; None: no cap). A file
        with `voices` notes sounding may not start another until one ends (NOTE_OFF and
        TIME_SHIFT stay allowed); voices=1 is a single line, no two notes overlapping.
    grid: where in a beat notes may start and end, as subdivisions of the beat: (4, 3) is the
        16th and 8th-triplet grid (every onset and offset at 0, 1/4, 1/3, 1/2, 2/3 or 3/4 of a
        beat), (4,) 16ths only; None: anywhere the model's steps allow. A TIME_SHIFT is drawn
        only where it lands on the grid, and a NOTE_ON only on it (a primer or context that
        leaves the clip off the grid is followed by a shift back onto it). Counted from the
        clip's first bar line (a context: from where it ends in its bar, see `context_start`).
        Needs beat-mode steps that divide into each subdivision.
    repetition_penalty: logit penalty per occurrence of a pitch among the last
        `repetition_window` NOTE_ONs (0 disables); the producer's "gets stuck on notes".
    max_note_steps: a note sounding this long is ended before anything else happens.
    start: how a file without primer or context opens. "model": the model chooses (see the
        module docstring): the first event is a NOTE_ON drawn from the model's distribution
        for the style, after a neutral TIME_SHIFT input that is not written.
        "random": the seed's experiment, a NOTE_ON of `start_pitches`.
    lead_in_steps: with start="model" and no primer or context, the model first plays this many
        steps (from its neutral start, with every control of the clip), which are cut off as a
        closed context the clip follows on from (see the module docstring); the clip then opens
        on a NOTE_ON. 0: the clip's first note follows the neutral start directly.
    start_pitches: with start="random", the first NOTE_ON of each file (None: uniform over
        36..99, or over `note_range` where given, from the seed). start="model" and a primer
        or context do not use them.
    primer: token ids every file starts with, kept verbatim.
    style: (S,) mixing weights over the model's styles, or None for their even blend.
    precision: of the step matmuls. "fp32" matches nn.LSTM to float rounding; "bf16" halves
        the weights' memory traffic (1.4x faster per sample() on an AMD EPYC with
        avx512_bf16; logits within ~1e-2 of fp32's, probabilities within ~1e-4); "auto",
        the default, is bf16 where the CPU has native bfloat16 (avx512_bf16 or AMX), else
        fp32. Either way sampling is deterministic: the same seed gives the same ids on a
        given machine (bf16 and fp32 runs give different ids; the parity tests compare
        StepLSTM with nn.LSTM in fp32).
    context: token ids that warm the model's state before the clip (a clip to follow on from,
        e.g. the end of a producer's file) without being written to it; its notes must all
        be closed at its end (an encoded file's are). Exclusive with `primer`.
    context_start: for a position-aware model, the steps from a bar line to the context's first
        event (a context cut from the end of a file: the file's steps before the cut); the clip
        goes on from where the context ends in its bar. 0: the context opens on a bar line.
    bar_beats: for a position-aware model, the clip's bar in beats (4: midigen writes 4/4); at
        most the model's `position_bar_beats`. Models without positions ignore it.
    towards: a second conditioning the clip is drawn towards (see `Towards`).
    style_strength: how far each step leans into the clip's style, away from the even blend of
        the model's styles (classifier-free guidance, Ho & Salimans 2022, with the even blend as
        the unconditional model): logits (1 + s) * l_style - s * l_even, from a second state that
        reads the same events conditioned on the even blend. 0: the style's own distribution, as
        trained. A model drawn freely drifts towards what all its styles share (reels come out
        as plain eighths and quarters); s > 0 pushes back towards what sets the style apart.
        Applied after `towards` (the mix is the style leaned into), before every control; no effect
        for the even blend itself or a model without styles. Costs a second LSTM step per step.
    lean_from: (S,) weights of the blend the lean pushes away from, or None for the even blend
        of all the model's styles. A fine-tuned model keeps its base's (`Bundle.lean_from`): the
        even blend of the base's styles, so a base style leans as it did in the base model.
    kernels: "native" runs each LSTM layer's cell and each step's controls and draw as one
        compiled call (`midigen kernels build`, see `midigen.producer.native`); "python" is the
        reference path in torch + numpy; "auto", the default, is native where built. Both
        apply the same controls to the same logits; their ids agree except where float
        rounding (a different exp, a different summation order) flips a draw.
    """

    num: int = 8
    max_events: int = 220
    max_steps: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    scale: list[int] | None = None
    repetition_penalty: float = 0.0
    repetition_window: int = 16
    max_note_steps: int | None = None
    start_pitches: list[int] | None = None
    primer: np.ndarray | None = None
    style: torch.Tensor | None = None
    seed: int = 0
    precision: str = "auto"
    kernels: str = "auto"
    context: np.ndarray | None = None
    towards: Towards | None = None
    note_range: tuple[int, int] | None = None
    voices: int | None = None
    start: str = "model"
    lead_in_steps: int = 0
    context_start: int = 0
    bar_beats: int = BEATS_PER_BAR
    grid: tuple[int, ...] | None = None
    style_strength: float = 0.0
    lean_from: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.style_strength) and 0.0 <= self.style_strength <= MAX_STYLE_STRENGTH):
            raise ValueError(f"style_strength={self.style_strength}: use a number from 0 (off) to {MAX_STYLE_STRENGTH:g}")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature={self.temperature}: use a positive number (1.0 = as trained)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p}: use a number in (0, 1] (1.0 = no nucleus filter)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: use 0 (no filter) or a positive number of events")
        if self.voices is not None and self.voices < 1:
            raise ValueError(f"voices={self.voices}: use at least 1 (or None for no cap)")
        if self.start not in STARTS:
            raise ValueError(f"start={self.start!r}: use one of {', '.join(STARTS)}")
        if self.bar_beats < 1:
            raise ValueError(f"bar_beats={self.bar_beats}: use at least 1 beat a bar")
        if self.lead_in_steps < 0:
            raise ValueError(f"lead_in_steps={self.lead_in_steps}: use 0 (no lead-in) or a positive number of steps")
        if self.grid is not None and (not self.grid or any(int(d) != d or d < 1 for d in self.grid)):
            raise ValueError(f"grid={self.grid}: use subdivisions of the beat, e.g. (4, 3) for 16ths and "
                             "8th-note triplets, or None for no grid")
        if self.note_range is not None:
            if len(self.note_range) != 2 or not 0 <= self.note_range[0] <= self.note_range[1] <= NUM_PITCHES - 1:
                raise ValueError(f"note_range={self.note_range}: use (low, high) MIDI pitches, 0 <= low <= high <= 127")
            if self.start == "random" and self.start_pitches is not None:
                low, high = self.note_range
                outside = [p for p in self.start_pitches if not low <= p <= high]
                if outside:
                    raise ValueError(f"start_pitches {outside} are outside note_range={self.note_range}")
        if allowed_pitches(self.scale, self.note_range).size == 0:
            raise ValueError(f"note_range={self.note_range} holds no pitch of the scale {self.scale}")


def neutral_start(params: EventParams) -> int:
    """start="model"'s warm-up input: a TIME_SHIFT of one beat (at 120 bpm in seed mode), no pitch in it.

    A beat, not one step: a quarter-note rest is what the corpus is full of, where a one-step
    shift (1/12 beat in beat mode) is rare in it. On the shipped model (128 clips a style, 8 bars),
    a clip's first onset lies 5.2 (chorale) and 5.8 (fiddle) semitones from its median pitch on
    average after a beat, 6.4 and 10.6 after one step; after a bar's rest chorales open on a lone
    bass note (10.6).
    """
    return TIME_SHIFT_OFFSET + min(round(params.steps_per_beat(120.0)), params.max_shift) - 1


def allowed_pitches(scale: list[int] | None, note_range: tuple[int, int] | None) -> np.ndarray:
    """The pitches a sampled NOTE_ON may have: in `scale` (pitch classes) and in `note_range`."""
    pitches = np.arange(NUM_PITCHES)
    keep = np.ones(NUM_PITCHES, dtype=bool)
    if scale is not None:
        keep &= np.isin(pitches % 12, np.asarray(scale, dtype=np.int64) % 12)
    if note_range is not None:
        keep &= (pitches >= note_range[0]) & (pitches <= note_range[1])
    return pitches[keep]


def grid_table(grid: tuple[int, ...] | None, params: EventParams) -> np.ndarray | None:
    """`SamplingOptions.grid` as a table over the positions in a beat: (steps a beat, 1 + max_shift)
    bool, column 0 whether a NOTE_ON may start at the position, column s whether a TIME_SHIFT of s
    steps from it lands on the grid. None for no grid."""
    if grid is None:
        return None
    if params.mode != "beat":
        raise ValueError("a grid needs a model whose time steps are fractions of a beat (beat mode); "
                         "this one counts milliseconds: use no grid")
    beat = params.grid
    bad = [d for d in grid if beat % d]
    if bad:
        raise ValueError(f"grid={tuple(grid)}: this model's beat has {beat} steps, which {bad} do not divide")
    on = np.zeros(beat, dtype=bool)
    for d in grid:
        on[::beat // d] = True
    shifts = np.arange(1, params.max_shift + 1)
    table = np.concatenate([on[:, None], on[(np.arange(beat)[:, None] + shifts[None, :]) % beat]], axis=1)
    if not table[:, 1:].any(axis=1).all():
        raise ValueError(f"grid={tuple(grid)}: this model's longest time shift ({params.max_shift} steps) "
                         "cannot reach the grid from every position")
    return table


@dataclass
class Towards:
    """A second conditioning that a clip is drawn towards (`midigen interpolate`).

    A second copy of the model's state runs beside the first, warmed by its own `context`
    with its own `style`, and both read every sampled event. Each step samples from a mix of
    the two next-event distributions: `mix="geometric"`, p_A^(1-weight) * p_B^weight (the
    logits mixed: events both like), or `"arithmetic"`, (1-weight) p_A + weight p_B (each event
    from one or the other). Weight 0 is the first conditioning alone, 1 the second alone.
    `context_start`: as `SamplingOptions.context_start`, for this context.
    """

    context: np.ndarray | None = None
    style: torch.Tensor | None = None
    weight: float = 0.5
    mix: str = "geometric"
    context_start: int = 0


class _Tracker:
    """Per-file musical state during sampling, in numpy arrays (no Python loop over files).

    `blocked` (B, 257) marks the ids 0..256 a file may not sample now: PAD always, NOTE_ONs
    outside the key or the range (`out_of_key`), NOTE_ON of a sounding pitch and NOTE_OFF of
    a silent one, so a file's sounding notes are its allowed NOTE_OFFs. `recent` is
    a ring of the last NOTE_ON pitches shared by all files: its cursor moves on whenever any
    file plays a NOTE_ON, and a file that did not play keeps its old entry there.
    """

    NEVER = np.iinfo(np.int64).max

    def __init__(self, batch: int, params: EventParams, opts: SamplingOptions):
        ids = np.arange(params.vocab_size)
        self.is_on = (ids >= NOTE_ON_OFFSET) & (ids < NOTE_OFF_OFFSET)
        self.is_off = (ids >= NOTE_OFF_OFFSET) & (ids < TIME_SHIFT_OFFSET)
        self.shift_of = np.where(ids >= TIME_SHIFT_OFFSET, ids - TIME_SHIFT_OFFSET + 1, 0)
        self.out_of_key = np.ones(NUM_PITCHES, dtype=bool)
        self.out_of_key[allowed_pitches(opts.scale, opts.note_range)] = False
        self.voices = opts.voices
        # The grid's table (`grid_table`) and where the clip's step 0 lies in a beat: 0, or (B,) for
        # contexts that end in different places (set by `sample`).
        self.grid = grid_table(opts.grid, params)
        self.beat = params.grid
        self.grid_phase: int | np.ndarray = 0
        self.blocked = np.zeros((batch, TIME_SHIFT_OFFSET), dtype=bool)
        self.blocked[:, PAD_ID] = True
        self.blocked[:, NOTE_ON_OFFSET:NOTE_OFF_OFFSET] = self.out_of_key
        self.blocked[:, NOTE_OFF_OFFSET:TIME_SHIFT_OFFSET] = True  # nothing sounds yet
        self._blocked_flat = self.blocked.reshape(-1)  # a view: one fancy index per update
        self._row_start = np.arange(batch) * TIME_SHIFT_OFFSET
        self.elapsed = np.zeros(batch, dtype=np.int64)
        # A sounding note's deadline is its onset + max_note_steps; a silent pitch's never comes.
        self.max_note = opts.max_note_steps
        self.deadline = np.full((batch, NUM_PITCHES), self.NEVER, dtype=np.int64)
        self.penalty = np.float32(opts.repetition_penalty)
        self.window = max(opts.repetition_window, 1)
        # Ring entries are pitches; an empty slot holds 128, a column of `counts` no pitch uses.
        self.recent = np.full((batch, self.window), NUM_PITCHES, dtype=np.int64)
        self.cursor = 0
        self.counts = np.zeros((batch, NUM_PITCHES + 1), dtype=np.float32)  # of each pitch in `recent`
        self.rows = np.arange(batch)

    def update(self, tok: np.ndarray) -> None:
        """Account for one sampled id per file (B,); PAD changes nothing."""
        self.elapsed += self.shift_of[tok]
        on = self.is_on[tok]
        if on.any():
            r, on_ids = self.rows[on], tok[on]
            at = self._row_start[on] + on_ids
            self._blocked_flat[at] = True  # this NOTE_ON
            self._blocked_flat[at + NUM_PITCHES] = False  # its NOTE_OFF
            p = on_ids - NOTE_ON_OFFSET
            if self.max_note is not None:
                self.deadline[r, p] = self.elapsed[r] + self.max_note
            self.counts[r, self.recent[r, self.cursor]] -= 1
            self.counts[r, p] += 1
            self.recent[r, self.cursor] = p
            self.cursor = (self.cursor + 1) % self.window
        off = self.is_off[tok]
        if off.any():
            r, off_ids = self.rows[off], tok[off]
            at = self._row_start[off] + off_ids
            p = off_ids - NOTE_OFF_OFFSET
            self._blocked_flat[at] = True  # this NOTE_OFF
            self._blocked_flat[at - NUM_PITCHES] = self.out_of_key[p]  # its NOTE_ON, unless out of key
            self.deadline[r, p] = self.NEVER

    def penalties(self) -> np.ndarray:
        """(B, 128) float32: repetition_penalty x how often each pitch is in the file's ring."""
        return self.penalty * self.counts[:, :NUM_PITCHES]

    def off_grid(self) -> np.ndarray:
        """(B, 1 + max_shift) bool: a NOTE_ON now (column 0), each TIME_SHIFT (columns 1..), off the grid."""
        return ~self.grid[(self.elapsed + self.grid_phase) % self.beat]

    def full(self) -> np.ndarray:
        """(B,) bool: files with `voices` notes sounding, which may not start another."""
        return np.count_nonzero(~self.blocked[:, NOTE_OFF_OFFSET:TIME_SHIFT_OFFSET], axis=1) >= self.voices

    def overdue(self) -> np.ndarray:
        """(B, 128) bool: sounding notes that have lasted max_note_steps or longer."""
        return self.deadline <= self.elapsed[:, None]


# The filters and the draw work on unnormalised probabilities w = exp(logit - max): a masked
# (-inf) logit is a 0 weight, and "logit below a threshold" is "weight below its exp".


def _weights(logits: np.ndarray) -> np.ndarray:
    return np.exp(logits - logits.max(axis=1, keepdims=True))


def _cumsum(weights: np.ndarray) -> np.ndarray:
    """Row-wise cumulative sum in float64 (torch's kernel is twice numpy's speed on (8, 382))."""
    return torch.cumsum(torch.from_numpy(weights), 1, dtype=torch.float64).numpy()


def _top_k(weights: np.ndarray, top_k: int) -> None:
    """Keep each row's `top_k` likeliest events (and any tied with the k-th), in place."""
    V = weights.shape[1]
    if 0 < top_k < V:
        kth = np.partition(weights, V - top_k, axis=1)[:, V - top_k: V - top_k + 1]
        np.copyto(weights, 0.0, where=weights < kth)


def _top_p(weights: np.ndarray, top_p: float) -> None:
    """Nucleus filter in place: keep the likeliest events whose predecessors hold <= top_p of the mass.

    Sorted by likelihood, an event is dropped when the events above it already hold more
    than `top_p`, so the event that crosses `top_p` is kept (ties with it are kept too).
    """
    if top_p >= 1.0:
        return
    ascending = np.sort(weights, axis=1)
    below = _cumsum(ascending)  # mass up to and including each event
    # Kept: mass above <= top_p, i.e. mass up to and including it >= (1 - top_p) of the total.
    first_kept = (below < (1.0 - top_p) * below[:, -1:]).sum(axis=1)
    threshold = ascending[np.arange(weights.shape[0]), first_kept][:, None]
    np.copyto(weights, 0.0, where=weights < threshold)


def _draw(weights: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """One id per row, with probability proportional to its weight: the CDF inverted at `uniform` (B,)."""
    cdf = _cumsum(weights)
    target = uniform * cdf[:, -1]
    picked = (cdf <= target[:, None]).sum(axis=1)  # the first id whose cdf passes the target
    return np.minimum(picked, weights.shape[1] - 1)  # rounding guard; target < total in exact arithmetic


@torch.inference_mode()
def sample(model: EventLSTM, params: EventParams, opts: SamplingOptions) -> list[np.ndarray]:
    """Sample `opts.num` event sequences; each starts with the primer (or its first NOTE_ON).

    Returns one int64 id array per file. Same model + options + seed = same ids on a given
    machine (matmul rounding differs between CPUs and BLAS builds, and so can a rare draw).
    """
    model.eval()
    if opts.lead_in_steps > 0 and _opens_from_model(opts):
        return _after_lead_in(model, params, opts)
    return _sample(model, params, opts)


LEAD_IN_SEED = 1 << 40  # the lead-in's random numbers: a stream apart from every clip's (seeds are < 2**32)


def _opens_from_model(opts: SamplingOptions) -> bool:
    """A model start: no primer, no context, start="model"."""
    return (opts.start == "model" and not _has_context(opts.context, opts.num)
            and (opts.primer is None or len(opts.primer) == 0))


def _after_lead_in(model: EventLSTM, params: EventParams, opts: SamplingOptions) -> list[np.ndarray]:
    """The clips after a lead-in of `opts.lead_in_steps` steps each (see the module docstring): the
    lead-in drawn from the model's start with the clip's controls, cut closed at its end, then the
    clip drawn as its continuation, opening on a note on the bar line where the lead-in ends."""
    steps = int(opts.lead_in_steps)
    budget = opts.max_events if opts.max_steps is None else max(1, -(-opts.max_events * steps // opts.max_steps))
    lead = _sample(model, params, replace(opts, lead_in_steps=0, max_steps=steps, max_events=budget,
                                          seed=int(opts.seed) + LEAD_IN_SEED))
    contexts = [cut_ids(ids, params, steps) for ids in lead]
    return _sample(model, params, replace(opts, lead_in_steps=0, context=contexts, context_start=0), open_on_note=True)


def _sample(model: EventLSTM, params: EventParams, opts: SamplingOptions, open_on_note: bool = False) -> list[np.ndarray]:
    """`sample` without a lead-in; `open_on_note`: the clip's first event is a NOTE_ON, as after a model start."""
    B = opts.num
    gen = torch.Generator().manual_seed(int(opts.seed))
    prefix, has_context, model_start = _prefix(opts, params, gen)
    warm_only = has_context or model_start  # the prefix warms the state and is not part of the clip
    rows = _rows(prefix)  # each file's prefix (a shared one: the same array for every file)
    use_native = kernels.resolve(opts.kernels)
    precision = resolve_precision(opts.precision)
    bar = _bar_steps(model, params, opts)  # None: the model reads no positions
    starts = _per_file(opts.context_start, B) if has_context else [0] * B  # where each prefix opens, in steps
    if model_start:  # the warm-up beat is the last beat before the clip's first bar line
        starts = [-total_steps(rows[0], params)] * B
    prefix_at = None  # each file's prefix's bar positions
    if bar is not None:
        # A context is counted from its own start; a primer and a random start's note open the clip, on
        # a bar line; a model start's warm-up beat is the last beat of the bar before it.
        prefix_at = _positions(rows, starts, params, bar)
    stepper = _warmed(model, opts.style, rows, B, precision, use_native, prefix_at)
    tracker = _Tracker(B, params, opts)
    if has_context:  # the grid is counted from where each context ends in its beat; a clip opens on a beat
        tracker.grid_phase = np.array([start + total_steps(r, params) for r, start in zip(rows, starts)],
                                      dtype=np.int64) % params.grid
    if not warm_only:  # a context's notes are all closed (a neutral start has none): nothing sounds yet
        for t in range(prefix.shape[1]):
            tracker.update(prefix[:, t])
    # Each step's input is read at the clip's bar position once it is read: where the prefix
    # left the bar (a context's end; a primer's steps are in `tracker.elapsed`), plus the clip's steps.
    phase = np.array([at[-1] for at in prefix_at], dtype=np.int64) if has_context and bar is not None else 0
    positions = None if bar is None else torch.zeros(B, dtype=torch.int64)  # (B,), rewritten each step
    positions_np = None if positions is None else positions.numpy()

    def clip_positions() -> torch.Tensor | None:
        if positions is not None:
            np.remainder(tracker.elapsed + phase, bar, out=positions_np)
        return positions

    # (B,): each file's last prefix id, the first step's input; each sampled id is written back into it
    ids = torch.as_tensor(np.array([r[-1] for r in rows], dtype=np.int64))
    logits = stepper.step(ids, clip_positions()).numpy()  # (B, V), a view of the stepper's buffer: masked in place
    step_partner = step_lean = None
    if opts.towards is not None:
        step_partner = _partner(model, params, opts.towards, B, rows, prefix_at, bar, precision, use_native, logits)
    if opts.style_strength > 0 and model.num_styles and opts.style is not None:
        # The even blend (or `lean_from`) read beside the clip, pushed away from: see SamplingOptions.style_strength.
        step_lean = _partner(model, params, Towards(style=opts.lean_from, weight=-float(opts.style_strength)), B, rows,
                             prefix_at, bar, precision, use_native, logits)
    inv_temperature = np.float32(1.0 / float(opts.temperature))
    out = np.full((B, opts.max_events), PAD_ID, dtype=np.int64)
    done = np.zeros(B, dtype=bool)
    if opts.max_steps is not None:
        done |= tracker.elapsed >= opts.max_steps
    make_pick = _native_pick if use_native else _python_pick
    pick = make_pick(logits, ids, tracker, opts, inv_temperature, out, done)
    if model_start or open_on_note:  # the clip opens on a note: its first event is one of the model's NOTE_ONs
        logits[:, NOTE_OFF_OFFSET:] = NEG_INF
    for t in range(0 if done.all() else opts.max_events):
        if t % UNIFORM_BLOCK == 0:
            uniforms = torch.rand(UNIFORM_BLOCK, B, generator=gen, dtype=torch.float64)
        pick(t, uniforms[t % UNIFORM_BLOCK])
        if done.all() or t == opts.max_events - 1:
            break  # no step for logits nobody samples from
        at = clip_positions()
        stepper.step(ids, at)
        if step_partner is not None:
            step_partner(ids, at)
        if step_lean is not None:
            step_lean(ids, at)
    result = []
    for b in range(B):
        row = out[b]
        result.append(row[row != PAD_ID] if warm_only else np.concatenate([prefix[b], row[row != PAD_ID]]))
    return result


def _prefix(opts: SamplingOptions, params: EventParams,
            gen: torch.Generator) -> tuple[np.ndarray | list[np.ndarray], bool, bool]:
    """(prefix: the ids the sampler reads before the clip's first draw, (B, P) or, for contexts of
    their own, one array per file; has a context; model start).

    A primer is shared by every file, a context too unless each file has its own (a list); a model
    start is one neutral input, read but not written or timed (see the module docstring); the seed's
    start is a first NOTE_ON per file."""
    B = opts.num
    has_context = _has_context(opts.context, B)
    has_primer = opts.primer is not None and len(opts.primer) > 0
    if has_context and has_primer:
        raise ValueError("a context and a primer exclude each other")
    model_start = not (has_context or has_primer) and opts.start == "model"
    if has_context and isinstance(opts.context, list):
        prefix = [np.asarray(c, dtype=np.int64) for c in opts.context]
    elif has_context:
        prefix = np.broadcast_to(np.asarray(opts.context, dtype=np.int64), (B, len(opts.context)))
    elif has_primer:
        prefix = np.broadcast_to(np.asarray(opts.primer, dtype=np.int64), (B, len(opts.primer)))
    elif model_start:
        prefix = np.full((B, 1), neutral_start(params), dtype=np.int64)
    else:
        low, high = opts.note_range or (36, 99)
        starts = opts.start_pitches or torch.randint(low, high + 1, (B,), generator=gen).tolist()
        prefix = np.asarray([[NOTE_ON_OFFSET + int(p)] for p in starts], dtype=np.int64)
    return prefix, has_context, model_start


def _has_context(context, batch: int) -> bool:  # noqa: ANN001
    """Whether a context is given: one array for every file, or a list of one non-empty array per file."""
    if isinstance(context, list):
        if len(context) != batch or not all(len(c) for c in context):
            raise ValueError(f"a context per file needs {batch} non-empty id arrays, got {len(context)}")
        return True
    return context is not None and len(context) > 0


def _rows(prefix: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    """Each file's prefix; a shared one is the same array for every file (warmed once)."""
    if isinstance(prefix, list):
        return prefix
    if prefix.strides[0] == 0:  # broadcast: every row is the first
        return [prefix[0]] * prefix.shape[0]
    return list(prefix)


def _per_file(value, batch: int) -> list[int]:  # noqa: ANN001
    """An int shared by every file, or one per file, as a list of `batch` ints."""
    values = [int(v) for v in value] if isinstance(value, (list, tuple, np.ndarray)) else [int(value)] * batch
    if len(values) != batch:
        raise ValueError(f"a context start per file needs {batch} of them, got {len(values)}")
    return values


def _positions(rows: list[np.ndarray], starts: list[int], params: EventParams, bar: int) -> list[np.ndarray]:
    """Each file's prefix's bar positions (computed once per distinct prefix and start)."""
    done: dict[tuple[int, int], np.ndarray] = {}
    return [done.setdefault((id(r), s), bar_positions(r, params, bar, s)) for r, s in zip(rows, starts)]


def _partner(model: EventLSTM, params: EventParams, towards: Towards, B: int, rows: list[np.ndarray],  # noqa: ANN202
             rows_at: list[np.ndarray] | None, bar: int | None, precision: str, use_native: bool, logits: np.ndarray):
    """`Towards`: a second state warmed by its own context (or the clip's prefix), and the step
    that mixes its next-event logits into `logits` (B, V) in place; the mix of the first step is done.
    A geometric weight below 0 pushes away from the partner (`SamplingOptions.style_strength`)."""
    own, own_at = rows, rows_at
    if _has_context(towards.context, B):
        own = ([np.asarray(c, dtype=np.int64) for c in towards.context] if isinstance(towards.context, list)
               else [np.asarray(towards.context, dtype=np.int64)] * B)
        own_at = None if bar is None else _positions(own, _per_file(towards.context_start, B), params, bar)
    partner = _warmed(model, towards.style, own, B, precision, use_native, own_at)
    partner_logits = torch.from_numpy(logits)
    weight = float(towards.weight)
    if towards.mix not in MIXES:
        raise ValueError(f"mix={towards.mix!r}: use one of {', '.join(MIXES)}")
    arithmetic = towards.mix == "arithmetic" and 0.0 < weight < 1.0
    log_a, log_b = (float(np.log1p(-weight)), float(np.log(weight))) if arithmetic else (0.0, 0.0)

    def step_partner(step_ids: torch.Tensor, step_positions: torch.Tensor | None) -> None:
        other = partner.step(step_ids, step_positions)
        if arithmetic:  # log((1-w) softmax(a) + w softmax(b))
            torch.logaddexp(torch.log_softmax(partner_logits, -1).add_(log_a),
                            torch.log_softmax(other, -1).add_(log_b), out=partner_logits)
        else:  # geometric, and either end of either mix: exactly one stream's logits at w = 0 or 1
            partner_logits.mul_(1.0 - weight).add_(other, alpha=weight)

    step_partner(torch.as_tensor(np.array([o[-1] for o in own], dtype=np.int64)),
                 None if own_at is None else torch.as_tensor(np.array([at[-1] for at in own_at], dtype=np.int64)))
    return step_partner


def _bar_steps(model: EventLSTM, params: EventParams, opts: SamplingOptions) -> int | None:
    """The clip's bar in steps for a position-aware model (checked against it); None for a model without positions."""
    if not model.positioned:
        return None
    mismatch = model.config.tokenizer_mismatch(params)
    if mismatch:
        raise ValueError(f"this model cannot read these tokens: {mismatch}")
    if opts.bar_beats > model.config.position_bar_beats:
        raise ValueError(f"bar_beats={opts.bar_beats}: this model knows bars of up to "
                         f"{model.config.position_bar_beats} beats")
    return opts.bar_beats * params.grid


def _warmed(model: EventLSTM, style: torch.Tensor | None, rows: list[np.ndarray], batch: int, precision: str,
            native: bool, positions: list[np.ndarray] | None = None) -> StepLSTM:
    """A StepLSTM whose state has read all of each file's prefix (`rows`) but its last event (the
    first step's input).

    A prefix goes through nn.LSTM once, as one sequence, however many files share it (a shared
    one is the same array in every row); files with prefixes of their own (the clip so far of each
    file of a formed batch) are warmed one prefix at a time and stepped together. `positions`: each
    prefix's bar positions, for a position-aware model."""
    stepper = StepLSTM(model, style, batch, precision, native=native)
    distinct = {id(r): i for i, r in enumerate(rows)}  # each distinct prefix -> a row that holds it
    if max(len(r) for r in rows) <= 1:
        return stepper  # nothing to read before the first step
    seq_style = style.expand(1, -1) if style is not None else None
    states = {}
    with torch.no_grad():
        for key, i in distinct.items():
            if len(rows[i]) > 1:
                seq_at = None if positions is None else torch.as_tensor(
                    np.array(positions[i][None, :-1], dtype=np.int64))
                ids = torch.as_tensor(np.array(rows[i][None, :-1], dtype=np.int64))
                states[key] = model.lstm(model.embed(ids, seq_style, seq_at))[1]
    if len(distinct) == 1:
        h, c = states[next(iter(distinct))]
    else:
        zero = torch.zeros_like(next(iter(states.values()))[0])
        h = torch.cat([states[id(r)][0] if id(r) in states else zero for r in rows], dim=1)
        c = torch.cat([states[id(r)][1] if id(r) in states else zero for r in rows], dim=1)
    stepper.set_state(h, c)
    return stepper


# A pick turns step t's logits (masked in place) and one uniform number per file into the
# sampled ids: written to out[:, t] and to `ids` (the next step's input), with the tracker
# and `done` updated.


def _python_pick(logits: np.ndarray, ids: torch.Tensor, tracker: _Tracker, opts: SamplingOptions,
                 inv_temperature: np.float32, out: np.ndarray, done: np.ndarray):  # noqa: ANN202
    """The reference: controls, filters and draw in numpy."""
    ids_np = ids.numpy()
    notes = slice(0, TIME_SHIFT_OFFSET)  # the ids `tracker.blocked` covers
    on_sl, off_sl = slice(NOTE_ON_OFFSET, NOTE_OFF_OFFSET), slice(NOTE_OFF_OFFSET, TIME_SHIFT_OFFSET)

    def pick(t: int, uniform: torch.Tensor) -> None:
        if inv_temperature != 1:
            logits[:] *= inv_temperature
        np.copyto(logits[:, notes], NEG_INF, where=tracker.blocked)  # PAD, key, range, grammar
        if tracker.grid is not None:
            off_grid = tracker.off_grid()
            np.copyto(logits[:, TIME_SHIFT_OFFSET:], NEG_INF, where=off_grid[:, 1:])
            logits[off_grid[:, 0], on_sl] = NEG_INF
        if tracker.voices is not None:
            logits[tracker.full(), on_sl] = NEG_INF
        if tracker.penalty > 0:
            logits[:, on_sl] -= tracker.penalties()
        if tracker.max_note is not None:
            overdue = tracker.overdue()
            if overdue.any():  # such a file may only end its overdue notes
                rows = overdue.any(1)
                logits[rows] = NEG_INF
                logits[rows, off_sl] = np.where(overdue[rows], 0.0, NEG_INF)
        weights = _weights(logits)  # (B, V)
        _top_k(weights, opts.top_k)
        _top_p(weights, opts.top_p)
        tok = _draw(weights, uniform.numpy())
        tok[done] = PAD_ID
        out[:, t] = tok
        tracker.update(tok)
        if opts.max_steps is not None:
            done[:] |= tracker.elapsed >= opts.max_steps
        ids_np[:] = tok

    return pick


def _native_pick(logits: np.ndarray, ids: torch.Tensor, tracker: _Tracker, opts: SamplingOptions,
                 inv_temperature: np.float32, out: np.ndarray, done: np.ndarray):  # noqa: ANN202
    """The same in one `midigen::choose_` call, in place on the tracker's arrays (shared, not copied).

    The kernel keeps the ring cursor in a one-element tensor; `tracker.cursor` is its start value.
    """
    choose = torch.ops.midigen.choose_
    blocked, counts, recent, deadline, elapsed, out_of_key, done_t, out_t, logits_t = (
        torch.from_numpy(a) for a in (tracker.blocked, tracker.counts, tracker.recent, tracker.deadline,
                                      tracker.elapsed, tracker.out_of_key, done, out, logits))
    cursor = torch.tensor([tracker.cursor], dtype=torch.int64)
    max_note = -1 if tracker.max_note is None else int(tracker.max_note)
    max_steps = -1 if opts.max_steps is None else int(opts.max_steps)
    voices = -1 if tracker.voices is None else int(tracker.voices)
    penalty, top_k, top_p, inv_t = float(tracker.penalty), int(opts.top_k), float(opts.top_p), float(inv_temperature)
    grid = None if tracker.grid is None else torch.from_numpy(np.ascontiguousarray(tracker.grid))
    grid_phase = None if tracker.grid is None else torch.from_numpy(  # (B,): where each file's step 0 lies in a beat
        np.array(np.broadcast_to(np.asarray(tracker.grid_phase, dtype=np.int64), tracker.elapsed.shape)))

    def pick(t: int, uniform: torch.Tensor) -> None:
        choose(logits_t, inv_t, blocked, penalty, counts, recent, cursor, max_note, deadline, elapsed, out_of_key,
               voices, top_k, top_p, uniform, done_t, max_steps, out_t, t, ids, grid, grid_phase)

    return pick
