"""The seed study's evaluation and report, from and into the MLflow experiment `seed_study`.

    python experiments/seed_study/study.py reference         # held-out real files -> run "heldout_real"
    python experiments/seed_study/study.py evaluate RUN      # 64 files from RUN's model -> its gen/* metrics
    python experiments/seed_study/study.py blend RUN         # style-blend weights -> RUN's blend/* metrics
    python experiments/seed_study/report.py                  # REPORT.md from the runs
    python experiments/seed_study/study.py pretrained RUN    # ship RUN's model as models/pretrained/

RUN is an MLflow run name in `seed_study` (its newest FINISHED run). Every figure of
REPORT.md is read back from MLflow: `evaluate` and `blend` log what they measure to the run
they measure, so the report never holds a number typed by hand. Generated files are written
under experiments/seed_study/out/ (not committed); the report's piano rolls are copied to
experiments/seed_study/figures/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# The seed study's corpus: every Bach chorale and fiddle tune (the two styles the dissertation's
# comparison is about), kept apart from data/corpus, the all-styles default (run.sh builds both).
CORPUS = ROOT / "data" / "seed_corpus"
OUT = HERE / "out"
FIGURES = HERE / "figures"
EXPERIMENT = "seed_study"
NUM_FILES = 64
BARS = 8
SEED = 0
BLEND_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
OFF_TEMPO = 140  # a producer's tempo (trap, drill) that is not the corpus's 120 bpm
# Generated-file metrics logged as gen/<key>: the musical metrics, and the defects that must be 0.
GEN_KEYS = ("in_scale", "on_grid", "stuck_ratio", "pitch_range", "polyphony", "note_density", "n_notes",
            "hanging_notes", "ends_on_bar")


# --- MLflow ----------------------------------------------------------------------------------


def client():
    from mlflow import MlflowClient

    from midigen import tracking

    uri = tracking.tracking_uri()
    tracking.ensure_store(uri)
    return MlflowClient(uri)


def experiment_id(c) -> str:  # noqa: ANN001
    from midigen import tracking

    return tracking.ensure_experiment(EXPERIMENT, tracking.tracking_uri())


def find_run(c, name: str):  # noqa: ANN001, ANN201
    runs = c.search_runs([experiment_id(c)], filter_string=f"tags.`mlflow.runName` = '{name}' "
                         "and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        sys.exit(f"study: no FINISHED run named {name!r} in experiment {EXPERIMENT}; run run.sh train first")
    return runs[0]


def run_dir(run) -> Path:  # noqa: ANN001
    """The training output folder of a run (it holds mlflow_run.json)."""
    for meta in (ROOT / "outputs").rglob("mlflow_run.json"):
        if json.loads(meta.read_text()).get("run_id") == run.info.run_id:
            return meta.parent
    sys.exit(f"study: the output folder of run {run.info.run_name} ({run.info.run_id}) is not under outputs/")


def log_metrics(c, run_id: str, metrics: dict) -> None:  # noqa: ANN001
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and np.isfinite(v)]
    for i in range(0, len(batch), 500):
        c.log_batch(run_id, metrics=batch[i:i + 500])


# --- data ------------------------------------------------------------------------------------


def corpus(params=None):  # noqa: ANN001, ANN201
    """The default corpus's token corpus (seed tokens unless `params` says otherwise) with the
    training run's split (data/default.yaml); the split is by file, the same under every tokenizer."""
    from omegaconf import OmegaConf

    from midigen.data.cache import build_token_cache
    from midigen.data.events import EventParams

    data = OmegaConf.load(ROOT / "conf" / "data" / "default.yaml")
    return build_token_cache(CORPUS, params or EventParams.seed(), ROOT / "data" / "cache",
                             data.val_fraction, data.test_fraction, data.max_file_tokens)


def test_files(style: str | None = None) -> list[Path]:
    c = corpus()
    return [CORPUS / f["rel"] for f in c.split("test") if style is None or f["style"] == style]


def originality_index():  # noqa: ANN201
    """The training split's index (as every trained model carries it), built once and cached."""
    from midigen.evaluation.originality import OriginalityIndex

    path = OUT / "originality.npz"
    if path.exists():
        return OriginalityIndex.load(path)
    c = corpus()
    train, val = c.split("train"), c.split("val")
    index = OriginalityIndex.from_files([CORPUS / f["rel"] for f in train],
                                        names=[f["rel"] for f in train])
    index.calibrate([CORPUS / f["rel"] for f in val])
    return OriginalityIndex.load(index.save(path))


_REFERENCE: dict = {}


