"""The network: a stacked LSTM that predicts the next event, optionally style-conditioned.

All forward-pass code of the model lives here (plain torch, no Lightning), so training,
the producer's sampler and the MLflow pyfunc share one definition: `EventLSTM`, the network
that reads whole sequences (training, primers), and `StepLSTM`, the same network unrolled one
event at a time for sampling (inference only; equal to `EventLSTM` step by step in fp32).
Not for: training (`midigen.train.module`), the sampling loop and its musical controls
(`midigen.producer.sampling`), or the compiled kernels `StepLSTM(native=True)` calls
(`midigen.producer.native` builds and loads them).
"""

from __future__ import annotations

import functools
import os
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from midigen.errors import MidigenError


POSITIONS = ("none", "beat")  # what `ModelConfig.position` may be


@dataclass
class ModelConfig:
    """Hyper-parameters of `EventLSTM` (conf/model/*.yaml).

    input: "onehot" (the seed: each event a one-hot vector of vocab_size) or "embedding".
    styles: the style names the model knows, in label order; empty = unconditioned.
    position: "none" (each input is the event alone, plus the style) or "beat": each input also
        carries where the music stands in its bar once that event is read (the time at which the
        next event happens), as two embeddings of `position_dim`: the step within the beat
        (0..position_grid-1) and the beat within the bar (0..position_bar_beats-1; later beats
        of a longer bar share the last). Positions come in as steps since the last bar line
        (`midigen.data.events.bar_positions`), so they need the beat tokenizer, whose grid
        `position_grid` must be. Time in the events is only relative shifts: without this, a
        model must guess where the beat is, and in dense music loses it.
    """

    vocab_size: int = 382
    hidden_size: int = 512
    num_layers: int = 3
    dropout: float = 0.0
    input: str = "embedding"
    embedding_dim: int = 256
    styles: list[str] = field(default_factory=list)
    style_dim: int = 16
    position: str = "none"
    position_dim: int = 8
    position_grid: int = 12
    position_bar_beats: int = 8

    def __post_init__(self) -> None:
        if self.input not in ("onehot", "embedding"):
            raise ValueError(f"model.input={self.input!r}: use 'onehot' or 'embedding'")
        if self.position not in POSITIONS:
            raise ValueError(f"model.position={self.position!r}: use one of {', '.join(POSITIONS)}")
        for name in ("position_dim", "position_grid", "position_bar_beats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name}={value!r}: use a whole number, at least 1")
        self.styles = list(self.styles)

    def tokenizer_mismatch(self, params) -> str | None:  # noqa: ANN001 - an EventParams (data is above this module)
        """Why this model cannot read the tokens `params` describe, in words; None when it can."""
        if self.position == "none":
            return None
        if params.mode != "beat":
            return f"position={self.position!r} counts beats, and {params.mode}-mode tokens have none"
        if params.grid != self.position_grid:
            return (f"its positions count 1/{self.position_grid} beats and the tokenizer's steps are "
                    f"1/{params.grid} beat")
        return None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, B, H)


