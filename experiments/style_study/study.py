"""The style study: does a model write the styles it was asked for, and blend and move between them?

    python experiments/style_study/study.py --model models/pretrained --corpus data/corpus
    python experiments/style_study/study.py --model MODEL_DIR --corpus CORPUS --quick   # smoke run, ~30 s
    bash experiments/style_study/run.sh                                       # models/pretrained, data/corpus

For each style the model knows, on the corpus split training used (`midigen.data.cache`,
fractions from conf/data/default.yaml), it measures

1. the style classifier's accuracy on 8-bar excerpts of the held-out TEST files (the ceiling);
2. its accuracy on generated 8-bar files of that style (fidelity), their mean probability of
   the style, and the ratio generated / real (goal: >= 0.8);
3. blends: for pairs of styles, files at weights 1, .75, .5, .25, 0 of the first style; the
   classifier's share P(a) / (P(a) + P(b)) should fall as the weight falls;
4. held-out NLL per note of each style's test files, the model (conditioned on that style)
   against a 4-gram (interpolated Kneser-Ney) fitted on that style's training files;
5. interpolation (`midigen interpolate`) between held-out files of two styles: the feature
   distance of clip i to A should rise with i, to B fall (Spearman rho, goal +-0.8);
6. in time, file by file: the share of onsets on a beat and the "usable" verdict (on the grid,
   in phase: on-beat share at or above the style's real 5th percentile, measured on 8-bar
   windows of its TRAIN files; no hanging notes) of held-out TEST windows against the files of
   step 2 (the model's own opening, `start="model"`) and of the same request with the seed's
   random first pitch (`start="random"`); goals: usable share generated >= 0.95x real, mean
   on-beat share within 10% of real's.

The classifier is the bundle's `style_classifier.json`; a bundle without one gets one fitted
here on the corpus's TRAIN split with conf/train.yaml's `style_classifier` options (as training
fits it). Results go to `<out>/results.json`, the report to `<out>/REPORT.md` (report.py, which
can re-render it alone); generated MIDI files to `<out>/out/` (git-ignored). Every number of
the report comes from results.json; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from itertools import combinations
from pathlib import Path

import numpy as np

from midigen.train.heldout import NLL_CHUNK, count_notes, model_nll  # noqa: F401 - the study's tests use them here

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BLEND_WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)  # weight of the pair's first style, falling
GOAL_RATIO = 0.8  # generated accuracy / real held-out accuracy, per style
GOAL_RHO = 0.8  # mean Spearman rho of (step, distance to A) >= this; to B <= -this
GOAL_USABLE = 0.95  # usable share of generated files / of real held-out windows, per style
GOAL_ON_BEAT = 0.10  # |generated mean on-beat share / real's - 1| at most this, per style
NGRAM_ORDER = 4
INTERVAL_DRAWS = 2000  # bootstrap resamples behind each goal's 95% interval


@dataclass(frozen=True)
class Sizes:
    """How much the study generates. `files` per style, `blend_files` per blend weight,
    `pairs` interpolations of `steps` clips; every clip `bars` 4/4 bars long."""

    files: int = 128
    blend_files: int = 32
    pairs: int = 20
    steps: int = 5
    variations: int = 8  # clips per interpolation step (`midigen interpolate --num`)
    mix: str = "geometric"  # how interpolation mixes A's and B's next-event distributions (`--mix`)
    bars: int = 8
    seed: int = 0


FULL = Sizes()
QUICK = Sizes(files=8, blend_files=4, pairs=2, variations=2)


# --- settings, model, corpus -----------------------------------------------------------------


def conf_settings() -> dict:
    """The split and the classifier's options as training sets them (conf/), not copied here."""
    from omegaconf import OmegaConf

    data = OmegaConf.load(ROOT / "conf" / "data" / "default.yaml")
    train = OmegaConf.load(ROOT / "conf" / "train.yaml")
    return {"val_fraction": float(data.val_fraction), "test_fraction": float(data.test_fraction),
            "max_file_tokens": data.max_file_tokens,
            "classifier": {"bars": int(train.style_classifier.bars), "per_file": int(train.style_classifier.per_file)}}


def token_corpus(root: Path, params, cache_dir: Path, settings: dict,  # noqa: ANN001, ANN201
                 splits: Mapping[str, str] | None = None):
    """The corpus tokenized with the model's tokenizer (cached), split as training split it.

    `splits` ({relative path: split}) replaces that split: only for a corpus so small that its
    hash split leaves a style without test files (the tests' 16-file fixture)."""
    from midigen.data.cache import build_token_cache

    corpus = build_token_cache(root, params, cache_dir, settings["val_fraction"], settings["test_fraction"],
                               settings["max_file_tokens"])
    if splits is not None:
        corpus.files = [{**f, "split": splits.get(f["rel"], f["split"])} for f in corpus.files]
    return corpus


def split_table(corpus) -> dict[str, str]:  # noqa: ANN001
    return {f["rel"]: f["split"] for f in corpus.files}