def reference_metrics(style: str | None = None) -> list[dict]:
    from midigen.evaluation.metrics import file_metrics

    if style not in _REFERENCE:
        _REFERENCE[style] = [file_metrics(p) for p in test_files(style)]
    return _REFERENCE[style]


# --- measuring a folder of files -------------------------------------------------------------


def measure(files: list[Path], index) -> tuple[dict, list[dict]]:  # noqa: ANN001
    """gen/* metrics of some MIDI files: means, overlap with held-out real files, copying."""
    from midigen.evaluation.metrics import file_metrics, mean_metrics, overlaps
    from midigen.evaluation.originality import read_onsets

    rows = [file_metrics(p) for p in files]
    mean = mean_metrics(rows)
    out = {f"gen/{k}": mean.get(k) for k in GEN_KEYS}
    overlap = overlaps(rows, reference_metrics())
    out.update({f"gen/overlap/{k}": v for k, v in overlap.items()})
    values = [v for v in overlap.values() if v is not None]
    out["gen/overlap_mean"] = float(np.mean(values)) if values else None
    copies = [index.check_notes(*read_onsets(p)) for p in files]
    out["gen/copy_ratio_mean"] = float(np.mean([x["copy_ratio"] for x in copies]))
    out["gen/copy_ratio_max"] = float(np.max([x["copy_ratio"] for x in copies]))
    out["gen/longest_run_max"] = float(np.max([x["longest_run"] for x in copies]))
    out["gen/over_max_copy"] = float(np.mean([x["copy_ratio"] > index.max_copy for x in copies]))
    out["gen/files"] = float(len(files))
    return out, rows


def typical(files: list[Path], rows: list[dict], k: int = 2) -> list[Path]:
    """The k files whose metrics lie closest to the folder's medians (z-scored)."""
    keys = ("in_scale", "on_grid", "stuck_ratio", "pitch_range", "polyphony", "note_density")
    table = np.array([[r.get(key) or 0.0 for key in keys] for r in rows], dtype=float)
    z = (table - np.median(table, axis=0)) / (table.std(axis=0) + 1e-9)
    return [files[i] for i in np.argsort(np.abs(z).sum(axis=1))[:k]]


def log_rolls(c, run, label: str, files: list[Path]) -> None:  # noqa: ANN001
    from midigen.evaluation.pianoroll import save_pianoroll

    FIGURES.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files):
        png = FIGURES / f"{label}_{i}.png"
        save_pianoroll(path, png, title=f"{label}: {path.name}")
        c.log_artifact(run.info.run_id, str(png), "study")


# --- generating ------------------------------------------------------------------------------


def generate_event_model(bundle_dir: Path, out: Path, style: dict | None = None, bpm: float = 120.0) -> list[Path]:
    from midigen.producer.bundle import load_bundle
    from midigen.producer.generate import GenerateRequest, generate_batch

    bundle = load_bundle(bundle_dir)
    # no lead-in: the seed's clips opened straight away, and the report's figures were measured so
    req = GenerateRequest(num=NUM_FILES, bars=BARS, bpm=bpm, seed=SEED, style=style, max_copy=None, name="study",
                          lead_in=0)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    paths = []
    for r in generate_batch(bundle, req):
        (out / r["name"]).write_bytes(r["midi"])
        paths.append(out / r["name"])
    return paths


def files_of(c, run) -> list[Path]:  # noqa: ANN001
    """The run's 64 generated files: sampled now for token models, the run's own for approach 1."""
    name = run.info.run_name
    out = OUT / name
    task = run.data.tags.get("task", "")
    if task == "baseline":
        from midigen.train.baselines import fit_corpus, write_samples
        from midigen.data.events import EventParams

        tokens = corpus(EventParams.beat() if run.data.tags.get("tokenizer") == "beat" else EventParams.seed())
        model = fit_corpus(tokens, int(run.data.params["order"]))
        shutil.rmtree(out, ignore_errors=True)
        return write_samples(model, tokens.params, out, NUM_FILES, events=600, seed=SEED)
    folder = run_dir(run)
    if (folder / "bundle").exists():
        return generate_event_model(folder / "bundle", out)
    samples = sorted((folder / "samples" / "final").glob("*.mid"))
    if not samples:
        sys.exit(f"study: run {name} has no model bundle and no samples/final files")
    return samples


# --- commands --------------------------------------------------------------------------------