class EventLSTM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        V, H = config.vocab_size, config.hidden_size
        if config.input == "onehot":
            # A frozen identity lookup is the one-hot vector without building a (B, T, V) tensor.
            self.register_buffer("onehot", torch.eye(V), persistent=False)
            in_dim = V
        else:
            self.embedding = nn.Embedding(V, config.embedding_dim)
            in_dim = config.embedding_dim
        self.num_styles = len(config.styles)
        if self.num_styles:
            self.style_embedding = nn.Embedding(self.num_styles, config.style_dim)
            in_dim += config.style_dim
        self.positioned = config.position == "beat"
        if self.positioned:
            self.step_in_beat_embedding = nn.Embedding(config.position_grid, config.position_dim)
            self.beat_in_bar_embedding = nn.Embedding(config.position_bar_beats, config.position_dim)
            in_dim += 2 * config.position_dim
        self.lstm = nn.LSTM(in_dim, H, num_layers=config.num_layers, batch_first=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.head = nn.Linear(H, V)

    def style_vector(self, style: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Style labels (B,) or mixing weights (B, S) -> (B, style_dim); None if unconditioned."""
        if not self.num_styles:
            return None
        if style is None:  # no preference: the even blend of every known style
            style = torch.full((batch, self.num_styles), 1.0 / self.num_styles,
                               device=self.head.weight.device)
        if style.dim() == 1:
            return self.style_embedding(style)  # (B, D)
        weights = style / style.sum(-1, keepdim=True)
        return weights @ self.style_embedding.weight  # (B, S) @ (S, D) -> (B, D)

    def position_index(self, positions: torch.Tensor) -> torch.Tensor:
        """Steps since the bar line -> a row of the (position_grid * position_bar_beats) position grid:
        the same step of the same beat, with the beats past the last one folded onto it."""
        G, M = self.config.position_grid, self.config.position_bar_beats
        return torch.where(positions < G * M, positions, (M - 1) * G + positions % G)

    def embed(self, ids: torch.Tensor, style: torch.Tensor | None,
              positions: torch.Tensor | None = None) -> torch.Tensor:
        B, T = ids.shape
        x = F.embedding(ids, self.onehot) if self.config.input == "onehot" else self.embedding(ids)  # (B, T, E)
        sv = self.style_vector(style, B)
        if sv is not None:
            x = torch.cat([x, sv.unsqueeze(1).expand(B, T, sv.shape[-1])], dim=-1)  # (B, T, E + D)
        if self.positioned:
            if positions is None or positions.shape != ids.shape:
                raise ValueError("a model with position='beat' reads each event with its position: pass positions "
                                 "(B, T), the steps since the bar line after each event "
                                 "(midigen.data.events.bar_positions)")
            flat = self.position_index(positions)
            G = self.config.position_grid
            x = torch.cat([x, self.step_in_beat_embedding(flat % G), self.beat_in_bar_embedding(flat // G)],
                          dim=-1)  # (B, T, E + D + 2P)
        return x

    def forward(self, ids: torch.Tensor, style: torch.Tensor | None = None, state: State | None = None,
                positions: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V) and the LSTM state after the last step.

        positions (B, T), int: with position="beat", the steps since the last bar line once each
        event is read (ignored otherwise); a window cut from inside a file counts from the file's
        bar lines, not from the window's start."""
        out, state = self.lstm(self.embed(ids, style, positions), state)  # (B, T, H)
        return self.head(out), state  # (B, T, V)


# --- one step at a time (sampling) ----------------------------------------------------------

PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (x86 avx512_bf16 or AMX; read from Linux's flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """"auto" -> $MIDIGEN_PRECISION where set (fp32 or bf16), else "bf16" on CPUs with native
    bfloat16 and "fp32" elsewhere; checks the name. bf16 rounding differs between CPUs, so a seed
    draws other clips on another machine; MIDIGEN_PRECISION=fp32 draws the same clips wherever
    float32 rounds alike (at about 1.5x the sampling time where bf16 is native)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        chosen = os.environ.get("MIDIGEN_PRECISION", "").strip()
        if chosen:
            if chosen not in PRECISIONS[1:]:
                raise MidigenError(f"MIDIGEN_PRECISION={chosen}: use fp32 or bf16 (or unset it for the CPU's best)")
            return chosen
        return "bf16" if native_bf16() else "fp32"
    return precision


class _Linear:
    """x (B, K) -> x @ W.T (+ bias), W (N, K) held prepacked for oneDNN where this torch has it.

    At B = 8 the matmul streams W once, and oneDNN with a prepacked W does that about twice
    as fast as torch.mm (MKL) on some CPUs (AMD EPYC: 140 vs 310 us for 860 x 1720 in fp32).
    `torch.ops.mkldnn._linear_pointwise` is what torch.compile itself calls on CPU; where it
    is missing or refuses the weight, this falls back to torch.mm.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, batch: int, dtype: torch.dtype):
        weight = weight.detach().to(dtype).contiguous()
        self.bias = None if bias is None else bias.detach().to(dtype).contiguous()
        self.packed = None
        if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            try:
                packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch)
                probe = torch.ops.mkldnn._linear_pointwise(torch.zeros(batch, weight.shape[1], dtype=dtype), packed,
                                                           self.bias, "none", [], "")
                if probe.shape == (batch, weight.shape[0]):
                    self.packed = packed
            except (RuntimeError, AttributeError):
                pass
        self.weight_t = weight.T.contiguous() if self.packed is None else None  # (K, N)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        if self.bias is None:
            return torch.mm(x, self.weight_t)
        return torch.addmm(self.bias, x, self.weight_t)


class _StepWeights:
    """StepLSTM's weights, prepared from a model's: gate rows reordered and scaled, the first
    layer's input projection as a table, matmul weights in the step's precision and prepacked.

    Preparing them costs ~10 ms on the seed-size model (more than a tenth of a sample() call),
    so the last preparation per model is kept and reused while the model's parameters are the
    same tensors, unmodified: their version counters catch in-place updates (an optimizer
    step, `load_state_dict`, `p.add_()` under no_grad). Writes that bypass them (through
    `p.data` or a numpy view) are not seen: call `forget_prepared(model)` after such a write.
    """

    _cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model: EventLSTM, batch: int, bf16: bool) -> _StepWeights:
        key = (batch, bf16, tuple((p.data_ptr(), p._version) for p in model.parameters()))
        hit = cls._cache.get(model)
        if hit is not None and hit[0] == key:
            return hit[1]
        weights = cls(model, batch, bf16)
        cls._cache[model] = (key, weights)
        return weights

    def __init__(self, model: EventLSTM, batch: int, bf16: bool):
        lstm, cfg = model.lstm, model.config
        L, H, V = cfg.num_layers, cfg.hidden_size, cfg.vocab_size
        wdt = torch.bfloat16 if bf16 else torch.float32
        # PyTorch's gate order is (i, f, g, o); (i, f, o, g) puts the sigmoid gates first, and g,
        # doubled, is sigmoid(2 x_g) from the same call.
        order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
        scale_x = torch.ones(4 * H)
        scale_x[3 * H:] = 2.0
        scale_h = 2.0 * scale_x  # and the weights that read the stored h/2 are doubled

        def rows(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            """(4H, ...) in PyTorch's gate order -> ours, row r times scale[r]; a new fp32 tensor."""
            return w.detach().float().index_select(0, order).mul_(scale.view(-1, *[1] * (w.dim() - 1)))

        with torch.no_grad():
            w0 = rows(lstm.weight_ih_l0, scale_x)  # (4H, E [+ D])
            self.bias0 = rows(lstm.bias_ih_l0 + lstm.bias_hh_l0, scale_x)
            E = V if cfg.input == "onehot" else model.embedding.weight.shape[1]
            # A one-hot row times W_ih is a column of W_ih; an embedding row times W_ih is a matmul.
            table = w0[:, :E].T if cfg.input == "onehot" else model.embedding.weight.float() @ w0[:, :E].T  # (V, 4H)
            styled = bool(model.num_styles)
            D = cfg.style_dim if styled else 0
            # Without styles or positions the first layer's bias is folded into the table; with them
            # it goes into each sample()'s style-dependent row bias (and each step's position rows).
            folded = not (styled or model.positioned)
            self.table = (table + self.bias0 if folded else table).contiguous()  # (V, 4H)
            self.style_t = w0[:, E:E + D].T.contiguous() if styled else None  # (S', 4H)
            self.position_table = None
            if model.positioned:
                # A position's input is [step-in-beat | beat-in-bar] embeddings: its gates are one row per
                # (beat, step) pair of the position grid, in `EventLSTM.position_index`'s order.
                G, P = cfg.position_grid, cfg.position_dim
                in_beat = model.step_in_beat_embedding.weight.float() @ w0[:, E + D:E + D + P].T  # (G, 4H)
                in_bar = model.beat_in_bar_embedding.weight.float() @ w0[:, E + D + P:].T  # (M, 4H)
                grid = torch.arange(G * cfg.position_bar_beats)
                self.position_table = (in_beat[grid % G] + in_bar[grid // G]).contiguous()  # (G * M, 4H)
            # In bf16 the biases are added in fp32, after the matmul.
            self.hh0 = _Linear(rows(lstm.weight_hh_l0, scale_h), None, batch, wdt)  # H -> 4H
            self.upper, self.bias = [], []
            for i in range(1, L):
                w = torch.cat([getattr(lstm, f"weight_ih_l{i}"), getattr(lstm, f"weight_hh_l{i}")], 1)
                b = rows(getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}"), scale_x)
                self.upper.append(_Linear(rows(w, scale_h), None if bf16 else b, batch, wdt))  # 2H -> 4H
                self.bias.append(b)
            head_b = model.head.bias.detach().float()
            self.head = _Linear(2.0 * model.head.weight.detach().float(), None if bf16 else head_b, batch, wdt)
            self.head_b = head_b.clone()


def forget_prepared(model: EventLSTM) -> None:
    """Drop the step weights prepared for `model` (after writing its weights through `.data`)."""
    _StepWeights._cache.pop(model, None)


class StepLSTM:
    """A stacked LSTM unrolled one step at a time from `EventLSTM`'s weights (inference only).

    Equal to `nn.LSTM` step by step in fp32 (to float rounding); faster on CPU because the
    first layer's input projection is a gathered row of a precomputed (V, 4H) table, the
    weights are prepacked (`_Linear`), a step allocates little, and every nonlinearity is
    one sigmoid: with tanh(x) = 2 sigmoid(2x) - 1 the g-gate rows are doubled and the state
    is kept as h/2 and 2c (the weights that read h are doubled instead; powers of two scale
    floats exactly), because torch's CPU tanh costs five sigmoids. `precision="bf16"` keeps
    the matmul weights and h in bfloat16 (gates, cell state and logits stay fp32). `step`
    returns a buffer that the next step overwrites. `native=True` runs each layer's cell
    (everything between two matmuls) as one call of the compiled `midigen::lstm_cell_`.
    A position-aware model's position enters the first layer as one more row per step,
    gathered from a precomputed (grid positions, 4H) table into the per-file row bias.
    """

    def __init__(self, model: EventLSTM, style: torch.Tensor | None, batch: int, precision: str = "fp32",
                 native: bool = False):
        precision = resolve_precision(precision)
        if native and not hasattr(torch.ops.midigen, "lstm_cell_"):
            raise RuntimeError("the native sampling kernels are not loaded: run `midigen kernels build`")
        self.native = native
        cfg = model.config
        L, H, V = cfg.num_layers, cfg.hidden_size, cfg.vocab_size
        self.L, self.H, self.batch = L, H, batch
        self.bf16 = precision == "bf16"
        wdt = torch.bfloat16 if self.bf16 else torch.float32
        w = _StepWeights.of(model, batch, self.bf16)
        self.table, self.hh0, self.upper, self.bias, self.head, self.head_b = (
            w.table, w.hh0, w.upper, w.bias, w.head, w.head_b)
        with torch.no_grad():
            sv = model.style_vector(style.expand(batch, -1) if style is not None else None, batch)
        self.row_bias = None if sv is None else (w.bias0 + sv.float() @ w.style_t).contiguous()  # (B, 4H)
        B = batch
        self.position_table = w.position_table  # (G * M, 4H) or None
        if self.position_table is not None:
            if self.row_bias is None:
                self.row_bias = w.bias0.expand(B, -1).contiguous()  # (B, 4H)
            self.row_bias_step = torch.empty(B, 4 * H)  # row_bias + this step's position rows
        # Layer i >= 1 reads [h_{i-1} | h_i] as one contiguous (B, 2H) input; each new h/2 is
        # computed into `h[i]` and copied to where the next layer and the next step read it.
        self.h = [torch.zeros(B, H, dtype=wdt) for _ in range(L)]  # h/2
        self.xh = [None] + [torch.zeros(B, 2 * H, dtype=wdt) for _ in range(1, L)]
        self.c = [torch.zeros(B, H) for _ in range(L)]  # 2c
        self.gates = torch.empty(B, 4 * H)
        self.tanh_c = torch.empty(B, H)
        self.logits = torch.empty(B, V)
        self._i, self._f, self._o, self._g = (self.gates[:, k * H:(k + 1) * H] for k in range(4))

    def set_state(self, h: torch.Tensor, c: torch.Tensor) -> None:
        """Start from nn.LSTM's state: h and c (num_layers, 1 or B, H)."""
        H = self.H
        for i in range(self.L):
            self.h[i].copy_(0.5 * h[i].expand(self.batch, -1))
            self.c[i].copy_(2.0 * c[i].expand(self.batch, -1))
            if i >= 1:
                self.xh[i][:, H:].copy_(self.h[i])

    def _cell(self, i: int) -> None:
        """Sigmoid of the gates (in `self.gates`) -> this layer's new 2c and h/2, passed on."""
        c2 = self.c[i]
        c2.mul_(self._f).addcmul_(self._i, self._g, value=4.0).add_(self._i, alpha=-2.0)  # 2(f c + i tanh(x_g))
        torch.sigmoid(c2, out=self.tanh_c).sub_(0.5)  # sigmoid(2c) - 1/2 = tanh(c)/2
        h = torch.mul(self._o, self.tanh_c, out=self.h[i])  # h/2 = o tanh(c)/2
        if i >= 1:
            self.xh[i][:, self.H:].copy_(h)  # this layer's input at the next step
        if i + 1 < self.L:
            self.xh[i + 1][:, :self.H].copy_(h)  # the next layer's input now

    def _row_bias(self, positions: torch.Tensor | None) -> torch.Tensor | None:
        """This step's first-layer row bias (B, 4H): the style's, plus the position's rows."""
        if self.position_table is None:
            return self.row_bias
        if positions is None:
            raise ValueError("a model with position='beat' steps with positions: pass each file's steps since "
                             "the bar line once this step's event is read")
        torch.index_select(self.position_table, 0, positions, out=self.row_bias_step)
        return self.row_bias_step.add_(self.row_bias)

    def step(self, ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B,) int64 -> next-event logits (B, V), in a buffer the next call overwrites.

        positions (B,) int64, for a position-aware model: each file's steps since the bar line once
        `ids` is read, below position_grid * position_bar_beats (`EventLSTM.position_index` folds
        longer bars into that range)."""
        row_bias = self._row_bias(positions)
        if self.native:
            return self._step_native(ids, row_bias)
        gates = self.gates
        torch.index_select(self.table, 0, ids, out=gates)  # (B, 4H)
        if row_bias is not None:
            gates.add_(row_bias)
        gates.add_(self.hh0(self.h[0])).sigmoid_()
        self._cell(0)
        for i in range(1, self.L):
            pre = self.upper[i - 1](self.xh[i])  # (B, 4H)
            if self.bf16:
                torch.add(pre, self.bias[i - 1], out=gates).sigmoid_()
            else:
                torch.sigmoid(pre, out=gates)
            self._cell(i)
        return self._head()

    def _step_native(self, ids: torch.Tensor, row_bias: torch.Tensor | None) -> torch.Tensor:
        cell, L = torch.ops.midigen.lstm_cell_, self.L
        ids = ids.contiguous()  # the kernel reads (B,) int64 contiguous; a no-op for sample()'s buffer
        cell(self.hh0(self.h[0]), self.table, ids, row_bias, None, self.c[0], self.h[0],
             None, self.xh[1] if L > 1 else None)
        for i in range(1, L):
            cell(self.upper[i - 1](self.xh[i]), None, None, None, self.bias[i - 1] if self.bf16 else None,
                 self.c[i], self.h[i], self.xh[i], self.xh[i + 1] if i + 1 < L else None)
        return self._head()

    def _head(self) -> torch.Tensor:
        """The top layer's h/2 -> logits (B, V) in `self.logits` (bf16: the bias added in fp32)."""
        if self.bf16:
            return torch.add(self.head(self.h[-1]), self.head_b, out=self.logits)
        return self.logits.copy_(self.head(self.h[-1]))