def corpus_counts(root: Path, corpus, styles: list[str]) -> dict:  # noqa: ANN001
    """Files per style: the corpus manifest's (when there is one), and the usable files per split."""
    manifest = root / "manifest.csv"
    listed: Counter = Counter()
    if manifest.exists():
        with manifest.open(newline="", encoding="utf-8") as fh:
            listed = Counter(row["style"] for row in csv.DictReader(fh))
    else:
        from midigen.data.cache import list_corpus

        listed = Counter(cf.style for cf in list_corpus(root))
    rows = {}
    for style in sorted(set(styles) | set(corpus.styles)):
        mine = [f for f in corpus.files if f["style"] == style]
        rows[style] = {"listed": listed.get(style, 0), "usable": len(mine), "model_knows": style in styles,
                       **{split: sum(f["split"] == split for f in mine) for split in ("train", "val", "test")}}
    return {"source": "manifest.csv" if manifest.exists() else "style folders", "styles": rows,
            "skipped": len(corpus.skipped)}


def bundle_facts(bundle, ref: str) -> dict:  # noqa: ANN001
    meta = bundle.meta
    return {"ref": ref, "path": _display(bundle.path), "styles": bundle.styles, "run_id": meta.get("run_id"),
            "experiment": meta.get("experiment"), "commit": meta.get("commit"), "model": meta.get("model"),
            "data": meta.get("data"), "tokenizer": bundle.params.mode, "vocab_size": bundle.params.vocab_size,
            "logged_test_nll_per_event": {s: meta.get("metrics", {}).get(f"test/nll/{s}") for s in bundle.styles},
            "has_style_classifier": bundle.style_classifier is not None}


def style_classifier(bundle, root: Path, splits: Mapping[str, str], options: dict):  # noqa: ANN001, ANN201
    """(classifier, where it came from): the bundle's, else fitted on the TRAIN split of `root`."""
    from midigen.evaluation.style import fit_from_corpus

    bundled = bundle.style_classifier
    if bundled is not None:
        return bundled, "bundle"
    classifier = fit_from_corpus(root, splits=splits, styles=bundle.styles, bars=options["bars"],
                                 per_file=options["per_file"])
    return classifier, "fitted"


# --- 1. real held-out accuracy ---------------------------------------------------------------


def real_accuracy(classifier, root: Path, splits: Mapping[str, str], styles: list[str]) -> tuple[dict, dict]:  # noqa: ANN001
    """({style: the classifier's accuracy on the TEST files' excerpts, or None without test files},
    {style: [per test file, 1.0/0.0 for each of its excerpts]}: the same excerpts as
    `held_out_accuracy` draws (the classifier's own excerpt settings), kept by file so the
    ceiling's interval resamples whole files)."""
    from midigen.evaluation.style import held_out_examples

    features, labels, rels = held_out_examples(classifier, root, "test", splits)
    predicted = classifier.predict(features) if labels else []
    by_file: dict[str, dict[str, list[float]]] = {}
    for guess, label, rel in zip(predicted, labels, rels):
        by_file.setdefault(label, {}).setdefault(rel, []).append(float(guess == label))
    per_file = {style: list(by_file.get(style, {}).values()) for style in styles}
    accuracy = {style: float(np.mean([x for f in per_file[style] for x in f])) if per_file[style] else None
                for style in styles}
    return accuracy, per_file


# --- how sure a goal's verdict is ----------------------------------------------------------------


def resampled_means(groups: list, draws: int, rng: np.random.Generator) -> np.ndarray:
    """The mean of all values over `draws` bootstrap resamples of whole groups: a file's windows
    (or excerpts) are drawn together, since they are not independent of each other; one group
    per generated file."""
    sums = np.array([float(np.sum(g)) for g in groups])
    counts = np.array([len(g) for g in groups], dtype=float)
    pick = rng.integers(0, len(groups), size=(draws, len(groups)))
    return sums[pick].sum(axis=1) / np.maximum(counts[pick].sum(axis=1), 1.0)


def ratio_interval(generated: list, real: list, seed: int, minus_one: bool = False) -> list[float] | None:
    """The 95% bootstrap interval of mean(generated) / mean(real) (- 1 with `minus_one`), both
    sides resampled by group (`resampled_means`), seeded so a re-render gives the same bounds.
    None when either side is empty; an upper bound None where over 2.5% of the resamples put the
    real mean at 0 (a style with a test file or two: the ratio has no upper bound there)."""
    if not generated or not real:
        return None
    rng = np.random.default_rng(seed)
    top, bottom = resampled_means(generated, INTERVAL_DRAWS, rng), resampled_means(real, INTERVAL_DRAWS, rng)
    values = np.full(INTERVAL_DRAWS, np.inf)
    np.divide(top, bottom, out=values, where=bottom > 0)
    lo, hi = np.quantile(values - (1.0 if minus_one else 0.0), [0.025, 0.975], method="inverted_cdf")
    return [float(lo), float(hi) if np.isfinite(hi) else None]


