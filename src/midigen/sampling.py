"""Autoregressive sampling of event sequences, batched and stateful.

The sampler never re-feeds the growing prefix (the seed's loop did): it carries each
layer's (h, c) from step to step, samples all files as one batch, and turns the first
layer's input projection into a table lookup (one-hot or embedding, plus the style
vector, times W_ih is the same for every step), so a step is one small matmul per layer.

Musical controls act on the logits before sampling: temperature, top-k, top-p, a key
(NOTE_ON restricted to the scale), an anti-stuck repetition penalty on recently played
pitches, a cap on how long a note may sound, and grammar masks (NOTE_OFF only for a
sounding pitch, NOTE_ON only for a silent one). Producer path: plain torch, no Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from midigen.events import NOTE_OFF_OFFSET, NOTE_ON_OFFSET, NUM_PITCHES, PAD_ID, TIME_SHIFT_OFFSET, EventParams
from midigen.model import EventLSTM

NEG_INF = float("-inf")


@dataclass
class SamplingOptions:
    """What to sample. Times are in event steps (see `midigen.events`).

    max_events: events generated per file after the primer/start note (a cap).
    max_steps: stop a file once its clip reaches this length in steps (None: no limit).
    scale: allowed pitch classes (0 = C) for NOTE_ON, or None for all.
    repetition_penalty: logit penalty per occurrence of a pitch among the last
        `repetition_window` NOTE_ONs (0 disables); the producer's "gets stuck on notes".
    max_note_steps: a note sounding this long is ended before anything else happens.
    start_pitches: the first NOTE_ON of each file (ignored when `primer` is given).
    primer: token ids every file starts with, kept verbatim.
    style: (S,) mixing weights over the model's styles, or None for their even blend.
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


