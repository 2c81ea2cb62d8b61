"""Row group `generate`: `midigen generate` as a fresh process against its 3 s budget, what the
producer path imports, a formed batch (`--form AA'`) against the same files formed one by one,
and what leaning into a style (`--style-strength`) costs against drawing the style as trained."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from midigen.bench.core import SEED_HIDDEN, SEED_LAYERS, Row, Sizes, best_of, run_child, seed_size_model
from midigen.data.events import EventParams
from midigen.tracking import repo_root

FORM_FILES = 8


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
    rows = [*bench_form(sizes), *bench_style_strength(sizes), Row("generate_cold_start", cold if not failure else float("nan"), 3.0, "s", "< 3 s", 1.0,
                notes=cold_notes),
            Row("producer_import", probe["import_s"], training["import_s"], "s",
                ">= 1x and no lightning/hydra/mlflow", 1.0, notes=import_notes)]
    return rows


def _shipped_bundle():  # noqa: ANN202 - a Bundle, or None where the repo has no shipped model
    from midigen.producer.bundle import load_bundle

    path = repo_root() / "models" / "pretrained"
    return load_bundle(path) if (path / "config.json").exists() else None


def bench_form(sizes: Sizes) -> list[Row]:
    """`generate --form AA' --num 8 --bars 8` on the shipped model: each section sampled for the whole
    batch at once (ours) against the same eight files formed one request at a time (`--num 1` each,
    how a formed batch was sampled before: each file's later sections on their own)."""
    from midigen.producer.generate import generate_batch
    from midigen.producer.request import GenerateRequest

    bundle = _shipped_bundle()
    if bundle is None:
        return []
    # as trained (strength 0): the row times the batching, the lean has its own row
    req = GenerateRequest(num=FORM_FILES, bars=8, form="AA'", seed=1, max_copy=None, style={"chorale": 1.0},
                          style_strength=0.0)
    repeats = max(1, sizes.sample_repeats // 2)
    ours, ours_median = best_of(lambda: generate_batch(bundle, req), repeats)
    one_by_one, one_median = best_of(lambda: [generate_batch(bundle, req.but(num=1, seed=1 + i))
                                              for i in range(FORM_FILES)], repeats)
    plain, _ = best_of(lambda: generate_batch(bundle, req.but(form=None)), repeats)
    return [Row("form_batched_vs_one_by_one", ours, one_by_one, "s", ">= 2x", 2.0,
                notes=f"{FORM_FILES} chorale clips of 8 bars, --form AA' (the second half's top line re-sampled from "
                      f"4 candidates a file), shipped model; baseline = the same {FORM_FILES} files as {FORM_FILES} "
                      f"requests of --num 1; best of {repeats}, medians {ours_median:.2f} vs {one_median:.2f} s; "
                      f"the same batch without a form: {plain:.2f} s")]


def bench_style_strength(sizes: Sizes) -> list[Row]:
    """Eight 8-bar fiddle clips from the shipped model leaning into the style (`--style-strength
    1.5`, fixed so the row compares across releases whatever the calibration chooses; a second
    LSTM state, the even blend, stepped beside the clip's) against the same request drawn as trained (strength 0). A cost row, per sampling step
    (a batch takes as many steps as its longest file has events; leaning clips are denser, so they
    take more steps too, which the notes give): the goal is at most 2.5x the plain step's time (the
    second state doubles the matmuls; the controls and the draw are not doubled)."""
    from midigen.producer.generate import generate_batch
    from midigen.producer.request import GenerateRequest

    bundle = _shipped_bundle()
    if bundle is None:
        return []
    req = GenerateRequest(num=FORM_FILES, bars=8, seed=1, max_copy=None, style={"fiddle": 1.0}, style_strength=1.5)
    repeats = max(1, sizes.sample_repeats // 2)
    timed = {}
    for name, r in (("lean", req), ("plain", req.but(style_strength=0.0))):
        clips = generate_batch(bundle, r)
        steps = max(len(c["ids"]) for c in clips)
        best, median = best_of(lambda r=r: generate_batch(bundle, r), repeats)
        timed[name] = (best, median, steps, sum(len(c["ids"]) for c in clips))
    (lean, lean_median, lean_steps, lean_events), (plain, plain_median, plain_steps, plain_events) = \
        timed["lean"], timed["plain"]
    return [Row("style_strength_cost", 1000 * lean / lean_steps, 1000 * plain / plain_steps, "ms/step",
                ">= 0.4x (a leaning step at most 2.5x a plain one)", 0.4,
                notes=f"{FORM_FILES} fiddle clips of 8 bars, shipped model, --style-strength 1.5 against 0 (as trained); "
                      f"whole batch best of {repeats} {lean:.2f} vs {plain:.2f} s (medians {lean_median:.2f} vs "
                      f"{plain_median:.2f}); {lean_steps} vs {plain_steps} steps, {lean_events} vs {plain_events} "
                      "events in all (the leaning clips have more notes)")]