def cmd_reference(args: argparse.Namespace) -> None:
    """The held-out real files as a row of their own: the floor every metric is read against."""
    c = client()
    started = time.time()
    files = test_files()
    metrics, rows = measure(files, originality_index())
    metrics["train_minutes"] = (time.time() - started) / 60
    runs = c.search_runs([experiment_id(c)], filter_string="tags.`mlflow.runName` = 'heldout_real'")
    for old in runs:
        c.delete_run(old.info.run_id)
    run = c.create_run(experiment_id(c), run_name="heldout_real", tags={"task": "reference"})
    log_metrics(c, run.info.run_id, metrics)
    c.log_param(run.info.run_id, "files", len(files))
    c.set_terminated(run.info.run_id, "FINISHED")
    log_rolls(c, run, "heldout_real", typical(files, rows))
    print(f"heldout_real: {len(files)} test files; overlap_mean {metrics['gen/overlap_mean']:.3f}, "
          f"copy_ratio_mean {metrics['gen/copy_ratio_mean']:.3f}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    c = client()
    run = find_run(c, args.run)
    started = time.time()
    files = files_of(c, run)
    metrics, rows = measure(files, originality_index())
    metrics["gen/seconds"] = time.time() - started
    bundle = run_dir(run) / "bundle" if run.data.tags.get("task") != "baseline" else None
    if bundle is not None and bundle.exists():
        # A producer's tempo is rarely the corpus's 120 bpm: does the rhythm stay on the DAW's grid?
        from midigen.evaluation.metrics import file_metrics, mean_metrics

        at = generate_event_model(bundle, OUT / f"{args.run}_bpm{OFF_TEMPO}", bpm=OFF_TEMPO)
        metrics[f"gen_bpm{OFF_TEMPO}/on_grid"] = mean_metrics([file_metrics(p) for p in at])["on_grid"]
    log_metrics(c, run.info.run_id, metrics)
    log_rolls(c, run, args.run, typical(files, rows))
    print(f"{args.run}: {len(files)} files; overlap_mean {metrics['gen/overlap_mean']:.3f}, stuck "
          f"{metrics['gen/stuck_ratio']:.3f}, copy_ratio_mean {metrics['gen/copy_ratio_mean']:.3f}")


def cmd_blend(args: argparse.Namespace) -> None:
    """Blend two styles at fiddle weights 0..1: how close the samples lie to each style's real files."""
    from midigen.evaluation.metrics import file_metrics

    c = client()
    run = find_run(c, args.run)
    bundle = run_dir(run) / "bundle"
    metrics = {}
    for w in BLEND_WEIGHTS:
        files = generate_event_model(bundle, OUT / f"blend_{args.run}" / f"fiddle_{w:.2f}",
                                     style={"chorale": 1.0 - w, "fiddle": w})
        tag = f"blend/fiddle_{w:.2f}"
        metrics.update(style_distances([file_metrics(p) for p in files], tag))
        print(f"fiddle weight {w:.2f}: overlap chorale {metrics[f'{tag}/overlap_chorale']:.3f}, "
              f"fiddle {metrics[f'{tag}/overlap_fiddle']:.3f}, polyphony {metrics[f'{tag}/polyphony']:.2f}")
    for style in ("chorale", "fiddle"):  # each style's real files against both: the scale's ends
        metrics.update(style_distances(reference_metrics(style), f"blend/real_{style}"))
    log_metrics(c, run.info.run_id, metrics)


def style_distances(rows: list[dict], tag: str) -> dict:
    """{tag/overlap_<style>: mean feature overlap with that style's held-out files, tag/<feature>: mean}."""
    from midigen.evaluation.metrics import mean_metrics, overlaps

    out = {}
    for style in ("chorale", "fiddle"):
        values = [v for v in overlaps(rows, reference_metrics(style)).values() if v is not None]
        out[f"{tag}/overlap_{style}"] = float(np.mean(values))
    mean = mean_metrics(rows)
    out.update({f"{tag}/{key}": mean[key] for key in ("polyphony", "note_density", "pitch_range", "in_scale")})
    return out


def cmd_pretrained(args: argparse.Namespace) -> None:
    """Ship a run's model as models/pretrained/: fp16 weights, tokenizer, config, index, model card."""
    from midigen.producer.bundle import CARD, INDEX, TOKENIZER, find_bundle_dir, load_bundle, save_bundle

    c = client()
    run = find_run(c, args.run)
    src = find_bundle_dir(run_dir(run) / "bundle")
    dest = ROOT / "models" / "pretrained"
    shutil.rmtree(dest, ignore_errors=True)
    bundle = load_bundle(src)
    save_bundle(dest, bundle.model, src / TOKENIZER, {k: v for k, v in bundle.meta.items() if k != "model"}, half=True)
    shutil.copyfile(src / INDEX, dest / INDEX)
    same = fp16_equality(src, dest)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    m = run.data.metrics
    from midigen.train.registration import model_card  # the training run's card, rendered from the bundle's config

    card = model_card(bundle.meta, {"tokenizer": bundle.params.to_dict(), "model": bundle.meta["model"]})
    card += (f"\n## Shipped as the pretrained default\n\nFrom the seed study's run `{args.run}` (MLflow run "
             f"`{run.info.run_id}`, commit `{run.data.tags.get('commit', commit)}`), exported with "
             f"`python experiments/seed_study/study.py pretrained {args.run}`.\n\n"
             f"Weights are stored in float16 (half the size). Measured at export against the float32 model, "
             f"teacher-forced on the {same['events']:,} events of the held-out test files: NLL per event "
             f"{same['nll_fp32']:.5f} (fp32) vs {same['nll_fp16']:.5f} (fp16); the most likely next event agrees "
             f"at {100 * same['argmax_agreement']:.2f}% of positions; largest probability gap "
             f"{same['max_prob_gap']:.4f}. Sampling the same {same['files']} files (seed {SEED}, {BARS} bars): "
             f"{same['identical']} byte-identical (a sampled sequence follows another path from the first "
             f"draw that lands differently); batch means fp32 -> fp16: "
             + ", ".join(f"{k} {same['metrics_fp32'][k]:.3f} -> {same['metrics_fp16'][k]:.3f}"
                         for k in same["metrics_fp32"]) + ".\n\n"
             f"Held-out test NLL {m.get('test/nll', float('nan')):.4f} nats/event; 64 generated files: "
             f"overlap with held-out real files {m.get('gen/overlap_mean', float('nan')):.3f}, "
             f"stuck ratio {m.get('gen/stuck_ratio', float('nan')):.3f}, copy ratio "
             f"{m.get('gen/copy_ratio_mean', float('nan')):.3f}. See experiments/seed_study/REPORT.md.\n")
    (dest / "MODEL_CARD.md").write_text(card)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"wrote {dest} ({size / 1e6:.2f} MB)")


