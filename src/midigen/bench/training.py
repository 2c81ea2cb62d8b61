"""Row group `training`: a Lightning fit on the DataModule vs the seed's bare PyTorch loop, at the same batches."""

from __future__ import annotations

import statistics
import time
from pathlib import Path


from midigen.bench.core import Row, Sizes, best_of
from midigen.data.events import PAD_ID, EventParams


def sgemm_gflops(n: int, repeats: int = 5) -> float:
    """fp32 GFLOP/s of an n x n x n matmul: this run's estimate of the CPU's fp32 peak."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    fastest, _ = best_of(lambda: a @ b, repeats)  # the fastest run: the least disturbed by other work
    return 2 * n**3 / fastest / 1e9


def lstm_flops_per_event(vocab: int, hidden: int, layers: int) -> float:
    """Forward FLOPs per event of a one-hot stacked LSTM + linear head (matmuls only).

    Layer 0 multiplies the dense one-hot (V) and h (H) by 4H gates, the others [x, h] (2H);
    the head H x V. A multiply-add is 2 FLOPs. Backward is about twice forward.
    """
    four_h = 4 * hidden
    macs = four_h * (vocab + hidden) + (layers - 1) * four_h * 2 * hidden + hidden * vocab
    return 2.0 * macs


def bench_training(corpus: Path, cache: Path, sizes: Sizes) -> Row:
    """Events/s of a Lightning fit (EventLSTMModule on an EventDataModule) vs the seed's bare loop.

    Both see the same batches (random windows of `seq_len + 1` events, batch `batch_size`)
    and count every position of every sequence as an event. The first batch of each is a
    warm-up; Lightning's time runs from the end of batch 1 to the end of the last, so it
    includes loading the batches in between.
    """
    import logging
    import warnings

    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F
    from torch import nn

    from midigen.data.datamodule import EventDataModule
    from midigen.train.module import EventLSTMModule

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning|lightning")
    params = EventParams.seed()
    V, n = params.vocab_size, max(sizes.train_batches, 2)
    optim = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
    model_cfg = {"hidden_size": sizes.hidden, "num_layers": sizes.layers, "input": "onehot", "dropout": 0.0}

    def datamodule() -> EventDataModule:
        return EventDataModule(root=str(corpus), cache_dir=str(cache), tokenizer=params.to_dict(), scheme="windows",
                               seq_len=sizes.seq_len, batch_size=sizes.batch_size,
                               samples_per_epoch=sizes.batch_size * n, seed=0)

    # The bare loop first, on the very batches Lightning will see (windows are a function of seed and index).
    dm = datamodule()
    dm.prepare_data()
    dm.setup("fit")
    batches = [b for _, b in zip(range(n), dm.train_dataloader())]
    events = sum(int(targets.numel()) for _, targets, *_ in batches[1:])

    def bare_loop() -> float:
        """The seed's training loop on `batches`: events/s after the first batch."""
        torch.manual_seed(0)
        lstm = nn.LSTM(V, sizes.hidden, num_layers=sizes.layers, batch_first=True)
        head = nn.Linear(sizes.hidden, V)
        opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss(ignore_index=PAD_ID)
        ends = []
        for inputs, targets, *_ in batches:
            out, _ = lstm(F.one_hot(inputs, V).float())  # (B, T, H)
            loss = loss_fn(head(out).reshape(-1, V), targets.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            ends.append(time.perf_counter())
        return events / (ends[-1] - ends[0])

    bare_runs = [bare_loop()]

    class BatchClock(pl.Callback):
        def __init__(self):
            self.ends: list[float] = []

        def on_train_batch_end(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            self.ends.append(time.perf_counter())

    clock = BatchClock()
    module = EventLSTMModule(model=model_cfg, tokenizer=params.to_dict(), optim=optim)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=n, limit_val_batches=0, num_sanity_val_steps=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1, callbacks=[clock])
    trainer.fit(module, datamodule=datamodule())
    ours = events / (clock.ends[-1] - clock.ends[0])
    if sizes.bare_passes > 1:  # before and after Lightning, so drift in the machine's load hits both sides
        bare_runs.append(bare_loop())
    bare = statistics.mean(bare_runs)

    flops = 3 * lstm_flops_per_event(V, sizes.hidden, sizes.layers)
    peak = sgemm_gflops(sizes.sgemm_n) * 1e9
    passes = "; bare loop: mean of a pass before and one after Lightning" if len(bare_runs) > 1 else ""
    notes = (f"{sizes.layers}x{sizes.hidden} one-hot LSTM, batch {sizes.batch_size} x {sizes.seq_len} events, "
             f"{n - 1} timed batch(es) after 1 warm-up{passes}; {flops / 1e6:.1f} MFLOP/event (matmuls, fwd+bwd "
             f"= 3x fwd); ours {ours * flops / 1e9:.1f} GFLOP/s = {ours * flops / peak:.0%} and bare "
             f"{bare * flops / 1e9:.1f} GFLOP/s = {bare * flops / peak:.0%} of this CPU's fp32 peak, estimated as "
             f"{peak / 1e9:.0f} GFLOP/s from a {sizes.sgemm_n}^3 sgemm measured in this run")
    return Row("training_vs_bare_loop", ours, bare, "events/s", ">= 0.95x", 0.95, higher_is_better=True, notes=notes)