class StepLSTM:
    """A stacked LSTM unrolled one step at a time from `EventLSTM`'s weights (inference only).

    Equal to `nn.LSTM` step by step; faster on CPU because the first layer's input
    projection is a gathered row of a precomputed (V, 4H) table.
    """

    def __init__(self, model: EventLSTM, style: torch.Tensor | None, batch: int):
        lstm, cfg = model.lstm, model.config
        self.L, self.H = cfg.num_layers, cfg.hidden_size
        with torch.no_grad():
            if cfg.input == "onehot":
                token_in = torch.eye(cfg.vocab_size)
            else:
                token_in = model.embedding.weight  # (V, E)
            w0 = lstm.weight_ih_l0  # (4H, E [+ D])
            E = token_in.shape[1]
            bias0 = lstm.bias_ih_l0 + lstm.bias_hh_l0
            self.table = (token_in @ w0[:, :E].T).contiguous()  # (V, 4H)
            sv = model.style_vector(style.expand(batch, -1) if style is not None else None, batch)
            if sv is not None:
                self.bias0 = (bias0 + sv @ w0[:, E:].T).contiguous()  # (B, 4H)
            else:
                self.bias0 = bias0.expand(batch, -1).contiguous()
            self.w_hh0 = lstm.weight_hh_l0.T.contiguous()  # (H, 4H)
            self.w_cat, self.bias = [], []
            for i in range(1, self.L):
                w = torch.cat([getattr(lstm, f"weight_ih_l{i}"), getattr(lstm, f"weight_hh_l{i}")], 1)
                self.w_cat.append(w.T.contiguous())  # (2H, 4H)
                self.bias.append(getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}"))
            self.head_w = model.head.weight.T.contiguous()  # (H, V)
            self.head_b = model.head.bias
        self.h = [torch.zeros(batch, self.H) for _ in range(self.L)]
        self.c = [torch.zeros(batch, self.H) for _ in range(self.L)]

    def _cell(self, i: int, gates: torch.Tensor) -> torch.Tensor:
        ig, fg, gg, og = gates.chunk(4, 1)  # PyTorch's gate order: input, forget, cell, output
        self.c[i] = torch.sigmoid(fg) * self.c[i] + torch.sigmoid(ig) * torch.tanh(gg)
        self.h[i] = torch.sigmoid(og) * torch.tanh(self.c[i])
        return self.h[i]

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B,) -> next-event logits (B, V)."""
        gates = torch.addmm(self.table[ids] + self.bias0, self.h[0], self.w_hh0)  # (B, 4H)
        x = self._cell(0, gates)
        for i in range(1, self.L):
            gates = torch.addmm(self.bias[i - 1], torch.cat([x, self.h[i]], 1), self.w_cat[i - 1])
            x = self._cell(i, gates)
        return torch.addmm(self.head_b, x, self.head_w)  # (B, V)


class _Tracker:
    """Per-file musical state during sampling, updated with tensor ops (no Python per file)."""

    def __init__(self, batch: int, params: EventParams, window: int):
        self.params = params
        self.sounding = torch.zeros(batch, NUM_PITCHES, dtype=torch.bool)
        self.onset = torch.zeros(batch, NUM_PITCHES, dtype=torch.long)
        self.elapsed = torch.zeros(batch, dtype=torch.long)
        self.recent = torch.full((batch, max(window, 1)), -1, dtype=torch.long)  # ring of recent NOTE_ON pitches
        self.cursor = 0
        self.rows = torch.arange(batch)

    def update(self, tok: torch.Tensor) -> None:
        is_on = (tok >= NOTE_ON_OFFSET) & (tok < NOTE_OFF_OFFSET)
        is_off = (tok >= NOTE_OFF_OFFSET) & (tok < TIME_SHIFT_OFFSET)
        is_shift = (tok >= TIME_SHIFT_OFFSET) & (tok < TIME_SHIFT_OFFSET + self.params.max_shift)
        self.elapsed += torch.where(is_shift, tok - TIME_SHIFT_OFFSET + 1, 0)
        on_p = (tok - NOTE_ON_OFFSET).clamp(0, NUM_PITCHES - 1)
        off_p = (tok - NOTE_OFF_OFFSET).clamp(0, NUM_PITCHES - 1)
        self.sounding[self.rows[is_off], off_p[is_off]] = False
        self.sounding[self.rows[is_on], on_p[is_on]] = True
        self.onset[self.rows[is_on], on_p[is_on]] = self.elapsed[is_on]
        self.recent[:, self.cursor] = torch.where(is_on, on_p, self.recent[:, self.cursor])
        self.cursor = (self.cursor + int(is_on.any())) % self.recent.shape[1]

    def recent_counts(self) -> torch.Tensor:
        counts = torch.zeros(self.sounding.shape, dtype=torch.float32)
        valid = self.recent >= 0
        counts.scatter_add_(1, self.recent.clamp(min=0), valid.float())
        return counts  # (B, 128)


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, NEG_INF)
        logits = torch.full_like(logits, NEG_INF).scatter(1, order, sorted_logits)
    return logits


@torch.inference_mode()
def sample(model: EventLSTM, params: EventParams, opts: SamplingOptions) -> list[np.ndarray]:
    """Sample `opts.num` event sequences; each starts with the primer (or its start NOTE_ON).

    Returns one int64 id array per file. Same model + options + seed = same ids.
    """
    model.eval()
    B, V = opts.num, params.vocab_size
    gen = torch.Generator().manual_seed(int(opts.seed))
    if opts.primer is not None and len(opts.primer):
        prefix = torch.as_tensor(np.asarray(opts.primer, dtype=np.int64)).expand(B, -1)
    else:
        starts = opts.start_pitches or torch.randint(36, 100, (B,), generator=gen).tolist()
        prefix = torch.as_tensor([[NOTE_ON_OFFSET + int(p)] for p in starts], dtype=torch.long)
    stepper = StepLSTM(model, opts.style, B)
    tracker = _Tracker(B, params, opts.repetition_window)
    for t in range(prefix.shape[1]):
        logits = stepper.step(prefix[:, t])
        tracker.update(prefix[:, t])

    # Static masks: PAD and ids past the vocabulary never sampled; NOTE_ONs outside the key.
    static = torch.zeros(V, dtype=torch.bool)
    static[PAD_ID] = True
    if opts.scale is not None:
        in_scale = torch.zeros(NUM_PITCHES, dtype=torch.bool)
        for pc in opts.scale:
            in_scale[pc % 12::12] = True
        static[NOTE_ON_OFFSET:NOTE_OFF_OFFSET] = ~in_scale
    static_bias = torch.zeros(V).masked_fill(static, NEG_INF)
    on_sl, off_sl = slice(NOTE_ON_OFFSET, NOTE_OFF_OFFSET), slice(NOTE_OFF_OFFSET, TIME_SHIFT_OFFSET)
    temperature = max(float(opts.temperature), 1e-6)

    out = torch.full((B, opts.max_events), PAD_ID, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    if opts.max_steps is not None:
        done |= tracker.elapsed >= opts.max_steps
    for t in range(opts.max_events):
        if bool(done.all()):
            break
        logits = logits / temperature + static_bias
        # Grammar: end only sounding notes, start only silent ones.
        logits[:, off_sl].masked_fill_(~tracker.sounding, NEG_INF)
        logits[:, on_sl].masked_fill_(tracker.sounding, NEG_INF)
        if opts.repetition_penalty > 0:
            logits[:, on_sl] -= opts.repetition_penalty * tracker.recent_counts()
        if opts.max_note_steps is not None:
            overdue = tracker.sounding & (tracker.elapsed[:, None] - tracker.onset >= opts.max_note_steps)
            rows = overdue.any(1)
            if bool(rows.any()):
                forced = torch.full((int(rows.sum()), V), NEG_INF)
                forced[:, off_sl] = torch.where(overdue[rows], 0.0, NEG_INF)
                logits[rows] = forced
        logits = _filter_top_k_top_p(logits, opts.top_k, opts.top_p)
        tok = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)[:, 0]
        tok = torch.where(done, PAD_ID, tok)
        out[:, t] = tok
        tracker.update(tok)
        if opts.max_steps is not None:
            done |= tracker.elapsed >= opts.max_steps
        logits = stepper.step(tok)
    prefix_np = prefix.numpy()
    result = []
    for b in range(B):
        ids = out[b].numpy()
        result.append(np.concatenate([prefix_np[b], ids[ids != PAD_ID]]))
    return result
