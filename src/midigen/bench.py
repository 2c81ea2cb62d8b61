"""`midigen bench`: our pipeline against the loops it replaces, side by side on this machine.

Every row times ours and a baseline doing the same work in one process (cold starts and
peak memory in fresh subprocesses), and reports `ratio`, how many times better ours is:
ours/baseline for a throughput, baseline/ours for a time or a memory figure, so >= 1
means ours wins. Rows with a budget instead of a baseline (sampling under 0.1 s, a cold
start under 3 s, memory under 1 GiB) put the budget in the baseline column. A repeated
time is the best of N runs, the least noisy estimate on a shared machine; each row's
notes say how it was taken, and the table's header the machine's load average.

    training_vs_bare_loop         Lightning step + DataModule vs the seed's bare PyTorch loop
    sampling_vs_prefix_loop       sample() vs the seed's loop (whole prefix re-fed each step)
    sampling_vs_stateful_loop     sample() vs one nn.LSTM call per step carrying (h, c)
    sampling_seconds              sample() for 8 files x 220 events, against 0.1 s
    sampling_seconds_shipped_model  the same on the shipped default model (models/pretrained)
    sampling_native_vs_python     sample() with the native kernels vs its Python reference path
    generate_cold_start           `midigen generate` as a fresh process, against 3 s
    producer_import               producer modules vs the same plus the training path
    tokenize_vs_mido              our cold token cache vs the seed's mido parser
    tokenize_vs_miditok_midilike  our cold token cache vs miditok's stock MIDILike
    cache_hit                     a warm cache (no MIDI parsed) vs a cold build
    memory_training_epoch_Nx      peak private memory of a training epoch, corpus repeated N times
    memory_generate_64            peak RSS of generating 64 files, against 1 GiB

Not for: correctness (tests/) or CI gates (timings on shared machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midigen.events import NOTE_ON_OFFSET, PAD_ID, EventParams

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
QUICK = Sizes(train_batches=3, bare_passes=1, sample_repeats=3, prefix_files=1, tokenize_files=100,
              tokenize_repeats=1, cold_start_repeats=2, memory_files=60, memory_windows=320, memory_repeats=1,
              sgemm_n=1024)


# --- helpers -------------------------------------------------------------------------------


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


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def pick_corpus() -> Path:
    """data/corpus when it holds MIDI files, else the small committed test corpus."""
    built = repo_root() / "data" / "corpus"
    if built.is_dir() and any(p.suffix.lower() in (".mid", ".midi") for p in built.rglob("*")):
        return built
    return repo_root() / "tests" / "data" / "corpus"


def subset_corpus(root: Path, dest: Path, max_files: int | None, copies: int = 1) -> Path:
    """Hard-link (or copy) up to `max_files` files of `root`, spread evenly over it, `copies` times.

    Copy k of a file lands in `<dest>/<style>/copy<k>/...`, so the cache sees distinct files.
    """
    from midigen.data import list_corpus

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

    from midigen import native
    from midigen.sampling import native_bf16

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


def seed_size_model(vocab: int, hidden: int = SEED_HIDDEN, layers: int = SEED_LAYERS, seed: int = 0):
    import torch

    from midigen.model import EventLSTM, ModelConfig

    torch.manual_seed(seed)
    return EventLSTM(ModelConfig(vocab_size=vocab, hidden_size=hidden, num_layers=layers, input="onehot")).eval()


def _run_child(kind: str, config: dict, timeout: int = 600) -> dict:
    """Run `child_main(kind, config)` in a fresh interpreter; its last stdout line is JSON."""
    code = "import sys; from midigen.bench import child_main; child_main(sys.argv[1], sys.argv[2])"
    proc = subprocess.run([sys.executable, "-c", code, kind, json.dumps(config)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench child {kind} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return json.loads(lines[-1])


# --- 1. training ---------------------------------------------------------------------------


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

    from midigen.data import EventDataModule
    from midigen.training import EventLSTMModule

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
    events = sum(int(targets.numel()) for _, targets, _ in batches[1:])

    def bare_loop() -> float:
        """The seed's training loop on `batches`: events/s after the first batch."""
        torch.manual_seed(0)
        lstm = nn.LSTM(V, sizes.hidden, num_layers=sizes.layers, batch_first=True)
        head = nn.Linear(sizes.hidden, V)
        opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss(ignore_index=PAD_ID)
        ends = []
        for inputs, targets, _ in batches:
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


