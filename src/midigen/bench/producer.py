"""Row group `generate`: `midigen generate` as a fresh process against its 3 s budget, and what the
producer path imports."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from midigen.bench.core import SEED_HIDDEN, SEED_LAYERS, Row, Sizes, run_child, seed_size_model
from midigen.data.events import EventParams


def make_bundle(dest: Path, hidden: int = SEED_HIDDEN, layers: int = SEED_LAYERS) -> Path:
    """A seed-size model bundle with random weights (no training needed to time generation)."""
    from midigen.producer.bundle import save_bundle
    from midigen.data.tokenizer import OoreTokenizer

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

    probe = run_child("producer-import", {"bundle": str(bundle), "out": str(work / "probe")})
    training = run_child("training-import", {})
    forbidden = probe["forbidden"]
    if forbidden:
        raise AssertionError(f"the producer path (generate) imported {', '.join(forbidden)}")
    import_notes = (f"fresh-process import of midigen.producer.generate, midigen.producer.sampling, midigen.producer.bundle (torch included); "
                    f"baseline = the same plus the training path (midigen.train.app, midigen.train.module, midigen.data.datamodule); "
                    f"after a whole generate run in that process: no lightning/hydra/mlflow in sys.modules"
                    f"{'' if probe['generate_ok'] else ' (generate failed: ' + probe['error'] + ')'}; "
                    f"miditok {'loaded' if probe['miditok'] else 'not loaded'}")
    rows = [Row("generate_cold_start", cold if not failure else float("nan"), 3.0, "s", "< 3 s", 1.0,
                notes=cold_notes),
            Row("producer_import", probe["import_s"], training["import_s"], "s",
                ">= 1x and no lightning/hydra/mlflow", 1.0, notes=import_notes)]
    return rows