def fp16_equality(full: Path, half: Path, num: int = NUM_FILES) -> dict:
    """How far the float16 export is from the float32 model it came from.

    Teacher-forced on the held-out test files (512-event windows): both models' NLL per event,
    how often their most likely next event agrees, and the largest probability gap. Sampling:
    the same 64-file request with both (metric means, and how many files come out
    byte-identical: a sampled sequence diverges for good at the first draw that differs)."""
    import torch
    import torch.nn.functional as F

    from midigen.producer.bundle import load_bundle
    from midigen.producer.generate import generate_batch
    from midigen.producer.report import judge
    from midigen.producer.request import GenerateRequest

    a, b = load_bundle(full), load_bundle(half)
    c = corpus(a.params)
    nll, events, agree, gap = {"fp32": 0.0, "fp16": 0.0}, 0, 0, 0.0
    with torch.no_grad():
        for f in c.split("test"):
            ids = torch.from_numpy(np.asarray(c.tokens[f["offset"]:f["offset"] + f["length"]]).astype(np.int64))
            style = torch.tensor([a.styles.index(f["style"])]) if f["style"] in a.styles else None
            for start in range(0, ids.numel() - 1, 512):
                window = ids[start:start + 513]
                inputs, targets = window[:-1][None], window[1:]
                la, lb = a.model(inputs, style)[0][0], b.model(inputs, style)[0][0]
                nll["fp32"] += float(F.cross_entropy(la, targets, reduction="sum"))
                nll["fp16"] += float(F.cross_entropy(lb, targets, reduction="sum"))
                agree += int((la.argmax(-1) == lb.argmax(-1)).sum())
                gap = max(gap, float((la.softmax(-1) - lb.softmax(-1)).abs().max()))
                events += targets.numel()
    req = GenerateRequest(num=num, bars=BARS, seed=SEED, max_copy=None, lead_in=0)
    ga, gb = generate_batch(a, req), generate_batch(b, req)
    sa, sb = judge(ga, req, a)["mean"], judge(gb, req, b)["mean"]
    return {"events": events, "nll_fp32": nll["fp32"] / events, "nll_fp16": nll["fp16"] / events,
            "argmax_agreement": agree / events, "max_prob_gap": gap, "files": num,
            "identical": sum(x["midi"] == y["midi"] for x, y in zip(ga, gb)),
            "metrics_fp32": sa, "metrics_fp16": sb}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="study.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("reference").set_defaults(func=cmd_reference)
    for name, func in (("evaluate", cmd_evaluate), ("blend", cmd_blend), ("pretrained", cmd_pretrained)):
        q = sub.add_parser(name)
        q.add_argument("run", help="MLflow run name in experiment seed_study")
        q.set_defaults(func=func)
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    OUT.mkdir(parents=True, exist_ok=True)
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