# --- 2. sampling ---------------------------------------------------------------------------


def seed_prefix_loop(model, vocab: int, start: int, events: int, gen) -> list[int]:  # noqa: ANN001
    """The seed's generation: re-feed the whole growing prefix through nn.LSTM for every event."""
    import torch
    import torch.nn.functional as F

    seq = [start]
    with torch.no_grad():
        for _ in range(events):
            x = F.one_hot(torch.tensor([seq]), vocab).float()  # (1, t, V)
            out, _ = model.lstm(x)
            probs = torch.softmax(model.head(out[:, -1]), -1)  # (1, V)
            seq.append(int(torch.multinomial(probs, 1, generator=gen)))
    return seq


def stateful_loop(model, vocab: int, starts, events: int, gen):  # noqa: ANN001
    """A plain stateful loop: one nn.LSTM call per step for the whole batch, carrying (h, c)."""
    import torch
    import torch.nn.functional as F

    tok, state, out = torch.as_tensor(starts), None, []
    with torch.no_grad():
        for _ in range(events):
            h, state = model.lstm(F.one_hot(tok[:, None], vocab).float(), state)  # (B, 1, H)
            probs = torch.softmax(model.head(h[:, -1]), -1)
            tok = torch.multinomial(probs, 1, generator=gen)[:, 0]
            out.append(tok)
    return torch.stack(out, 1)