def mean_interval(values: list[float], seed: int) -> list[float] | None:
    """The 95% bootstrap interval of the mean of independent values (interpolation's pairs)."""
    if not values:
        return None
    means = resampled_means([[v] for v in values], INTERVAL_DRAWS, np.random.default_rng(seed))
    return [float(v) for v in np.percentile(means, [2.5, 97.5])]


def sure(interval: list[float] | None, low: float | None = None, high: float | None = None) -> bool | None:
    """Whether the verdict on a goal "low <= value <= high" holds for the whole interval: all of it
    inside, or all of it outside on one side. False: the interval straddles a bound, so another
    draw of the same size (another seed, another machine's rounding) could give the other verdict."""
    if interval is None:
        return None
    lo, hi = interval[0], np.inf if interval[1] is None else interval[1]
    inside = (low is None or lo >= low) and (high is None or hi <= high)
    outside = (low is not None and hi < low) or (high is not None and lo > high)
    return bool(inside or outside)


# --- 2. generated accuracy -------------------------------------------------------------------


def write_clips(results: list[dict], folder: Path) -> Path:
    """generate_batch's clips into an emptied `folder` (stale files would be classified too)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for r in results:
        (folder / r["name"]).write_bytes(r["midi"])
    return folder


def generated_accuracy(bundle, classifier, styles: list[str], real: dict, out: Path, sizes: Sizes,  # noqa: ANN001
                       real_files: dict | None = None) -> dict:
    """{style: fidelity of `sizes.files` clips generated with style={style: 1}, against the real
    ceiling}; with `real_files` (real_accuracy's excerpts by file) the ratio's 95% interval too."""
    from midigen.evaluation.style import classify_files
    from midigen.producer.generate import GenerateRequest, generate_batch

    rows = {}
    for style in styles:
        req = GenerateRequest(num=sizes.files, bars=sizes.bars, style={style: 1.0}, seed=sizes.seed, max_copy=None,
                              name=style)
        folder = write_clips(generate_batch(bundle, req), out / style)
        verdict = classify_files(classifier, folder, expected=style)
        summary = verdict["folder"]
        ceiling = real.get(style)
        ratio = summary["fidelity"] / ceiling if ceiling else None
        heard = [[float(v["style"] == style)] for v in verdict["files"].values()]
        interval = ratio_interval(heard, (real_files or {}).get(style) or [], sizes.seed)
        rows[style] = {"ratio_interval": interval, "sure": sure(interval, low=GOAL_RATIO),
                       "files": summary["n_files"], "silent_or_unreadable": len(verdict["skipped"]),
                       "accuracy": summary["fidelity"], "mean_probability": summary["expected_probability"],
                       "classified_as": summary["counts"], "mean_probabilities": summary["mean_probabilities"],
                       "real_accuracy": ceiling, "ratio": ratio,
                       "met": None if ratio is None else bool(ratio >= GOAL_RATIO), "folder": _display(folder)}
    return rows


# --- 2b. in time, file by file ------------------------------------------------------------------


def timing(bundle, styles: list[str], root: Path, splits: Mapping[str, str], out: Path, sizes: Sizes,  # noqa: ANN001
           classifier=None) -> dict:  # noqa: ANN001
    """{style: real held-out windows vs generated files: on-beat share, usable share, the worst file}.

    The bound of "in phase" is the style's 5th percentile of on-beat share over 8-bar windows of
    its TRAIN files (what a model trained on them could know); held-out TEST windows and
    generated files are judged against it alike."""
    from midigen.evaluation.reference import real_reference, usable, window_metrics
    from midigen.evaluation.style import classify_files
    from midigen.producer.generate import generate_batch
    from midigen.producer.report import judge
    from midigen.producer.request import GenerateRequest

    train = [rel for rel, split in splits.items() if split == "train" and rel.split("/")[0] in styles]
    bounds = real_reference(root, window_bars=sizes.bars, files=train)["styles"]
    rows = {}
    for style in styles:
        p5 = bounds[style]["metrics"]["on_beat"]["p5"]
        reference = {"all": {"metrics": {"on_beat": {"p5": p5}}, "windows": bounds[style]["windows"]},
                     "styles": {style: {"metrics": {"on_beat": {"p5": p5}}, "windows": bounds[style]["windows"]}}}
        by_file = [_windows(root / rel, sizes.bars, window_metrics) for rel, split in splits.items()
                   if split == "test" and rel.startswith(style + "/")]
        by_file = [rows_of_file for rows_of_file in by_file if rows_of_file]
        windows = [w for rows_of_file in by_file for w in rows_of_file]
        # per test file, its windows' verdicts and on-beat shares (a goal's interval resamples files)
        real_groups = {"usable": [[float(usable(w, p5)[0]) for w in f] for f in by_file],
                       "on_beat": [[w["on_beat"] for w in f] for f in by_file]}
        real_usable = [x for f in real_groups["usable"] for x in f]
        row = {"p5_train": p5, "train_windows": bounds[style]["windows"], "real_windows": len(windows),
               "real_on_beat": _mean(np.array([w["on_beat"] for w in windows])),
               "real_usable": _mean(np.array(real_usable, dtype=float)),
               "real_repetition_half": _mean(np.array([w["repetition_half"] for w in windows])),
               "real_opening": register(windows),
               # a piece's own opening: the first whole 8 bars of each test file (after a pickup bar)
               "real_opening_first": register([rows_of_file[0] for rows_of_file in by_file])}
        generated_files: dict[str, list] = {}
        # the default opening (the request's: the model's own, after a bar's lead-in), the seed's random
        # first pitch, the model's opening without a lead-in, and (for a style whose music is mostly in
        # bars of other than 4 beats) the style's own meter
        meter = bounds[style].get("meter")  # the meter most of its TRAIN windows are in (`window_meter`)
        row["own_meter"] = meter
        variants = [("model", {}), ("random", {"start": "random"}), ("model_no_lead_in", {"lead_in": 0})]
        if meter and meter["beats"] != 4:
            variants.append(("model_own_meter", {"meter": meter["meter"]}))
        for start, changes in variants:
            req = GenerateRequest(num=sizes.files, bars=sizes.bars, style={style: 1.0}, seed=sizes.seed,
                                  max_copy=None, name=style, **changes)
            clips = generate_batch(bundle, req)
            write_clips(clips, out / f"timing_{start}" / style)
            verdict = judge(clips, req, bundle, reference)
            files = verdict["files"]
            generated_files[start] = list(files.values())
            on_beats = np.array([f["on_beat"] for f in files.values()])
            row[start] = {"on_beat": _mean(on_beats), "usable": _mean(np.array([f["usable"] for f in files.values()],
                                                                                  dtype=float)),
                          "below_p5": int((on_beats < p5).sum()),
                          "off_grid": int(sum(f["on_grid"] < 0.95 for f in files.values())),
                          "repetition_half": _mean(np.array([f["repetition_half"] or 0.0 for f in files.values()])),
                          "opening": register(list(files.values()), row["real_opening"]),
                          "worst": verdict["worst"], "files": len(files)}
        for name, files in generated_files.items():  # the goals, and how sure each verdict is
            row[name].update(goals(files, real_groups, row["real_usable"], row["real_on_beat"], sizes.seed))
            if classifier is not None and name != "model":  # the model start's fidelity is `generated`'s
                heard = classify_files(classifier, out / f"timing_{name}" / style, expected=style)
                row[name]["fidelity"] = heard["folder"]["fidelity"]
        # the default request's verdicts, where the tables and the README read them
        row.update({key: row["model"][key] for key in GOAL_KEYS})
        rows[style] = row
    return rows


GOAL_KEYS = ("usable_ratio", "usable_ratio_interval", "met_usable", "sure_usable", "on_beat_gap",
             "on_beat_gap_interval", "met_on_beat", "sure_on_beat")


def goals(files: list[dict], real_groups: dict, real_usable: float | None, real_on_beat: float | None,
          seed: int) -> dict:
    """The in-time goals of generated `files` (judge's rows) against the real test windows
    (`real_groups`: {"usable", "on_beat"}: per test file, its windows' values): usable ratio and
    on-beat gap, their 95% intervals (both sides resampled), met, and sure (the interval clear of
    the bound)."""
    mine_usable = np.array([float(f["usable"]) for f in files])
    mine_beat = np.array([f["on_beat"] for f in files])
    out = {"usable_ratio": float(mine_usable.mean()) / real_usable if real_usable and files else None,
           "on_beat_gap": float(mine_beat.mean()) / real_on_beat - 1 if real_on_beat and files else None}
    out["usable_ratio_interval"] = ratio_interval([[x] for x in mine_usable], real_groups["usable"], seed)
    out["on_beat_gap_interval"] = ratio_interval([[x] for x in mine_beat], real_groups["on_beat"], seed, minus_one=True)
    out["met_usable"] = None if out["usable_ratio"] is None else bool(out["usable_ratio"] >= GOAL_USABLE)
    out["met_on_beat"] = None if out["on_beat_gap"] is None else bool(abs(out["on_beat_gap"]) <= GOAL_ON_BEAT)
    out["sure_usable"] = sure(out["usable_ratio_interval"], low=GOAL_USABLE)
    out["sure_on_beat"] = sure(out["on_beat_gap_interval"], low=-GOAL_ON_BEAT, high=GOAL_ON_BEAT)
    return out


def register(rows: list[dict], real: dict | None = None) -> dict:
    """Where clips (or real windows) open and how wide they range: the mean and 95th percentile of
    `opening_distance` (semitones from the first onset's median pitch to the clip's), the median
    `pitch_range`; with `real` (this for the real windows), how many open further from their
    register than the real windows' 95th percentile."""
    opening = np.array([r["opening_distance"] for r in rows if r.get("opening_distance") is not None])
    span = np.array([r["pitch_range"] for r in rows if r.get("pitch_range") is not None], dtype=float)
    out = {"opening_mean": _mean(opening), "opening_p95": float(np.percentile(opening, 95)) if opening.size else None,
           "opening_max": float(opening.max()) if opening.size else None,
           "span_median": float(np.median(span)) if span.size else None, "files": len(rows)}
    if real and real.get("opening_p95") is not None:
        out["opening_above_real_p95"] = int((opening > real["opening_p95"]).sum())
    return out


def _windows(path: Path, bars: int, window_metrics) -> list[dict]:  # noqa: ANN001
    from midigen.errors import MidiReadError

    try:
        return window_metrics(path, bars)
    except MidiReadError:
        return []


# --- 3. blends -------------------------------------------------------------------------------


def blend_pairs(styles: list[str], all_pairs: bool = False) -> list[tuple[str, str]]:
    """Style pairs to blend, every style in at least one: neighbours in `styles`' order, in a
    ring (n pairs for n > 2 styles), or with `all_pairs` every pair (n (n - 1) / 2)."""
    if len(styles) < 2:
        return []
    if all_pairs or len(styles) == 2:
        return list(combinations(styles, 2))
    return [(styles[i], styles[(i + 1) % len(styles)]) for i in range(len(styles))]


def falls(values: list[float]) -> bool:
    """Each value below the one before it (strictly)."""
    return all(later < earlier for earlier, later in zip(values, values[1:]))


def blend_curves(bundle, classifier, pairs: list[tuple[str, str]], out: Path, sizes: Sizes) -> list[dict]:  # noqa: ANN001
    """For each pair (a, b): at each of BLEND_WEIGHTS w, `sizes.blend_files` clips with style
    {a: w, b: 1 - w}; the classifier's mean P(a), P(b) and share P(a) / (P(a) + P(b)) per file,
    averaged. Every weight uses the same seed, so the curve moves with the weight, not with luck."""
    from midigen.evaluation.style import classify_files
    from midigen.producer.generate import GenerateRequest, generate_batch

    curves = []
    for a, b in pairs:
        points = []
        for w in BLEND_WEIGHTS:
            req = GenerateRequest(num=sizes.blend_files, bars=sizes.bars, style={a: w, b: 1.0 - w}, seed=sizes.seed,
                                  max_copy=None, name=f"{a}{w:.2f}_{b}{1 - w:.2f}")
            folder = write_clips(generate_batch(bundle, req), out / f"blend_{a}_{b}" / f"{a}_{w:.2f}")
            files = classify_files(classifier, folder)["files"].values()
            p_a = np.array([f["probabilities"][a] for f in files])
            p_b = np.array([f["probabilities"][b] for f in files])
            share = p_a / np.maximum(p_a + p_b, 1e-300)
            points.append({"weight_a": w, "files": len(p_a), "p_a": _mean(p_a), "p_b": _mean(p_b),
                           "share_a": _mean(share), "classified_a": float(np.mean(p_a > p_b)) if p_a.size else None})
        shares = [p["share_a"] for p in points]
        curves.append({"a": a, "b": b, "points": points,
                       "monotone": None if None in shares else falls(shares)})
    return curves


# --- 4. held-out NLL per note ----------------------------------------------------------------


def sequences(corpus, split: str, style: str) -> list[np.ndarray]:  # noqa: ANN001
    return [np.asarray(corpus.tokens[f["offset"]:f["offset"] + f["length"]], dtype=np.int64)
            for f in corpus.split(split) if f["style"] == style]


def positions(corpus, split: str, style: str) -> list[np.ndarray] | None:  # noqa: ANN001
    """Each file's bar positions (what a position-aware model reads beside its events), as `sequences`; None in seed mode."""
    if corpus.positions is None:
        return None
    return [np.asarray(corpus.positions[f["offset"]:f["offset"] + f["length"]], dtype=np.int64)
            for f in corpus.split(split) if f["style"] == style]


def ngram_nll(ngram, seqs: list[np.ndarray]) -> tuple[float, int]:  # noqa: ANN001
    """(total NLL in nats, events) of events 2..N, as `model_nll` scores them: the n-gram's own
    `nll` also scores each file's first event from the start context, which is taken back out."""
    total, events = ngram.nll(seqs)
    firsts = np.array([s[0] for s in seqs if s.size], dtype=np.int64)
    starts = np.full((firsts.size, ngram.order - 1), ngram.bos, dtype=np.int64)
    total -= float(-np.log(ngram.prob(starts, firsts)).sum())
    return total, events - int(firsts.size)


def heldout_nll(bundle, corpus, styles: list[str], order: int = NGRAM_ORDER) -> dict:  # noqa: ANN001
    """{style: NLL per note (nats) of its TEST files: the model conditioned on the style (one-hot
    weights) against an `order`-gram fitted on the style's TRAIN files}, or None without files."""
    import torch

    from midigen.train.baselines import NGramModel

    rows = {}
    for i, style in enumerate(styles):
        test, train = sequences(corpus, "test", style), sequences(corpus, "train", style)
        if not test or not train:
            rows[style] = None
            continue
        notes = count_notes(test)
        weights = torch.eye(len(bundle.styles))[bundle.styles.index(style)][None]  # (1, S)
        m_total, m_events = model_nll(bundle.model, test, weights, bar_positions=positions(corpus, "test", style))
        ngram = NGramModel.fit(train, order, bundle.params.vocab_size)
        n_total, n_events = ngram_nll(ngram, test)
        rows[style] = {"test_files": len(test), "train_files": len(train), "notes": notes, "events": m_events,
                       "model_per_note": m_total / notes, "ngram_per_note": n_total / notes,
                       "model_per_event": m_total / m_events, "ngram_per_event": n_total / n_events,
                       "model_better": m_total < n_total}
    return rows


# --- 5. interpolation ------------------------------------------------------------------------


def interpolation_pairs(corpus, root: Path, styles: list[str], count: int, seed: int) -> list[dict]:  # noqa: ANN001
    """`count` (A, B) pairs of TEST files of different styles, cycling through the ordered style
    pairs; each style's files are drawn in a seeded shuffled order, reused only when exhausted."""
    test = {s: [root / f["rel"] for f in corpus.split("test") if f["style"] == s] for s in styles}
    style_pairs = [(a, b) for a in styles for b in styles if a != b and test[a] and test[b]]
    if not style_pairs:
        return []
    rng = np.random.default_rng(seed)
    queues: dict[str, list[Path]] = {s: [] for s in styles}

    def draw(style: str) -> Path:
        if not queues[style]:
            queues[style] = [test[style][i] for i in rng.permutation(len(test[style]))]
        return queues[style].pop()

    pairs = []
    for k in range(count):
        a, b = style_pairs[k % len(style_pairs)]
        pairs.append({"style_a": a, "a": draw(a), "style_b": b, "b": draw(b)})
    return pairs


def interpolation(bundle, classifier, pairs: list[dict], out: Path, sizes: Sizes) -> dict:  # noqa: ANN001
    """For each pair, `sizes.steps` clips from A to B (`interpolate_batch`, seed = the pair's
    number, A's style and B's style one-hot); the distance of each clip's style features to A's
    and to B's whole file, in the classifier's standardised units (features / its scale);
    Spearman rho of (step, distance), per pair and averaged over the pairs."""
    from midigen.data.midi_io import TICKS_PER_BEAT
    from midigen.evaluation.style import file_features, note_features
    from midigen.producer.generate import GenerateRequest
    from midigen.producer.interpolate import interpolate_batch, spearman

    rows = []
    steps = list(range(sizes.steps))
    for k, pair in enumerate(pairs):
        req = GenerateRequest(num=sizes.variations, bars=sizes.bars, seed=k, max_copy=None, name=f"pair{k:02d}")
        clips = interpolate_batch(bundle, pair["a"], pair["b"], sizes.steps, req,
                                  style_a=f"{pair['style_a']}=1", style_b=f"{pair['style_b']}=1", mix=sizes.mix)
        write_clips(clips, out / "interpolate" / f"pair{k:02d}_{pair['style_a']}_to_{pair['style_b']}")
        # clips come step by step, `variations` per step: rows of (steps, variations)
        features = np.array([note_features(*clip["notes"], TICKS_PER_BEAT) for clip in clips])  # (steps * V, F)
        z_clips = features / classifier.scale
        z_a, z_b = file_features(pair["a"]) / classifier.scale, file_features(pair["b"]) / classifier.scale
        d_a = np.linalg.norm(z_clips - z_a, axis=1).reshape(sizes.steps, -1)
        d_b = np.linalg.norm(z_clips - z_b, axis=1).reshape(sizes.steps, -1)
        p_a = classifier.predict_proba(features)[:, classifier.styles.index(pair["style_a"])] \
            if pair["style_a"] in classifier.styles else np.full(len(clips), np.nan)
        p_a = p_a.reshape(sizes.steps, -1)
        rows.append({"style_a": pair["style_a"], "style_b": pair["style_b"], "a": _display(pair["a"]),
                     "b": _display(pair["b"]), "seed": k, "notes": [int(len(c["notes"][0])) for c in clips],
                     "d_a": d_a.mean(axis=1).tolist(), "d_b": d_b.mean(axis=1).tolist(),
                     "p_style_a": p_a.mean(axis=1).tolist(),
                     "rho_a": spearman(steps, d_a.mean(axis=1)), "rho_b": spearman(steps, d_b.mean(axis=1)),
                     # one clip per step (variation 1 alone): what a single `--num 1` run shows
                     "rho_a_single": spearman(steps, d_a[:, 0]), "rho_b_single": spearman(steps, d_b[:, 0])})
    if not rows:
        return {"pairs": [], "mean_rho_a": None, "mean_rho_b": None, "met_a": None, "met_b": None}
    mean_rho_a = float(np.mean([r["rho_a"] for r in rows]))
    mean_rho_b = float(np.mean([r["rho_b"] for r in rows]))
    interval_a = mean_interval([r["rho_a"] for r in rows], sizes.seed)
    interval_b = mean_interval([r["rho_b"] for r in rows], sizes.seed)
    return {"rho_a_interval": interval_a, "rho_b_interval": interval_b,
            "sure_a": sure(interval_a, low=GOAL_RHO), "sure_b": sure(interval_b, high=-GOAL_RHO),
            "pairs": rows, "steps": sizes.steps, "weights_of_b": [i / (sizes.steps - 1) for i in steps],
            "mean_rho_a": mean_rho_a, "mean_rho_b": mean_rho_b,
            "met_a": bool(mean_rho_a >= GOAL_RHO), "met_b": bool(mean_rho_b <= -GOAL_RHO),
            "mean_d_a": np.mean([r["d_a"] for r in rows], axis=0).tolist(),
            "mean_d_b": np.mean([r["d_b"] for r in rows], axis=0).tolist(),
            "mean_p_style_a": np.mean([r["p_style_a"] for r in rows], axis=0).tolist(),
            "variations": sizes.variations,
            "mean_rho_a_single": float(np.mean([r["rho_a_single"] for r in rows])),
            "mean_rho_b_single": float(np.mean([r["rho_b_single"] for r in rows])),
            "pairs_rising_a": sum(r["rho_a"] >= GOAL_RHO for r in rows),
            "pairs_falling_b": sum(r["rho_b"] <= -GOAL_RHO for r in rows)}


# --- the whole study -------------------------------------------------------------------------


def run_study(model: str, corpus_root: str | Path, out: str | Path, sizes: Sizes = FULL,
              cache_dir: str | Path | None = None, all_pairs: bool = False,
              splits: Mapping[str, str] | None = None, command: str | None = None, precision: str = "fp32") -> dict:
    """Every measurement of the study, as the dict results.json holds (also written there).

    `model`: a bundle folder (or anything `midigen generate --model` takes); `corpus_root`: a
    `<root>/<style>/*.mid` corpus; `out`: where results.json, REPORT.md and out/ go;
    `cache_dir`: the token cache (default: the repo's data/cache, as training uses); `precision`:
    of the sampler's step matmuls (MIDIGEN_PRECISION for the run): fp32 by default, so the clips a
    seed draws, and with them the verdicts, repeat on other machines (bf16 rounding differs between
    CPUs); "auto" for what `midigen generate` uses on this CPU."""
    import torch

    threads = torch.get_num_threads()
    before = os.environ.get("MIDIGEN_PRECISION")
    if precision != "auto":
        os.environ["MIDIGEN_PRECISION"] = precision
    # Every forward pass here is small (one clip, or a few dozen files): on a shared CPU one
    # thread is several times faster than two contending ones (measured: 3 s against 66 s for
    # one interpolation). MIDIGEN_THREADS overrides it, as for training.
    torch.set_num_threads(max(1, int(os.environ.get("MIDIGEN_THREADS", 1))))
    try:
        return _run_study(model, corpus_root, out, sizes, cache_dir, all_pairs, splits, command)
    finally:
        torch.set_num_threads(threads)
        if before is None:
            os.environ.pop("MIDIGEN_PRECISION", None)
        else:
            os.environ["MIDIGEN_PRECISION"] = before


def _run_study(model, corpus_root, out, sizes, cache_dir, all_pairs, splits, command) -> dict:  # noqa: ANN001
    from midigen.errors import MidigenError
    from midigen.producer.bundle import load_bundle
    from midigen.producer.registry import resolve_model

    started = time.time()
    timings: dict[str, float] = {}

    def phase(name: str, since: float) -> float:
        now = time.time()
        timings[name] = now - since
        print(f"style study: {name} done in {timings[name]:.1f} s", flush=True)
        return now

    out, root = Path(out), Path(corpus_root)
    clips = out / "out"
    settings = conf_settings()
    bundle = load_bundle(resolve_model(model))
    if len(bundle.styles) < 2:
        raise MidigenError(f"{model}: the model knows {len(bundle.styles)} style(s); the style study needs a "
                           "style-conditioned model that knows at least 2")
    cache_dir = Path(cache_dir) if cache_dir else ROOT / "data" / "cache"
    corpus = token_corpus(root, bundle.params, cache_dir, settings, splits)
    table = split_table(corpus)
    t = phase("model_and_corpus", started)

    classifier, source = style_classifier(bundle, root, table, settings["classifier"])
    # what the model and the classifier know and the corpus holds (a corpus of some styles measures those)
    styles = [s for s in bundle.styles if s in classifier.styles and s in corpus.styles]
    t = phase("classifier", t)
    real, real_files = real_accuracy(classifier, root, table, styles)
    t = phase("real_accuracy", t)
    generated = generated_accuracy(bundle, classifier, styles, real, clips, sizes, real_files)
    t = phase("generated", t)
    in_time = timing(bundle, styles, root, table, clips, sizes, classifier)
    t = phase("timing", t)
    blends = blend_curves(bundle, classifier, blend_pairs(styles, all_pairs), clips, sizes)
    t = phase("blends", t)
    nll = heldout_nll(bundle, corpus, styles)
    t = phase("nll", t)
    pairs = interpolation_pairs(corpus, root, styles, sizes.pairs, sizes.seed)
    moves = interpolation(bundle, classifier, pairs, clips, sizes)
    phase("interpolation", t)
    timings["total"] = time.time() - started

    results = {
        "command": command, "model": bundle_facts(bundle, model), "corpus": _display(root),
        "split": {"val_fraction": settings["val_fraction"], "test_fraction": settings["test_fraction"],
                  "overridden": splits is not None},
        "files": corpus_counts(root, corpus, bundle.styles), "sizes": asdict(sizes), "all_pairs": all_pairs,
        "styles": styles, "styles_not_measured": [s for s in bundle.styles if s not in styles],
        "classifier": {"source": source, "styles": classifier.styles, "info": classifier.info},
        "goals": {"ratio": GOAL_RATIO, "rho": GOAL_RHO, "usable": GOAL_USABLE, "on_beat": GOAL_ON_BEAT},
        "interval_draws": INTERVAL_DRAWS, "defaults": request_defaults(),
        "blend_weights": list(BLEND_WEIGHTS), "timing": in_time,
        "ngram_order": NGRAM_ORDER, "nll_chunk": NLL_CHUNK, "real_accuracy": real, "generated": generated,
        "blends": blends, "nll": nll,
        "interpolation": moves, "machine": machine(), "timings": timings,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False, default=_json_default) + "\n")
    return json.loads((out / "results.json").read_text())


def request_defaults() -> dict:
    """How `generate` draws a clip when asked nothing more: what the study's plain requests get."""
    from midigen.producer.request import GenerateRequest

    req = GenerateRequest(seed=0)
    return {"start": req.start, "lead_in": req.lead_in, "meter": req.meter, "grid": req.grid}


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    from midigen.model import resolve_precision
    from midigen.producer.native import resolve

    # what decides which clips a seed draws here: the step matmuls' precision and the kernels
    sampling = {"precision": resolve_precision("auto"), "kernels": "native" if resolve("auto") else "python"}
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "sampling": sampling,
            "torch": torch.__version__, "python": platform.python_version(), "system": platform.platform(terse=True)}


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _display(path: str | Path) -> str:
    """A path relative to the repo when it lies inside it (results stay the same on every clone)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _json_default(value):  # noqa: ANN001, ANN202
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return _display(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a model bundle folder (or models:/NAME@ALIAS)")
    p.add_argument("--corpus", required=True, help="a <root>/<style>/*.mid corpus, split as training split it")
    p.add_argument("--out", default=str(HERE), help="where results.json, REPORT.md and out/ go (default: this folder)")
    p.add_argument("--files", type=int, default=None, help=f"generated files per style (default {FULL.files}; "
                   f"--quick {QUICK.files})")
    p.add_argument("--blend-files", type=int, default=None, help=f"files per blend weight (default {FULL.blend_files})")
    p.add_argument("--pairs", type=int, default=None, help=f"interpolation pairs (default {FULL.pairs})")
    p.add_argument("--variations", type=int, default=None,
                   help=f"clips per interpolation step (default {FULL.variations})")
    p.add_argument("--mix", choices=["geometric", "arithmetic"], default=None,
                   help=f"interpolation's mix of the two distributions (default {FULL.mix})")
    p.add_argument("--all-pairs", action="store_true", help="blend every pair of styles, not neighbours in a ring")
    p.add_argument("--cache", default=None, help="token cache folder (default data/cache)")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                   help="the sampler's step matmuls (default fp32: the same clips from a seed on other machines; "
                        "auto: what generate uses on this CPU)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK.files} files per style, {QUICK.blend_files} per blend weight, "
                        f"{QUICK.pairs} interpolation pairs")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    sizes = replace(base, **{k: v for k, v in (("files", args.files), ("blend_files", args.blend_files),
                                               ("pairs", args.pairs), ("variations", args.variations),
                                               ("mix", args.mix))
                              if v is not None})
    if min(sizes.files, sizes.blend_files, sizes.variations) < 1 or sizes.pairs < 0:
        p.error("--files, --blend-files and --variations must be at least 1, --pairs at least 0")
    command = shlex.join(["python", "experiments/style_study/study.py", *(sys.argv[1:] if argv is None else argv)])
    from midigen.errors import MidigenError

    try:
        results = run_study(args.model, args.corpus, args.out, sizes, args.cache, args.all_pairs, command=command,
                            precision=args.precision)
    except MidigenError as exc:
        print(f"style study: {exc}", file=sys.stderr)
        return 1
    sys.path.insert(0, str(HERE))
    import report

    path = report.write_report(results, Path(args.out))
    print(f"wrote {Path(args.out) / 'results.json'} and {path}\n")
    print(report.readme_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
