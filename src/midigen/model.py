"""The network: a stacked LSTM that predicts the next event, optionally style-conditioned.

All forward-pass code of the model lives here (plain torch, no Lightning), so training,
the producer's sampler and the MLflow pyfunc share one definition.
Not for: training (`midigen.train.module`) or the sampling loop (`midigen.producer.sampling`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    """Hyper-parameters of `EventLSTM` (conf/model/*.yaml).

    input: "onehot" (the seed: each event a one-hot vector of vocab_size) or "embedding".
    styles: the style names the model knows, in label order; empty = unconditioned.
    """

    vocab_size: int = 382
    hidden_size: int = 512
    num_layers: int = 3
    dropout: float = 0.0
    input: str = "embedding"
    embedding_dim: int = 256
    styles: list[str] = field(default_factory=list)
    style_dim: int = 16

    def __post_init__(self) -> None:
        if self.input not in ("onehot", "embedding"):
            raise ValueError(f"model.input={self.input!r}: use 'onehot' or 'embedding'")
        self.styles = list(self.styles)

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

    def embed(self, ids: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        B, T = ids.shape
        x = F.embedding(ids, self.onehot) if self.config.input == "onehot" else self.embedding(ids)  # (B, T, E)
        sv = self.style_vector(style, B)
        if sv is not None:
            x = torch.cat([x, sv.unsqueeze(1).expand(B, T, sv.shape[-1])], dim=-1)  # (B, T, E + D)
        return x

    def forward(self, ids: torch.Tensor, style: torch.Tensor | None = None,
                state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V) and the LSTM state after the last step."""
        out, state = self.lstm(self.embed(ids, style), state)  # (B, T, H)
        return self.head(out), state  # (B, T, V)
