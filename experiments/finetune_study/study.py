"""The fine-tune study: does `midigen finetune` teach the shipped model a producer's folder, in
minutes on a CPU, without forgetting what it knew?

    bash experiments/finetune_study/run.sh      # about 55 minutes on 2 CPU cores

The producer's folder is a style the shipped model never saw: music21's `classical` string
quartet movements (`midigen data build --styles classical`), imported as style `quartet`
(music21's own style names are reserved). The exported files are ordered by a hash of their
names; the first FINETUNE_FILES are the producer's folder, the rest are held out and never
read by any model. Three models, in the same run, with the same training-time limit:

(a) the shipped model, untouched (it does not know `quartet`: scored with its even style blend,
    and with the base style that fits the held-out files best);
(b) a model of the same size trained from scratch on the same files (`midigen train`, the
    default experiment, `data.root` the folder alone), once per learning-rate schedule of
    --scratch-schedules (constant, and the fine-tune's cosine over the time limit); the one with
    the lower held-out NLL is (b), so the fine-tune meets the better from-scratch recipe;
(c) `midigen finetune FOLDER --style quartet --from models/pretrained` (the base corpus beside
    it, replayed).

Measured: held-out NLL per note of the held-out quartet files (each model conditioned on its
best reading of the style); the style fidelity of 64 generated 8-bar quartet files, by the
fine-tuned model's refitted classifier, against its accuracy on 8-bar excerpts of the held-out
files (the ceiling); per-file usable share of those files against held-out real windows
(`midigen.evaluation.reference`); forgetting: every base style's TEST-split NLL per note and
its fidelity (1024 files per style and model, the same refitted classifier for both), shipped
against fine-tuned, beside a control (the shipped model's files drawn again with other seeds:
how far fidelity moves when nothing changed); the fine-tune command's wall time and peak memory (max RSS of the process).
Results go to results.json, the report to REPORT.md (report.py); nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
STYLE = "quartet"
FINETUNE_FILES = 30
TRAIN_MINUTES = 6.0  # trainer.max_time of both the fine-tune and the from-scratch run
CONTROL_SEED = 1000  # the shipped model's files drawn again: seeds from here, apart from the compared ones
GOALS = {"fidelity_ratio": 0.8, "forgetting_nll": 0.05, "forgetting_fidelity": 0.05, "minutes": 10.0,
         "usable_ratio": 0.95}


def _style_study():  # noqa: ANN202 - the style study's module, for its measurements
    spec = importlib.util.spec_from_file_location("style_study", ROOT / "experiments" / "style_study" / "study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["style_study"] = module
    spec.loader.exec_module(module)
    return module


def _order(path: Path) -> str:
    return hashlib.sha1(path.name.encode("utf-8")).hexdigest()


def prepare(export: Path, base_corpus: Path, work: Path) -> dict:
    """The folders: the producer's (FINETUNE_FILES files), the held-out files, the fine-tune's
    corpus (the base styles linked in, so their relative paths and splits are training's), the
    from-scratch corpus (the producer's files alone) and the evaluation corpus (all of them:
    the producer's as train, the held-out as test)."""
    info = layout(export, work)
    folders, mine, held = info["folders"], info["mine"], info["held"]
    shutil.rmtree(work, ignore_errors=True)
    for name in ("producer", "heldout"):
        folders[name].mkdir(parents=True)
    for f in mine:
        shutil.copy(f, folders["producer"] / f.name)
    for f in held:
        shutil.copy(f, folders["heldout"] / f.name)
    folders["corpus"].mkdir()
    for style_dir in sorted(p for p in base_corpus.iterdir() if p.is_dir() and not p.name.startswith(".")):
        (folders["corpus"] / style_dir.name).symlink_to(style_dir.resolve(), target_is_directory=True)
    shutil.copytree(folders["producer"], folders["scratch"] / STYLE)
    (folders["eval"] / STYLE).mkdir(parents=True)
    for f in mine + held:
        shutil.copy(f, folders["eval"] / STYLE / f.name)
    return info


def layout(export: Path, work: Path) -> dict:
    """The study's folders under `work`, the producer's and the held-out files, and the evaluation
    corpus's split (the producer's files train, the held-out ones test)."""
    files = sorted((export / "classical").glob("*.mid"), key=_order)
    if len(files) <= FINETUNE_FILES:
        raise SystemExit(f"{export}/classical holds {len(files)} files; build it with "
                         f"`midigen data build --styles classical --out {export}`")
    mine, held = files[:FINETUNE_FILES], files[FINETUNE_FILES:]
    splits = {**{f"{STYLE}/{f.name}": "train" for f in mine}, **{f"{STYLE}/{f.name}": "test" for f in held}}
    return {"folders": {name: work / name for name in ("producer", "heldout", "corpus", "scratch", "eval")},
            "mine": mine, "held": held, "splits": splits, "finetune_files": len(mine), "heldout_files": len(held)}


def run_command(args: list[str], env: dict, log: Path) -> dict:
    """Run a midigen command; its wall time, peak memory (max RSS, MB) and exit status."""
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with log.open("w") as fh:
        proc = subprocess.run([str(ROOT / ".venv" / "bin" / "midigen"), *args], cwd=ROOT, env=env, stdout=fh,
                              stderr=subprocess.STDOUT)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"midigen {' '.join(args[:2])} failed ({proc.returncode}); see {log}")
    return {"seconds": time.time() - started, "peak_memory_mb": max(peak, before) / 1024,
            "peak_is_this_command": peak > before}


def bundle_of(outputs: Path, experiment: str) -> Path:
    runs = sorted(outputs.glob(f"{experiment}/*/bundle"))
    if not runs:
        raise SystemExit(f"no bundle under {outputs / experiment}")
    return runs[-1]


def nll_rows(ss, bundles: dict, eval_corpus, base_styles: list[str]) -> dict:  # noqa: ANN001
    """Held-out NLL per note of the held-out quartet files for each model."""
    import torch

    from midigen.train.heldout import files_nll

    held = eval_corpus.split("test")
    rows = {}
    for name, bundle in bundles.items():
        styles = bundle.styles
        if STYLE in styles:
            w = torch.zeros(1, len(styles))
            w[0, styles.index(STYLE)] = 1.0
            rows[name] = {"as": STYLE, **files_nll(bundle.model, eval_corpus, held, w)}
            continue
        blend = {"as": "even blend", **files_nll(bundle.model, eval_corpus, held, None)}
        best = None
        for s in base_styles:
            w = torch.zeros(1, len(styles))
            w[0, styles.index(s)] = 1.0
            row = files_nll(bundle.model, eval_corpus, held, w)
            if best is None or row["per_note"] < best["per_note"]:
                best = {"as": s, **row}
        rows[name] = blend
        rows[f"{name}_best_style"] = best
    return rows


def fidelity(ss, bundle, classifier, styles: list[str], out: Path, files: int, first_seed: int = 0) -> dict:  # noqa: ANN001
    """{style: {"accuracy"}} of `files` generated files per style, in requests of at most
    MAX_NUM files (seeds first_seed, first_seed + 1, ...), pooled."""
    from midigen.producer.request import MAX_NUM

    hits, total = dict.fromkeys(styles, 0.0), 0
    for seed, first in enumerate(range(0, files, MAX_NUM), start=first_seed):
        n = min(MAX_NUM, files - first)
        rows = ss.generated_accuracy(bundle, classifier, styles, {}, out / f"seed{seed}", ss.Sizes(files=n, seed=seed))
        for s in styles:
            hits[s] += rows[s]["accuracy"] * rows[s]["files"]
        total += n
    return {s: {"accuracy": hits[s] / total} for s in styles}


def forgetting(ss, base, tuned, base_corpus, classifier, styles: list[str], out: Path, sizes) -> dict:  # noqa: ANN001
    """Every base style: TEST-split NLL per note and fidelity, shipped against fine-tuned; and the
    control: the shipped model against itself, its files drawn again with other seeds (how far
    fidelity moves when nothing was forgotten)."""
    nll_base = ss.heldout_nll(base, base_corpus, styles)
    nll_tuned = ss.heldout_nll(tuned, base_corpus, styles)
    fid_base = fidelity(ss, base, classifier, styles, out / "base", sizes.files)
    fid_tuned = fidelity(ss, tuned, classifier, styles, out / "finetuned", sizes.files)
    fid_again = fidelity(ss, base, classifier, styles, out / "base_again", sizes.files, first_seed=CONTROL_SEED)
    rows = {}
    for s in styles:
        a, b = (nll_base.get(s) or {}).get("model_per_note"), (nll_tuned.get(s) or {}).get("model_per_note")
        fa, fb = fid_base[s]["accuracy"], fid_tuned[s]["accuracy"]
        n = sizes.files
        rows[s] = {"nll_base": a, "nll_finetuned": b, "nll_change": (b / a - 1) if a and b else None,
                   "fidelity_base": fa, "fidelity_finetuned": fb,
                   "fidelity_change": (fb - fa) if fa is not None and fb is not None else None,
                   "fidelity_control_change": fid_again[s]["accuracy"] - fa if fa is not None else None,
                   # the standard error of a difference of two shares of n files each
                   "fidelity_change_se": float(np.sqrt((fa * (1 - fa) + fb * (1 - fb)) / n))
                   if fa is not None and fb is not None else None,
                   "test_files": (nll_base.get(s) or {}).get("test_files")}
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--export", default=str(ROOT / "data" / "classical_export"),
                   help="a corpus root holding classical/ (midigen data build --styles classical --out DIR)")
    p.add_argument("--corpus", default=str(ROOT / "data" / "corpus"), help="the base model's corpus")
    p.add_argument("--model", default=str(ROOT / "models" / "pretrained"), help="the base model folder")
    p.add_argument("--out", default=str(HERE), help="where results.json and REPORT.md go")
    p.add_argument("--minutes", type=float, default=TRAIN_MINUTES, help="training-time limit of both runs")
    p.add_argument("--files", type=int, default=64, help="generated files of the new style")
    p.add_argument("--scratch-schedules", default="none,time_cosine",
                   help="learning-rate schedules (conf/scheduler/) the from-scratch run is trained with, one run "
                        "each; (b) is the one with the lower held-out NLL, so the fine-tune is compared with "
                        "the better recipe")
    p.add_argument("--reuse", action="store_true", help="measure the runs of the last study again (out/runs.json) "
                   "instead of training them")
    p.add_argument("--forgetting-files", type=int, default=1024,
                   help="generated files per base style, for each model (the standard error of a fidelity "
                        "change is about 0.022 at 1024, 0.044 at 256: a drop of 0.05 needs the former)")
    args = p.parse_args(argv)

    from midigen.train.finetune import max_time

    ss = _style_study()
    out = Path(args.out)
    work = out / "out"
    started = time.time()
    prep = layout(Path(args.export), work)
    folders = prep["folders"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "MIDIGEN_CACHE": str(work / "model-cache"), "PYTHONUNBUFFERED": "1"}
    cache = ROOT / "data" / "cache"  # the base styles' tokens are cached there already
    common = [f"paths.cache={cache}", f"paths.outputs={work / 'runs'}", "trainer.enable_progress_bar=false"]

    runs_json = work / "runs.json"
    if args.reuse and runs_json.exists():  # the runs of an earlier study; only the measurements again
        runs = json.loads(runs_json.read_text())
        tuned_run, scratch_runs = runs["finetune"], runs["scratch"]
    else:
        prep = prepare(Path(args.export), Path(args.corpus), work)
        print("finetune study: fine-tuning", flush=True)
        tuned_run = run_command(["finetune", str(folders["producer"]), "--style", STYLE, "--from", args.model,
                                 "--corpus", str(folders["corpus"]), "--register", "quartet-finetuned",
                                 "--minutes", str(args.minutes), *common], env, work / "finetune.log")
        print(f"finetune study: fine-tune took {tuned_run['seconds'] / 60:.1f} min", flush=True)
        scratch_runs = {}
        for schedule in args.scratch_schedules.split(","):
            scratch_runs[schedule] = run_command(
                ["train", f"data.root={folders['scratch']}", f"trainer.max_time='{max_time(args.minutes)}'",
                 "trainer.max_epochs=1000", f"scheduler={schedule}", f"registry.name=quartet-scratch-{schedule}",
                 "registry.alias=null", f"logger.experiment_name=quartet-scratch-{schedule}", *common],
                env, work / f"scratch-{schedule}.log")
            print(f"finetune study: from scratch (scheduler={schedule}) took "
                  f"{scratch_runs[schedule]['seconds'] / 60:.1f} min", flush=True)
        runs_json.write_text(json.dumps({"finetune": tuned_run, "scratch": scratch_runs}, indent=1))

    import torch

    from midigen.data.cache import build_token_cache
    from midigen.evaluation.style import held_out_accuracy
    from midigen.producer.bundle import load_bundle

    torch.set_num_threads(1)  # small forward passes: one thread beats two contending ones (the style study)
    base = load_bundle(args.model)
    tuned = load_bundle(bundle_of(work / "runs", "midigen-finetune"))
    settings = ss.conf_settings()
    eval_corpus = build_token_cache(folders["eval"], base.params, work / "eval-cache")
    eval_corpus.files = [{**f, "split": prep["splits"][f["rel"]]} for f in eval_corpus.files]
    scratches = {schedule: load_bundle(bundle_of(work / "runs", f"quartet-scratch-{schedule}"))
                 for schedule in scratch_runs}
    scratch_nll = {schedule: nll_rows(ss, {"scratch": b}, eval_corpus, [])["scratch"]
                   for schedule, b in scratches.items()}
    schedule = min(scratch_nll, key=lambda k: scratch_nll[k]["per_note"])  # (b): the better from-scratch recipe
    scratch, scratch_run = scratches[schedule], {**scratch_runs[schedule], "scheduler": schedule}
    nll = nll_rows(ss, {"base": base, "finetuned": tuned}, eval_corpus, base.styles)
    nll["scratch"] = scratch_nll[schedule]
    nll["scratch_schedules"] = {k: {"per_note": v["per_note"], "seconds": scratch_runs[k]["seconds"]}
                                for k, v in scratch_nll.items()}

    sizes = ss.Sizes(files=args.files)
    classifier = tuned.style_classifier
    ceiling = held_out_accuracy(classifier, folders["eval"], split="test", splits=prep["splits"]).get(STYLE)
    fidelity = {name: ss.generated_accuracy(b, classifier, [STYLE], {STYLE: ceiling}, work / f"gen_{name}", sizes)[STYLE]
                for name, b in (("finetuned", tuned), ("scratch", scratch))}
    timing = {name: ss.timing(b, [STYLE], folders["eval"], prep["splits"], work / f"time_{name}", sizes)[STYLE]
              for name, b in (("finetuned", tuned), ("scratch", scratch))}
    base_corpus = ss.token_corpus(Path(args.corpus), base.params, cache, settings)
    styles = [s for s in base.styles if s in base_corpus.styles]
    forgot = forgetting(ss, base, tuned, base_corpus, classifier, styles, work / "forgetting",
                        ss.Sizes(files=args.forgetting_files))
    meta = json.loads((tuned.path / "config.json").read_text())
    results = {
        "style": STYLE, "finetune_files": prep["finetune_files"], "heldout_files": prep["heldout_files"],
        "train_minutes": args.minutes, "generated_files": args.files, "forgetting_files": args.forgetting_files,
        "goals": GOALS,
        "runs": {"finetune": tuned_run, "scratch": scratch_run},
        "finetune_metrics": {k: v for k, v in meta.get("metrics", {}).items() if k.startswith(("finetune/", "val/",
                                                                                               "test/"))},
        "scratch_metrics": {k: v for k, v in json.loads((scratch.path / "config.json").read_text())
                            .get("metrics", {}).items() if k.startswith(("val/", "test/"))},
        "nll": nll, "ceiling": ceiling, "fidelity": fidelity, "timing": timing, "forgetting": forgot,
        "classifier_styles": classifier.styles, "machine": ss.machine(),
        "seconds": time.time() - started, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=ss._json_default) + "\n")
    from report import write_report  # noqa: E402 - beside this file

    print(f"finetune study: wrote {write_report(results, out / 'REPORT.md')}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
