"""Held-out NLL of whole files, teacher-forced: what a model makes of music it never trained on.

`model_nll` scores every event of every file but its first, each seeing its whole file before
it (NLL_CHUNK events per forward pass, the LSTM state carried from chunk to chunk), so the
figure does not depend on a window length; `files_nll` does it for files of a `TokenCorpus`
and also counts their notes, so that models with other vocabularies compare per note (the
style study, fine-tuning's forgetting check).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from midigen.data.events import NOTE_OFF_OFFSET, NOTE_ON_OFFSET, PAD_ID

NLL_CHUNK = 1024  # events per teacher-forced forward pass; the LSTM state carries across chunks
NLL_BATCH = 32  # files per forward pass


def count_notes(seqs: list[np.ndarray]) -> int:
    return int(sum(np.count_nonzero((s >= NOTE_ON_OFFSET) & (s < NOTE_OFF_OFFSET)) for s in seqs))


def model_nll(model, seqs: list[np.ndarray], style_weights, batch: int = NLL_BATCH,  # noqa: ANN001 - an EventLSTM
              bar_positions: list[np.ndarray] | None = None) -> tuple[float, int]:
    """(total NLL in nats, events predicted) of events 2..N of every sequence, teacher-forced.

    `style_weights`: (1, S) weights over the model's styles (None: unconditioned);
    `bar_positions`: each sequence's positions, for a position-aware model. Files go `batch` at
    a time, sorted by length and padded at their ends (padding is never a target, and comes
    after the file's last prediction, so it changes nothing)."""
    total, events = 0.0, 0
    order = [i for i in sorted(range(len(seqs)), key=lambda i: seqs[i].size) if seqs[i].size >= 2]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for first in range(0, len(order), batch):
            rows = order[first:first + batch]
            length = max(seqs[i].size for i in rows)
            ids = torch.full((len(rows), length), PAD_ID, dtype=torch.int64)  # (B, L)
            at = torch.zeros((len(rows), length), dtype=torch.int64)  # (B, L) bar positions
            targets = torch.full((len(rows), length - 1), -100, dtype=torch.int64)  # (B, L-1); -100: not scored
            for row, i in enumerate(rows):
                seq = seqs[i]
                ids[row, :seq.size] = torch.from_numpy(seq)
                targets[row, :seq.size - 1] = torch.from_numpy(seq[1:])
                if bar_positions is not None:
                    at[row, :seq.size] = torch.from_numpy(bar_positions[i])
            style = None if style_weights is None else style_weights.expand(len(rows), -1)  # (B, S)
            state = None
            for start in range(0, length - 1, NLL_CHUNK):
                chunk_targets = targets[:, start:start + NLL_CHUNK]  # (B, T')
                logits, state = model(ids[:, start:start + NLL_CHUNK], style, state,
                                      positions=at[:, start:start + NLL_CHUNK])  # (B, T, V), T' <= T
                logits = logits[:, :chunk_targets.shape[1]]
                total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk_targets.reshape(-1),
                                               ignore_index=-100, reduction="sum"))
            events += int((targets != -100).sum())
    model.train(was_training)
    return total, events


def files_nll(model, corpus, files: list[dict], style_weights) -> dict:  # noqa: ANN001 - EventLSTM, TokenCorpus
    """{"files", "notes", "events", "per_note", "per_event"} of `files` (entries of `corpus.files`),
    the model conditioned on `style_weights` ((1, S) or None); per_* None without a note."""
    seqs = [np.asarray(corpus.tokens[f["offset"]:f["offset"] + f["length"]], dtype=np.int64) for f in files]
    positions = None
    if corpus.positions is not None:
        positions = [np.asarray(corpus.positions[f["offset"]:f["offset"] + f["length"]], dtype=np.int64)
                     for f in files]
    total, events = model_nll(model, seqs, style_weights, bar_positions=positions)
    notes = count_notes(seqs)
    return {"files": len(files), "notes": notes, "events": events,
            "per_note": total / notes if notes else None, "per_event": total / events if events else None}