def bench_sampling(sizes: Sizes) -> list[Row]:
    """sample() with the producer's controls vs the seed's prefix loop and a plain stateful loop."""
    import torch

    from midigen import native
    from midigen.sampling import SamplingOptions, _StepWeights, resolve_precision, sample

    params = EventParams.seed()
    V, E = params.vocab_size, sizes.sample_events
    model = seed_size_model(V, sizes.hidden, sizes.layers)
    starts = [NOTE_ON_OFFSET + 60 + i for i in range(SAMPLE_FILES)]
    producer = SamplingOptions(num=SAMPLE_FILES, max_events=E, top_p=0.95, repetition_penalty=0.3,
                               max_note_steps=250, start_pitches=[s - NOTE_ON_OFFSET for s in starts])
    plain = SamplingOptions(num=SAMPLE_FILES, max_events=E, start_pitches=producer.start_pitches)
    fp32 = SamplingOptions(**{**producer.__dict__, "precision": "fp32"})
    side = max(1, sizes.sample_repeats - 2)  # repeats of the figures that only go in the notes
    ours, ours_median = best_of(lambda: sample(model, params, producer), sizes.sample_repeats)
    ours_plain, _ = best_of(lambda: sample(model, params, plain), side)
    ours_fp32, _ = best_of(lambda: sample(model, params, fp32), side)
    # The first call on a model also prepares its step weights (cached per model after that).
    first_call, _ = best_of(lambda: (_StepWeights._cache.clear(), sample(model, params, producer)), side)
    reference = SamplingOptions(**{**producer.__dict__, "kernels": "python"})
    ours_python, python_median = best_of(lambda: sample(model, params, reference), sizes.sample_repeats)
    kernels = "native kernels" if native.load() else "Python path (native kernels not built)"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a step's matmuls are small: one thread may beat several on a busy machine
    try:
        ours_one_thread, _ = best_of(lambda: sample(model, params, producer), side)
    finally:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    stateful, _ = best_of(lambda: stateful_loop(model, V, starts, E, gen), max(1, sizes.sample_repeats // 2 + 1))
    files = max(1, min(sizes.prefix_files, SAMPLE_FILES))
    start = time.perf_counter()
    for f in range(files):
        seed_prefix_loop(model, V, starts[f], E, gen)
    prefix = (time.perf_counter() - start) * SAMPLE_FILES / files

    precision = resolve_precision(producer.precision)
    shape = f"{SAMPLE_FILES} files x {E} events, {sizes.layers}x{sizes.hidden} one-hot LSTM"
    ours_note = (f"ours = sample() with the producer's controls (grammar masks, top-p 0.95, anti-stuck 0.3, "
                 f"note cap), {kernels}, {precision} step matmuls, best of {sizes.sample_repeats}; plain sampling "
                 f"{ours_plain:.3f} s, fp32 {ours_fp32:.3f} s, first call on a model (prepares its step "
                 f"weights) {first_call:.3f} s, Python path {ours_python:.3f} s")
    scaled = f", timed on {files} file(s) and scaled to {SAMPLE_FILES}" if files < SAMPLE_FILES else ""
    return [
        Row("sampling_vs_prefix_loop", ours, prefix, "s", ">= 30x", 30.0,
            notes=f"{shape}; baseline = the seed's loop, one file at a time, whole prefix re-fed{scaled}; {ours_note}"),
        Row("sampling_vs_stateful_loop", ours, stateful, "s", ">= 3x", 3.0,
            notes=f"{shape}; baseline = batch {SAMPLE_FILES}, one nn.LSTM call per step carrying (h, c), "
                  f"softmax + multinomial; {ours_note}"),
        Row("sampling_seconds", ours, 0.1, "s", "< 0.1 s", 1.0,
            notes=f"{shape}; baseline column = the 0.1 s budget; median {ours_median:.3f} s; with "
                  f"{threads} torch threads (1 thread: {ours_one_thread:.3f} s); {ours_note}"),
    ] + _native_row(ours, ours_median, ours_python, python_median, sizes, shape) \
        + _sampling_shipped_model(sizes, producer)


def _native_row(ours: float, ours_median: float, python: float, python_median: float, sizes: Sizes,
                shape: str) -> list[Row]:
    from midigen import native

    if not native.load():  # nothing to compare: both figures would be the Python path's
        return []
    return [Row("sampling_native_vs_python", ours, python, "s", ">= 1.3x", 1.3,
                notes=f"{shape}, producer's controls; ours = the native kernels (fused LSTM cell per layer, one "
                      f"call per step for controls + nucleus filter + draw), baseline = the same sample() on its "
                      f"Python reference path (torch ops + numpy); best of {sizes.sample_repeats} each, medians "
                      f"{ours_median:.3f} vs {python_median:.3f} s")]


def _sampling_shipped_model(sizes: Sizes, producer) -> list[Row]:  # noqa: ANN001
    """The same request on the model producers get (models/pretrained, the default experiment's)."""
    from midigen.bundle import load_bundle
    from midigen.sampling import sample

    path = repo_root() / "models" / "pretrained"
    if not (path / "config.json").exists():
        return []
    bundle = load_bundle(path)
    steps = int(round(2.0 * bundle.params.steps_per_beat(120.0)))  # the producer's 2-beat note cap
    opts = type(producer)(**{**producer.__dict__, "max_note_steps": steps})
    ours, median = best_of(lambda: sample(bundle.model, bundle.params, opts), sizes.sample_repeats)
    cfg = bundle.model.config
    return [Row("sampling_seconds_shipped_model", ours, 0.1, "s", "< 0.1 s", 1.0,
                notes=f"{SAMPLE_FILES} files x {sizes.sample_events} events with the shipped default model "
                      f"(models/pretrained: {cfg.num_layers}x{cfg.hidden_size} {cfg.input} LSTM, {bundle.params.mode} "
                      f"tokens), the same controls; best of {sizes.sample_repeats}, median {median:.3f} s; "
                      "baseline column = the 0.1 s budget")]


# --- 3. the producer's cold start ----------------------------------------------------------


def make_bundle(dest: Path, hidden: int = SEED_HIDDEN, layers: int = SEED_LAYERS) -> Path:
    """A seed-size model bundle with random weights (no training needed to time generation)."""
    from midigen.bundle import save_bundle
    from midigen.tokenizer import OoreTokenizer

    params = EventParams.seed()
    dest.mkdir(parents=True, exist_ok=True)
    OoreTokenizer.from_params(params).save(dest)
    save_bundle(dest, seed_size_model(params.vocab_size, hidden, layers), dest / "tokenizer.json")
    return dest


def bench_generate(bundle: Path, work: Path, sizes: Sizes) -> list[Row]:
    """`midigen generate --num 8 --bars 8` as a fresh process, and what the producer path imports."""
    times, failure = [], ""
    for k in range(max(sizes.cold_start_repeats, 1)):
        out = work / f"gen{k}"
        cmd = [sys.executable, "-m", "midigen", "generate", "--model", str(bundle), "--num", "8", "--bars", "8",
               "--out", str(out)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            failure = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
    cold = min(times)
    written = len(list((work / "gen0").glob("*.mid"))) if (work / "gen0").is_dir() else 0
    cold_notes = (f"wall time of `midigen generate --model <random-weight seed-size bundle> --num 8 --bars 8 "
                  f"--out DIR` in a fresh process, best of {len(times)} (median {statistics.median(times):.2f} s); "
                  f"{written} files written; baseline column = the 3 s budget")
    if failure:
        cold_notes += f"; FAILED (exit != 0): {failure}"

    probe = _run_child("producer-import", {"bundle": str(bundle), "out": str(work / "probe")})
    training = _run_child("training-import", {})
    forbidden = probe["forbidden"]
    if forbidden:
        raise AssertionError(f"the producer path (generate) imported {', '.join(forbidden)}")
    import_notes = (f"fresh-process import of midigen.generate, midigen.sampling, midigen.bundle (torch included); "
                    f"baseline = the same plus the training path (midigen.train, midigen.training, midigen.data); "
                    f"after a whole generate run in that process: no lightning/hydra/mlflow in sys.modules"
                    f"{'' if probe['generate_ok'] else ' (generate failed: ' + probe['error'] + ')'}; "
                    f"miditok {'loaded' if probe['miditok'] else 'not loaded'}")
    rows = [Row("generate_cold_start", cold if not failure else float("nan"), 3.0, "s", "< 3 s", 1.0,
                notes=cold_notes),
            Row("producer_import", probe["import_s"], training["import_s"], "s",
                ">= 1x and no lightning/hydra/mlflow", 1.0, notes=import_notes)]
    return rows


# --- 4. tokenizing -------------------------------------------------------------------------

SEED_VOCAB = (["<pad>"] + [f"note_on_{i}" for i in range(128)] + [f"note_off_{i}" for i in range(128)]
              + [f"time_shift_{i}" for i in range(125)])


def seed_midi_parser(path: Path) -> list[int]:
    """The seed's tokenizer (Gomatam's `midi_parser`, velocity and pedal removed), re-implemented.

    mido merges the tracks and gives each message's delta time in seconds through the tempo
    map; the milliseconds since the last note event become `time_shift_k` events of 8 ms
    (1000 ms each, then the rounded rest), each note message a `note_on_p`/`note_off_p`
    string, and the strings are mapped to ids with `vocab.index`, as the seed did.
    Drum-channel messages are skipped, as our tokenizer drops drum tracks.
    """
    import mido

    events: list[str] = []
    delta_ms = 0.0
    for msg in mido.MidiFile(str(path)):
        delta_ms += msg.time * 1000.0
        if msg.is_meta or msg.type not in ("note_on", "note_off") or msg.channel == 9:
            continue
        for _ in range(int(delta_ms // 1000)):
            events.append("time_shift_124")
        rest = int(math.floor((delta_ms % 1000) / 8 + 0.5))  # the seed's round-half-up
        if rest > 0:
            events.append(f"time_shift_{rest - 1}")
        delta_ms = 0.0
        on = msg.type == "note_on" and msg.velocity > 0
        events.append(f"note_{'on' if on else 'off'}_{msg.note}")
    return [SEED_VOCAB.index(e) for e in events]


def bench_tokenize(corpus: Path, cache_root: Path, sizes: Sizes, source: str = "") -> list[Row]:
    """Our cold token cache vs the seed's mido parser and miditok's MIDILike; then a warm cache.

    `source` says where `corpus` comes from (it is usually a subset of a larger corpus).
    """
    import miditok

    from midigen import data
    from midigen.data import build_token_cache, list_corpus

    params = EventParams.seed()
    files = [cf.path for cf in list_corpus(corpus)]
    runs = max(sizes.tokenize_repeats, 1)
    colds = []
    for k in range(runs):
        start = time.perf_counter()
        built = build_token_cache(corpus, params, cache_root / f"cold{k}")
        colds.append(time.perf_counter() - start)
    cold = min(colds)
    tokens = int(built.tokens.size)

    def parse_all_mido() -> None:
        for path in files:
            try:
                seed_midi_parser(path)
            except Exception:  # noqa: BLE001 - a file mido rejects is skipped, as our cache skips it
                pass

    mido_s, _ = best_of(parse_all_mido, runs, warmup=0)
    midilike = miditok.MIDILike()

    def encode_all_midilike() -> None:
        for path in files:
            try:
                midilike.encode(path)
            except Exception:  # noqa: BLE001
                pass

    midilike_s, _ = best_of(encode_all_midilike, runs, warmup=0)

    # A warm cache must not parse a single MIDI file: count calls into the parser.
    calls = []
    real = data.read_notes
    data.read_notes = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:
        warm, _ = best_of(lambda: build_token_cache(corpus, params, cache_root / "cold0"), runs + 2, warmup=0)
    finally:
        data.read_notes = real
    if calls:
        raise AssertionError(f"a warm token cache parsed {len(calls)} MIDI files")

    what = (f"{len(files)} files ({tokens:,} tokens, {len(built.skipped)} skipped) of {source or corpus}; ours = "
            f"build_token_cache into a fresh cache (parse + tokenize + hash + write), best of {runs}")
    return [
        Row("tokenize_vs_mido", cold, mido_s, "s", ">= 10x", 10.0,
            notes=f"{what}; baseline = the seed's mido midi_parser re-implemented (merged tracks, seconds via "
                  f"tempo, event strings, vocab.index)"),
        Row("tokenize_vs_miditok_midilike", cold, midilike_s, "s", ">= 1x", 1.0,
            notes=f"{what}; baseline = miditok.MIDILike() (default config) .encode(path) per file"),
        Row("cache_hit", warm, cold, "s", "0 MIDI files parsed, >= 10x", 10.0,
            notes=f"second build_token_cache over the same corpus: {len(calls)} calls to midi_io.read_notes; "
                  f"ours = warm load (hash files + mmap), baseline = the cold build; best of {runs + 2}"),
    ]


# --- 5. memory -----------------------------------------------------------------------------


def bench_memory(corpus: Path, work: Path, bundle: Path, sizes: Sizes) -> list[Row]:
    """Peak RSS of a training epoch as the corpus repeats 1x/4x/16x, and of generating 64 files."""
    from midigen.data import build_token_cache

    params = EventParams.seed()
    cache = work / "cache"
    peaks, tokens = {}, {}
    for copies in sizes.repeats_for_memory:
        root = subset_corpus(corpus, work / f"corpus{copies}x", sizes.memory_files, copies)
        build_token_cache(root, params, cache)  # built here, so the child only loads it (as a training run would)
        # Best of N fresh processes: allocator and thread start-up move a peak by tens of MiB run to run.
        runs = [_run_child("train-epoch", {"root": str(root), "cache": str(cache), "windows": sizes.memory_windows,
                                           "tokenizer": params.to_dict()}) for _ in range(sizes.memory_repeats)]
        child = min(runs, key=lambda r: r["max_anon_mb"])
        peaks[copies], tokens[copies] = child, child["tokens"]
    rows = []
    base = sizes.repeats_for_memory[0]
    for copies in sizes.repeats_for_memory:
        peak = peaks[copies]
        notes = (f"peak private memory (RssAnon, sampled every 20 ms), best of {sizes.memory_repeats} fresh processes "
                 f"each fitting one epoch of "
                 f"{sizes.memory_windows} windows (3x64 one-hot LSTM, batch 64 x 219: the model's memory does not "
                 f"depend on the corpus, so a small one keeps the row quick) over the corpus repeated {copies}x "
                 f"({tokens[copies]:,} tokens, memory-mapped); baseline = the {base}x run. Peak RSS (VmHWM) "
                 f"{peak['max_rss_mb']:.0f} MiB, of which {peak['file_mb']:.0f} MiB file-backed at the end (the "
                 f"token file's pages the epoch touched: the OS's page cache, shared and reclaimable, at most the "
                 f"file's {2 * tokens[copies] / 2**20:.0f} MiB)")
        rows.append(Row(f"memory_training_epoch_{copies}x", peak["max_anon_mb"], peaks[base]["max_anon_mb"], "MiB",
                        f"flat: >= 0.9x of {base}x", 0.9, notes=notes))
    generate = _run_child("generate", {"bundle": str(bundle), "num": 64})["max_rss_mb"]
    rows.append(Row("memory_generate_64", generate, 1024.0, "MiB", "< 1 GiB", 1.0,
                    notes="peak RSS (VmHWM) of a fresh process loading the seed-size bundle and generating 64 files "
                          "x 8 bars (generate_batch); baseline column = the 1 GiB budget"))
    return rows


# --- subprocess entry points ---------------------------------------------------------------


class AnonPeak:
    """The peak of this process's private memory (RssAnon), sampled by a thread every `interval` s.

    Linux keeps a high-water mark for RSS only, which counts the file-backed pages of a memory
    map: for a training epoch over a memory-mapped token file that is page cache, not the
    process's own memory. Where /proc has no RssAnon, the figures stay 0.
    """

    def __init__(self, interval: float = 0.02):
        import threading

        self.interval, self.peak, self.file_mb = interval, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict:
        out = {}
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) / 1024
        except (OSError, ValueError):
            pass
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read().get("RssAnon", 0.0))
            self._stop.wait(self.interval)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self._stop.set()
        self._thread.join()
        now = self.read()
        self.peak, self.file_mb = max(self.peak, now.get("RssAnon", 0.0)), now.get("RssFile", 0.0)


def _max_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    On Linux, VmHWM: getrusage's ru_maxrss carries the parent's peak across fork + exec,
    so a child of a large process would report its parent's figure.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB elsewhere


def child_main(kind: str, config_json: str) -> None:
    """What `_run_child` runs in a fresh interpreter; prints one JSON line."""
    config = json.loads(config_json)
    if kind == "producer-import":
        start = time.perf_counter()
        import midigen.bundle  # noqa: F401
        import midigen.generate  # noqa: F401
        import midigen.sampling  # noqa: F401

        import_s = time.perf_counter() - start
        from midigen.cli import main

        ok, error = True, ""
        try:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                ok = main(["generate", "--model", config["bundle"], "--num", "2", "--bars", "1", "--out",
                           config["out"]]) == 0
        except Exception as exc:  # noqa: BLE001 - reported, the import check still stands
            ok, error = False, f"{type(exc).__name__}: {exc}"[:160]
        loaded = sorted({m.split(".")[0] for m in sys.modules})
        print(json.dumps({"import_s": import_s, "generate_ok": ok, "error": error, "miditok": "miditok" in loaded,
                          "forbidden": [m for m in loaded if m in FORBIDDEN_ON_PRODUCER_PATH]}))
    elif kind == "training-import":
        start = time.perf_counter()
        import midigen.bundle  # noqa: F401
        import midigen.data  # noqa: F401
        import midigen.generate  # noqa: F401
        import midigen.sampling  # noqa: F401
        import midigen.train  # noqa: F401
        import midigen.training  # noqa: F401

        print(json.dumps({"import_s": time.perf_counter() - start}))
    elif kind == "train-epoch":
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.disable(logging.WARNING)
        import pytorch_lightning as pl

        from midigen.data import EventDataModule
        from midigen.training import EventLSTMModule

        with AnonPeak() as sampler:  # from before the corpus is loaded to the end of the epoch
            dm = EventDataModule(root=config["root"], cache_dir=config["cache"], tokenizer=config["tokenizer"],
                                 scheme="windows", seq_len=SEED_SEQ_LEN, batch_size=SEED_BATCH,
                                 samples_per_epoch=config["windows"], seed=0)
            module = EventLSTMModule(model={"hidden_size": 64, "num_layers": 3, "input": "onehot"},
                                     tokenizer=config["tokenizer"],
                                     optim={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3})
            trainer = pl.Trainer(max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                 accelerator="cpu", devices=1)
            trainer.fit(module, datamodule=dm)
        print(json.dumps({"max_rss_mb": _max_rss_mb(), "max_anon_mb": sampler.peak, "file_mb": sampler.file_mb,
                          "tokens": int(dm.corpus.tokens.size)}))
    elif kind == "generate":
        from midigen.bundle import load_bundle
        from midigen.generate import GenerateRequest, generate_batch

        results = generate_batch(load_bundle(config["bundle"]), GenerateRequest(num=config["num"], bars=8))
        print(json.dumps({"max_rss_mb": _max_rss_mb(), "files": len(results)}))
    else:
        raise SystemExit(f"unknown bench child {kind!r}")


# --- the command ---------------------------------------------------------------------------


def run_bench(sizes: Sizes = QUICK, corpus: Path | None = None, work: Path | None = None,
              only: set[str] | None = None, log=print) -> dict:  # noqa: ANN001
    """Run the row groups (`only`: a subset of tokenize, training, sampling, generate, memory).

    Returns {"machine": {...}, "corpus": ..., "rows": [Row.to_dict(), ...], "errors": [...]}:
    a group that fails is reported in `errors` and the others still run.
    """
    from midigen.data import list_corpus

    corpus = Path(corpus or pick_corpus())
    groups = only or {"tokenize", "training", "sampling", "generate", "memory"}
    load_at_start = round(os.getloadavg()[0], 2)
    rows: list[Row] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="midigen-bench-") as tmp:
        work = Path(work or tmp)
        # The subset the tokenizer rows time is also the training row's corpus (its cache is then warm).
        subset = subset_corpus(corpus, work / "corpus", sizes.tokenize_files)
        source = f"{corpus} (spread over its {len(list_corpus(corpus))} files)"
        steps = [
            ("tokenize", lambda: bench_tokenize(subset, work / "tok-cache", sizes, source)),
            ("training", lambda: [bench_training(subset, work / "tok-cache" / "cold0", sizes)]),
            ("sampling", lambda: bench_sampling(sizes)),
            ("generate", lambda: bench_generate(_ensure_bundle(work / "bundle"), work, sizes)),
            ("memory", lambda: bench_memory(corpus, work / "memory", _ensure_bundle(work / "bundle"), sizes)),
        ]
        for group, step in steps:
            if group not in groups:
                continue
            start = time.perf_counter()
            try:
                new_rows = step()
            except Exception as exc:  # noqa: BLE001 - one broken group must not lose the others' figures
                errors.append(f"{group}: {type(exc).__name__}: {str(exc)[:400]}")
                log(f"  {group}: FAILED ({errors[-1]})")
                continue
            rows += new_rows
            log(f"  {group}: {', '.join(r.name for r in new_rows)} ({time.perf_counter() - start:.0f} s)")
    machine = {**machine_info(), "load_avg_1min_at_start": load_at_start}
    return {"machine": machine, "corpus": str(corpus), "rows": [r.to_dict() for r in rows], "errors": errors}


def _ensure_bundle(path: Path) -> Path:
    return path if (path / "config.json").exists() else make_bundle(path)


def format_table(report: dict) -> str:
    m = report["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads, "
             f"native bf16 {'yes' if m['native_bf16'] else 'no'}; load average {m['load_avg_1min_at_start']} at "
             f"the start, {m['load_avg_1min']} at the end (other work on the machine slows every row)",
             f"corpus: {report['corpus']}", ""]
    header = f"{'row':30s} {'ours':>12s} {'baseline':>12s} {'unit':9s} {'ratio':>8s}  {'goal':36s} met"
    lines += [header, "-" * len(header)]
    for r in report["rows"]:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(f"{r['name']:30s} {_num(r['ours']):>12s} {_num(r['baseline']):>12s} {r['unit']:9s} "
                     f"{ratio:>8s}  {r['goal']:36s} {'yes' if r['met'] else 'NO'}")
    lines.append("")
    lines += [f"{r['name']}: {r['notes']}" for r in report["rows"]]
    lines += [f"FAILED {e}" for e in report.get("errors", [])]
    return "\n".join(lines)


def _num(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def bench_command(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    print(f"midigen bench ({'quick' if args.quick else 'full'}): ratio = times better ours is (>= 1: ours wins)",
          flush=True)
    report = run_bench(sizes, log=lambda line: print(line, flush=True))
    report["mode"] = "quick" if args.quick else "full"
    print(format_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 1 if report["errors"] else 0
