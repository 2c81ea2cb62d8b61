"""Autoregressive sampling of event sequences, batched and stateful.

The sampler never re-feeds the growing prefix (the seed's loop did): it carries each
layer's (h, c) from step to step, samples all files as one batch, and turns the first
layer's input projection into a table lookup (one-hot or embedding, plus the style
vector, times W_ih is the same for every step), so a step is one small matmul per layer.

Musical controls act on the logits before sampling: temperature, top-k, top-p, a key
(NOTE_ON restricted to the scale), an anti-stuck repetition penalty on recently played
pitches, a cap on how long a note may sound, and grammar masks (NOTE_OFF only for a
sounding pitch, NOTE_ON only for a silent one). Producer path: plain torch, no Lightning.

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

from dataclasses import dataclass

import numpy as np
import torch

from midigen.data.events import NOTE_OFF_OFFSET, NOTE_ON_OFFSET, NUM_PITCHES, PAD_ID, TIME_SHIFT_OFFSET, EventParams
from midigen.producer import native as kernels
from midigen.model import EventLSTM, StepLSTM, resolve_precision

NEG_INF = float("-inf")
MIXES = ("geometric", "arithmetic")  # how `Towards` mixes two next-event distributions
UNIFORM_BLOCK = 64  # steps of random numbers drawn at once; fixed, so a seed always gives the same ids


@dataclass
class SamplingOptions:
    """What to sample. Times are in event steps (see `midigen.data.events`).

    max_events: events generated per file after the primer/start note (a cap).
    max_steps: stop a file once its clip reaches this length in steps (None: no limit).
    scale: allowed pitch classes (0 = C) for NOTE_ON, or None for all.
    repetition_penalty: logit penalty per occurrence of a pitch among the last
        `repetition_window` NOTE_ONs (0 disables); the producer's "gets stuck on notes".
    max_note_steps: a note sounding this long is ended before anything else happens.
    start_pitches: the first NOTE_ON of each file (ignored when `primer` is given).
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
    towards: a second conditioning the clip is drawn towards (see `Towards`).
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


@dataclass
class Towards:
    """A second conditioning that a clip is drawn towards (`midigen interpolate`).

    A second copy of the model's state runs beside the first, warmed by its own `context`
    with its own `style`, and both read every sampled event. Each step samples from a mix of
    the two next-event distributions: `mix="geometric"`, p_A^(1-weight) * p_B^weight (the
    logits mixed: events both like), or `"arithmetic"`, (1-weight) p_A + weight p_B (each event
    from one or the other). Weight 0 is the first conditioning alone, 1 the second alone.
    """

    context: np.ndarray | None = None
    style: torch.Tensor | None = None
    weight: float = 0.5
    mix: str = "geometric"


