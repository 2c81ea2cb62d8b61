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
    form_batched_vs_one_by_one    `generate --form AA' --num 8` vs the same 8 files as 8 requests of --num 1
    style_strength_cost           a sampling step of 8 fiddle clips at --style-strength 1.5 vs at 0 (a cost: <= 2.5x)
    generate_cold_start           `midigen generate` as a fresh process, against 3 s
    producer_import               producer modules vs the same plus the training path
    tokenize_vs_mido              our cold token cache vs the seed's mido parser
    tokenize_vs_miditok_midilike  our cold token cache vs miditok's stock MIDILike
    cache_hit                     a warm cache (no MIDI parsed) vs a cold build
    memory_training_epoch_Nx      peak private memory of a training epoch, corpus repeated N times
    memory_generate_64            peak RSS of generating 64 files, against 1 GiB
    audio_render_seconds          8 ideas of 8 bars rendered to WAV by the built-in piano, against 2 s
    studio_generate_seconds       the studio page's Generate click to 8 playable ideas (shipped model), against 3 s
    studio_vs_cli                 the same click vs the CLI's generate_batch + writing + audio in one process

Not for: correctness (tests/) or CI gates (timings on shared machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from collections.abc import Callable
from dataclasses import dataclass

from midigen.bench.audio import bench_audio
from midigen.bench.core import FULL, QUICK, Row, Sizes, machine_info, pick_corpus, subset_corpus
from midigen.bench.memory import bench_memory
from midigen.bench.producer import bench_generate, make_bundle
from midigen.bench.sampling import bench_sampling
from midigen.bench.studio import bench_studio
from midigen.bench.tokenize import bench_tokenize
from midigen.bench.training import bench_training
from midigen.data.cache import list_corpus
from midigen.errors import MidigenError


@dataclass
class Bench:
    """What every row group gets: the sizes, the corpus, and a scratch folder for this run.

    `subset` is the part of the corpus the tokenizer rows time; it is also the training row's
    corpus (its token cache is then warm). `bundle()` is a seed-size model with random weights.
    """

    sizes: Sizes
    corpus: Path
    work: Path
    subset: Path
    source: str

    def bundle(self) -> Path:
        path = self.work / "bundle"
        return path if (path / "config.json").exists() else make_bundle(path)


# The row groups, in the order they run: name -> the rows it measures.
GROUPS: dict[str, Callable[[Bench], list[Row]]] = {
    "tokenize": lambda b: bench_tokenize(b.subset, b.work / "tok-cache", b.sizes, b.source),
    "training": lambda b: [bench_training(b.subset, b.work / "tok-cache" / "cold0", b.sizes)],
    "sampling": lambda b: bench_sampling(b.sizes),
    "generate": lambda b: bench_generate(b.bundle(), b.work, b.sizes),
    "memory": lambda b: bench_memory(b.corpus, b.work / "memory", b.bundle(), b.sizes),
    "audio": lambda b: bench_audio(b.bundle(), b.sizes),
    "studio": lambda b: bench_studio(b.sizes),
}


def run_bench(sizes: Sizes = QUICK, corpus: Path | None = None, work: Path | None = None,
              only: set[str] | None = None, log=print) -> dict:  # noqa: ANN001
    """Run the row groups of `GROUPS` (`only`: a subset of their names).

    Returns {"machine": {...}, "corpus": ..., "rows": [Row.to_dict(), ...], "errors": [...]}:
    a group that fails is reported in `errors` and the others still run.
    """
    corpus = Path(corpus or pick_corpus())
    unknown = set(only or ()) - set(GROUPS)
    if unknown:
        raise MidigenError(f"no bench group {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    load_at_start = round(os.getloadavg()[0], 2)
    rows: list[Row] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="midigen-bench-") as tmp:
        work = Path(work or tmp)
        bench = Bench(sizes, corpus, work, subset_corpus(corpus, work / "corpus", sizes.tokenize_files),
                      f"{corpus} (spread over its {len(list_corpus(corpus))} files)")
        for group, measure in GROUPS.items():
            if only and group not in only:
                continue
            start = time.perf_counter()
            try:
                new_rows = measure(bench)
            except Exception as exc:  # noqa: BLE001 - one broken group must not lose the others' figures
                errors.append(f"{group}: {type(exc).__name__}: {str(exc)[:400]}")
                log(f"  {group}: FAILED ({errors[-1]})")
                continue
            rows += new_rows
            log(f"  {group}: {', '.join(r.name for r in new_rows)} ({time.perf_counter() - start:.0f} s)")
    machine = {**machine_info(), "load_avg_1min_at_start": load_at_start}
    return {"machine": machine, "corpus": str(corpus), "rows": [r.to_dict() for r in rows], "errors": errors}


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
    only = set(args.only.split(",")) if getattr(args, "only", None) else None
    report = run_bench(sizes, only=only, log=lambda line: print(line, flush=True))
    report["mode"] = "quick" if args.quick else "full"
    print(format_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 1 if report["errors"] else 0
