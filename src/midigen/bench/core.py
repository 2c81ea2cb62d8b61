"""The bench's building blocks: a row, the sizes of a full and a quick run, timing, the corpus.

Not for: the rows themselves (one module per group: tokenize, training, sampling, producer,
memory, audio) or running them (`midigen.bench.runner`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midigen.tracking import repo_root

FORBIDDEN_ON_PRODUCER_PATH = ("lightning", "pytorch_lightning", "lightning_fabric", "hydra", "mlflow")


SEED_HIDDEN, SEED_LAYERS, SEED_BATCH, SEED_SEQ_LEN = 430, 3, 64, 219  # 220-event sequences: 219 in, 219 out


SAMPLE_FILES, SAMPLE_EVENTS = 8, 220


@dataclass
class Row:
    """One benchmark line. `higher_is_better`: a throughput (else a time or a memory figure)."""

    name: str
    ours: float
    baseline: float
    unit: str
    goal: str
    goal_ratio: float
    higher_is_better: bool = False
    notes: str = ""

    @property
    def ratio(self) -> float:
        """How many times better ours is: >= 1 means ours wins."""
        if not (self.ours > 0 and self.baseline > 0):
            return float("nan")
        return self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours

    @property
    def met(self) -> bool:
        return self.ratio >= self.goal_ratio

    def to_dict(self) -> dict:
        return {"name": self.name, "ours": _finite(self.ours), "baseline": _finite(self.baseline), "unit": self.unit,
                "ratio": _finite(self.ratio), "goal": self.goal, "met": self.met, "notes": self.notes}


@dataclass(frozen=True)
class Sizes:
    """How much work each row does. `QUICK` (still every row) takes about a minute on a quiet
    2-core machine and three when others are using it; `FULL` several times that."""

    train_batches: int = 6  # per loop; the first is a warm-up
    bare_passes: int = 2  # the bare loop runs before and after Lightning
    hidden: int = SEED_HIDDEN  # of the training row's and the sampling rows' model
    layers: int = SEED_LAYERS
    batch_size: int = SEED_BATCH
    seq_len: int = SEED_SEQ_LEN
    sample_events: int = SAMPLE_EVENTS
    sample_repeats: int = 7
    prefix_files: int = SAMPLE_FILES  # the seed's loop is timed on this many files, scaled to 8
    tokenize_files: int | None = None  # None: the whole corpus
    tokenize_repeats: int = 3
    cold_start_repeats: int = 5
    memory_files: int | None = None  # corpus files repeated 1x/4x/16x
    memory_windows: int = 1280  # training windows per memory epoch
    memory_repeats: int = 3  # fresh processes per corpus size; the lowest peak is kept
    sgemm_n: int = 2048
    repeats_for_memory: tuple[int, ...] = (1, 4, 16)


FULL = Sizes()


# Quick shrinks what is slow (training batches, tokenizing, fresh processes, memory epochs) and
# keeps the sampling rows' workload and repeats: sampling is cheap, and with fewer repeats its
# ratios moved with the machine's load (a quick sampling_vs_stateful_loop read 1.9x where the
# full run read 6.9x), so a quick figure could not stand in for the full one.
QUICK = Sizes(train_batches=3, bare_passes=1, tokenize_files=100, tokenize_repeats=1, cold_start_repeats=2,
              memory_files=60, memory_windows=320, memory_repeats=1, sgemm_n=1024)


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def best_of(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(fastest, median) seconds of `repeats` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def pick_corpus() -> Path:
    """data/corpus when it holds MIDI files, else the small committed test corpus."""
    from midigen.data.midi_io import MIDI_SUFFIXES

    built = repo_root() / "data" / "corpus"
    if built.is_dir() and any(p.suffix.lower() in MIDI_SUFFIXES for p in built.rglob("*")):
        return built
    return repo_root() / "tests" / "data" / "corpus"


def subset_corpus(root: Path, dest: Path, max_files: int | None, copies: int = 1) -> Path:
    """Hard-link (or copy) up to `max_files` files of `root`, spread evenly over it, `copies` times.

    Copy k of a file lands in `<dest>/<style>/copy<k>/...`, so the cache sees distinct files.
    """
    from midigen.data.cache import list_corpus

    files = list_corpus(root)
    if max_files is not None and len(files) > max_files:
        picks = np.linspace(0, len(files) - 1, max_files).round().astype(int)
        files = [files[i] for i in sorted(set(picks.tolist()))]
    for k in range(copies):
        for cf in files:
            target = dest / cf.style / f"copy{k}" / Path(cf.rel).relative_to(cf.style)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(cf.path, target)
            except OSError:
                shutil.copyfile(cf.path, target)
    return dest


def machine_info() -> dict:
    import torch

    from midigen.producer import native
    from midigen.model import native_bf16

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cpu": cpu,
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "native_bf16": native_bf16(), "native_kernels": native.load(), "load_avg_1min": round(os.getloadavg()[0], 2)}


def seed_size_model(vocab: int, hidden: int = SEED_HIDDEN, layers: int = SEED_LAYERS, seed: int = 0):
    import torch

    from midigen.model import EventLSTM, ModelConfig

    torch.manual_seed(seed)
    return EventLSTM(ModelConfig(vocab_size=vocab, hidden_size=hidden, num_layers=layers, input="onehot")).eval()


def run_child(kind: str, config: dict, timeout: int = 600) -> dict:
    """Run `child_main(kind, config)` in a fresh interpreter; its last stdout line is JSON."""
    code = "import sys; from midigen.bench.child import child_main; child_main(sys.argv[1], sys.argv[2])"
    proc = subprocess.run([sys.executable, "-c", code, kind, json.dumps(config)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench child {kind} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return json.loads(lines[-1])