class _Tracker:
    """Per-file musical state during sampling, in numpy arrays (no Python loop over files).

    `blocked` (B, 257) marks the ids 0..256 a file may not sample now: PAD always, NOTE_ONs
    outside the key, NOTE_ON of a sounding pitch and NOTE_OFF of a silent one. `recent` is
    a ring of the last NOTE_ON pitches shared by all files: its cursor moves on whenever any
    file plays a NOTE_ON, and a file that did not play keeps its old entry there.
    """

    NEVER = np.iinfo(np.int64).max

    def __init__(self, batch: int, params: EventParams, opts: SamplingOptions):
        ids = np.arange(params.vocab_size)
        self.is_on = (ids >= NOTE_ON_OFFSET) & (ids < NOTE_OFF_OFFSET)
        self.is_off = (ids >= NOTE_OFF_OFFSET) & (ids < TIME_SHIFT_OFFSET)
        self.shift_of = np.where(ids >= TIME_SHIFT_OFFSET, ids - TIME_SHIFT_OFFSET + 1, 0)
        self.out_of_key = np.zeros(NUM_PITCHES, dtype=bool)
        if opts.scale is not None:
            self.out_of_key[:] = True
            for pc in opts.scale:
                self.out_of_key[pc % 12::12] = False
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
    """Sample `opts.num` event sequences; each starts with the primer (or its start NOTE_ON).

    Returns one int64 id array per file. Same model + options + seed = same ids on a given
    machine (matmul rounding differs between CPUs and BLAS builds, and so can a rare draw).
    """
    model.eval()
    B, V = opts.num, params.vocab_size
    gen = torch.Generator().manual_seed(int(opts.seed))
    has_context = opts.context is not None and len(opts.context) > 0
    if has_context and opts.primer is not None and len(opts.primer):
        raise ValueError("a context and a primer exclude each other")
    if has_context:
        prefix = np.broadcast_to(np.asarray(opts.context, dtype=np.int64), (B, len(opts.context)))
    elif opts.primer is not None and len(opts.primer):
        prefix = np.broadcast_to(np.asarray(opts.primer, dtype=np.int64), (B, len(opts.primer)))
    else:
        starts = opts.start_pitches or torch.randint(36, 100, (B,), generator=gen).tolist()
        prefix = np.asarray([[NOTE_ON_OFFSET + int(p)] for p in starts], dtype=np.int64)
    use_native = kernels.resolve(opts.kernels)
    precision = resolve_precision(opts.precision)
    stepper = _warmed(model, opts.style, prefix[0], B, precision, use_native)
    tracker = _Tracker(B, params, opts)
    if not has_context:  # a context's notes are all closed: the clip starts with nothing sounding
        for t in range(prefix.shape[1]):
            tracker.update(prefix[:, t])
    ids = torch.as_tensor(prefix[:, -1].copy())  # (B,); each sampled id is written back into it
    logits = stepper.step(ids).numpy()  # (B, V), a view of the stepper's buffer: masked in place
    partner = None
    if opts.towards is not None:
        towards = opts.towards
        own = prefix[0] if towards.context is None or not len(towards.context) else np.asarray(towards.context)
        partner = _warmed(model, towards.style, own, B, precision, use_native)
        partner_logits = torch.from_numpy(logits)
        weight = float(towards.weight)
        if towards.mix not in MIXES:
            raise ValueError(f"mix={towards.mix!r}: use one of {', '.join(MIXES)}")
        arithmetic = towards.mix == "arithmetic" and 0.0 < weight < 1.0
        log_a, log_b = (float(np.log1p(-weight)), float(np.log(weight))) if arithmetic else (0.0, 0.0)

        def step_partner(step_ids: torch.Tensor) -> None:  # mixes into `logits` in place
            other = partner.step(step_ids)
            if arithmetic:  # log((1-w) softmax(a) + w softmax(b))
                torch.logaddexp(torch.log_softmax(partner_logits, -1).add_(log_a),
                                torch.log_softmax(other, -1).add_(log_b), out=partner_logits)
            else:  # geometric, and either end of either mix: exactly one stream's logits at w = 0 or 1
                partner_logits.mul_(1.0 - weight).add_(other, alpha=weight)

        step_partner(torch.as_tensor(np.full(B, own[-1], dtype=np.int64)))
    inv_temperature = np.float32(1.0 / max(float(opts.temperature), 1e-6))
    out = np.full((B, opts.max_events), PAD_ID, dtype=np.int64)
    done = np.zeros(B, dtype=bool)
    if opts.max_steps is not None:
        done |= tracker.elapsed >= opts.max_steps
    make_pick = _native_pick if use_native else _python_pick
    pick = make_pick(logits, ids, tracker, opts, inv_temperature, out, done)
    for t in range(0 if done.all() else opts.max_events):
        if t % UNIFORM_BLOCK == 0:
            uniforms = torch.rand(UNIFORM_BLOCK, B, generator=gen, dtype=torch.float64)
        pick(t, uniforms[t % UNIFORM_BLOCK])
        if done.all() or t == opts.max_events - 1:
            break  # no step for logits nobody samples from
        stepper.step(ids)
        if partner is not None:
            step_partner(ids)
    result = []
    for b in range(B):
        row = out[b]
        result.append(row[row != PAD_ID] if has_context else np.concatenate([prefix[b], row[row != PAD_ID]]))
    return result


def _warmed(model: EventLSTM, style: torch.Tensor | None, prefix: np.ndarray, batch: int, precision: str,
            native: bool) -> StepLSTM:
    """A StepLSTM whose state has read all of `prefix` but its last event (the first step's input).

    Every file shares the prefix: it goes through nn.LSTM once, as one sequence."""
    stepper = StepLSTM(model, style, batch, precision, native=native)
    if len(prefix) > 1:
        seq_style = style.expand(1, -1) if style is not None else None
        with torch.no_grad():
            _, (h, c) = model.lstm(model.embed(torch.as_tensor(np.array(prefix[None, :-1], dtype=np.int64)), seq_style))
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
        np.copyto(logits[:, notes], NEG_INF, where=tracker.blocked)  # PAD, key, grammar
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
    penalty, top_k, top_p, inv_t = float(tracker.penalty), int(opts.top_k), float(opts.top_p), float(inv_temperature)

    def pick(t: int, uniform: torch.Tensor) -> None:
        choose(logits_t, inv_t, blocked, penalty, counts, recent, cursor, max_note, deadline, elapsed, out_of_key,
               top_k, top_p, uniform, done_t, max_steps, out_t, t, ids)

    return pick
