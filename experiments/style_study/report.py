"""Write the style study's REPORT.md from its results.json.

    python experiments/style_study/report.py [--out experiments/style_study]

study.py calls `write_report` after measuring; run this alone to re-render the report from
the results.json already there. Every number in the report is read from results.json; the
words around them only state comparisons this code makes of those numbers.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent


def fmt(value, digits: int = 3) -> str:  # noqa: ANN001
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def met(flag, sure=None) -> str:  # noqa: ANN001
    """The verdict; "within noise" when the goal's 95% interval straddles its bound (`sure` False)."""
    verdict = "-" if flag is None else ("met" if flag else "**not met**")
    return verdict + (", within noise" if flag is not None and sure is False else "")


def span(interval, digits: int = 2, percent: bool = False) -> str:  # noqa: ANN001
    """A 95% interval as "lo..hi" (signed percentages with `percent`), "-" without one."""
    if not interval:
        return "-"
    lo, hi = interval
    if percent:
        return f"{100 * lo:+.0f}..{'' if hi is None else f'{100 * hi:+.0f}'}%"
    return f"{fmt(lo, digits)}..{'' if hi is None else fmt(hi, digits)}"


def unsure(results: dict) -> list[str]:
    """The goals whose 95% interval straddles their bound: "style: goal (verdict)"."""
    out = []
    for style, r in (results.get("timing") or {}).items():
        for key, name in (("usable", "usable ratio"), ("on_beat", "on-beat")):
            if r.get(f"sure_{key}") is False:
                out.append(f"{style} {name} ({'met' if r[f'met_{key}'] else 'not met'})")
    for style, g in results["generated"].items():
        if g.get("sure") is False:
            out.append(f"{style} fidelity ({'met' if g['met'] else 'not met'})")
    moves = results["interpolation"]
    for end in ("a", "b"):
        if moves.get(f"sure_{end}") is False:
            out.append(f"interpolation rho to {end.upper()} ({'met' if moves[f'met_{end}'] else 'not met'})")
    return out


def noise_note(results: dict) -> list[str]:
    """What the intervals say, in a paragraph: which verdicts another draw of the same size could flip."""
    if "interval_draws" not in results:
        return []  # a results.json from before the intervals
    flips = unsure(results)
    return [f"How sure each verdict is: every goal's 95% interval comes from {results['interval_draws']:,} bootstrap "
            "resamples of both sides (generated files; real test files, a file's windows or excerpts drawn "
            "together). A verdict whose interval straddles the goal's bound is marked *within noise*: another "
            "seed, or another CPU's float rounding drawing other clips from the same seed, could give the other "
            "verdict. " + (f"Within noise here: {', '.join(flips)}." if flips else "Every verdict here is clear of "
                           "its bound.")]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{int(value // 60)} min {value % 60:.0f} s"


def readme_table(results: dict) -> str:
    """The study's headline in a few lines of Markdown, for the project README."""
    goal = results["goals"]["ratio"]
    sizes = results["sizes"]
    rows = []
    for style in results["styles"]:
        g, nll = results["generated"][style], results["nll"].get(style) or {}
        rows.append([style, fmt(g["real_accuracy"]), fmt(g["accuracy"]), fmt(g["ratio"], 2),
                     span(g.get("ratio_interval")), met(g["met"], g.get("sure")),
                     fmt(nll.get("model_per_note"), 2), fmt(nll.get("ngram_per_note"), 2)])
    lines = table(["style", "classifier on held-out real 8-bar excerpts", f"on {sizes['files']} generated 8-bar files",
                   f"ratio (goal >= {goal})", "95% interval", "goal", "test NLL per note: model",
                   f"{results['ngram_order']}-gram"], rows)
    if results.get("timing"):
        lines += ["", "In time, file by file (real held-out 8-bar windows vs generated files; see the report):", ""]
        lines += timing_table(results)
    blends = results["blends"]
    monotone = sum(bool(c["monotone"]) for c in blends)
    moves = results["interpolation"]
    lines += ["", f"Blends: P(a) / (P(a) + P(b)) falls at every step of the weight for {monotone} of {len(blends)} "
              f"style pair(s). Interpolation over {len(moves['pairs'])} held-out pairs: mean Spearman rho of "
              f"(step, distance to A) {fmt(moves['mean_rho_a'], 2)} (95% {span(moves.get('rho_a_interval'))}; "
              f"{met(moves['met_a'], moves.get('sure_a'))}, goal >= {results['goals']['rho']}), of (step, distance "
              f"to B) {fmt(moves['mean_rho_b'], 2)} (95% {span(moves.get('rho_b_interval'))}; "
              f"{met(moves['met_b'], moves.get('sure_b'))}, goal <= -{results['goals']['rho']})."]
    lines += ["", *noise_note(results)] if noise_note(results) else []
    return "\n".join(lines)


def timing_table(results: dict) -> list[str]:
    """Real held-out windows vs generated files, per style: in time, file by file."""
    goals, timing = results["goals"], results.get("timing") or {}
    rows = []
    for style, r in timing.items():
        m, rnd = r["model"], r["random"]
        worst = m["worst"] or {}
        nll = (results["nll"].get(style) or {}).get("model_per_note")
        fidelity = (results["generated"].get(style) or {}).get("ratio")
        rows.append([style, f"{fmt(r['real_on_beat'], 2)} ({fmt(r['p5_train'], 2)})", fmt(m["on_beat"], 2),
                     fmt(rnd["on_beat"], 2), f"{m['below_p5']} / {rnd['below_p5']}", f"{m['off_grid']} / {rnd['off_grid']}",
                     fmt(r["real_usable"], 2), fmt(m["usable"], 2), fmt(rnd["usable"], 2),
                     f"{fmt(r['usable_ratio'], 2)} ({span(r.get('usable_ratio_interval'))})",
                     met(r["met_usable"], r.get("sure_usable")),
                     f"{_percent(r.get('on_beat_gap'))} ({span(r.get('on_beat_gap_interval'), percent=True)}): "
                     f"{met(r['met_on_beat'], r.get('sure_on_beat'))}",
                     f"{fmt(worst.get('on_beat'), 2)}", f"{fmt(r['real_repetition_half'], 2)} / {fmt(m['repetition_half'], 2)}",
                     fmt(fidelity, 2), fmt(nll, 2)])
    return table(["style", "real on-beat mean (train p5)", "generated on-beat: model start", "random start",
                  "files below p5: model / random", "off the grid: model / random", "usable: real",
                  "usable: model start", "usable: random start",
                  f"usable ratio (95% interval; goal >= {goals.get('usable')})", "usable goal",
                  f"on-beat: generated vs real (95% interval; goal within {int(100 * goals.get('on_beat', 0))}%)",
                  "worst file's on-beat",
                  "repetition at half: real / generated", "fidelity ratio", "test NLL per note"], rows)


def meter_table(results: dict) -> list[str]:
    """Styles whose music is mostly in bars of other than 4 beats: their clips in 4/4 and in that meter."""
    goals, rows = results["goals"], []
    for style, r in (results.get("timing") or {}).items():
        own, theirs = r.get("own_meter"), r.get("model_own_meter")
        if not own or not theirs:
            continue
        m = r["model"]
        rows.append([style, f"{own['meter']} ({100 * own['share']:.0f}% of the windows in {own['beats']}-beat bars)",
                     fmt(r["real_on_beat"], 2), f"{fmt(m['on_beat'], 2)} / {fmt(theirs['on_beat'], 2)}",
                     f"{_percent(r.get('on_beat_gap'))} / {_percent(theirs.get('on_beat_gap'))} "
                     f"({span(theirs.get('on_beat_gap_interval'), percent=True)}): "
                     f"{met(theirs.get('met_on_beat'), theirs.get('sure_on_beat'))}",
                     fmt(r["real_usable"], 2), f"{fmt(m['usable'], 2)} / {fmt(theirs['usable'], 2)}",
                     f"{fmt(r.get('usable_ratio'), 2)} / {fmt(theirs.get('usable_ratio'), 2)} "
                     f"({span(theirs.get('usable_ratio_interval'))}): "
                     f"{met(theirs.get('met_usable'), theirs.get('sure_usable'))}",
                     f"{theirs['below_p5']} / {theirs['off_grid']}", fmt((theirs.get("worst") or {}).get("on_beat"), 2)])
    if not rows:
        return []
    return table(["style", "its own meter (TRAIN windows)", "real on-beat", "generated on-beat: 4/4 / own meter",
                  f"vs real: 4/4 / own meter (95% interval; goal within {int(100 * goals.get('on_beat', 0))}%)",
                  "usable: real", "usable: 4/4 / own meter",
                  f"usable ratio: 4/4 / own meter (95% interval; goal >= {goals.get('usable')})",
                  "own meter: files below p5 / off the grid", "own meter: worst file's on-beat"], rows)


def _lead_in_words(results: dict) -> str:
    lead_in = (results.get("defaults") or {}).get("lead_in")
    return "" if not lead_in else f", after a lead-in of {lead_in} bar{'s' if lead_in > 1 else ''} it does not write"


def _percent(value) -> str:  # noqa: ANN001
    return "-" if value is None else f"{100 * value:+.1f}%"


def opening_table(results: dict) -> list[str]:
    """Where clips open and how wide they range, real held-out windows vs generated, per style:
    the model's opening without a lead-in and with a bar's lead-in (whichever is the default), and
    the seed's random start."""
    rows = []
    for style, r in (results.get("timing") or {}).items():
        real, first = r.get("real_opening"), r.get("real_opening_first")
        if not real:
            continue  # a results.json from before the opening was measured
        if "model_no_lead_in" in r:  # the lead-in is the default
            plain, lead, plain_fid, lead_fid = r["model_no_lead_in"], r["model"], r["model_no_lead_in"], None
        else:  # an older run: no lead-in by default, the lead-in a variant
            plain, lead, plain_fid, lead_fid = r["model"], r.get("model_lead_in") or {}, None, r.get("model_lead_in")
        m, rnd, led = plain["opening"], r["random"]["opening"], lead.get("opening") or {}
        goals = []
        if "met_usable" in plain and "met_usable" in lead:
            goals = [f"{met(plain['met_usable'], plain.get('sure_usable'))} / "
                     f"{met(lead['met_usable'], lead.get('sure_usable'))}",
                     f"{_percent(plain.get('on_beat_gap'))} / {_percent(lead.get('on_beat_gap'))}: "
                     f"{met(plain['met_on_beat'], plain.get('sure_on_beat'))} / "
                     f"{met(lead['met_on_beat'], lead.get('sure_on_beat'))}",
                     f"{fmt(fidelity(results, style, plain_fid), 2)} / {fmt(fidelity(results, style, lead_fid), 2)}"]
        rows.append([style, f"{fmt(real['opening_mean'], 1)} ({fmt(real['opening_p95'], 1)})",
                     fmt(first["opening_mean"], 1), fmt(m["opening_mean"], 1), fmt(led.get("opening_mean"), 1),
                     fmt(rnd["opening_mean"], 1),
                     f"{m['opening_above_real_p95']} / {led.get('opening_above_real_p95', '-')} / "
                     f"{rnd['opening_above_real_p95']}",
                     fmt(real["span_median"], 0), fmt(m["span_median"], 0), fmt(led.get("span_median"), 0),
                     fmt(rnd["span_median"], 0),
                     f"{fmt(plain['on_beat'], 2)} / {fmt(lead.get('on_beat'), 2)}",
                     f"{fmt(plain['usable'], 2)} / {fmt(lead.get('usable'), 2)}",
                     f"{fmt(m.get('opening_max'), 1)} / {fmt(led.get('opening_max'), 1)}", *goals])
    if not rows:
        return []
    goals = ["usable goal: no lead-in / lead-in", "on-beat vs real: no lead-in / lead-in",
             "fidelity ratio: no lead-in / lead-in"] if len(rows[0]) > 14 else []
    return table(["style", "opening: real windows mean (p95)", "real pieces' first 8 bars",
                  "generated: model start, no lead-in", "with a bar's lead-in", "random start",
                  "files opening beyond real p95: no lead-in / lead-in / random", "span, median: real",
                  "no lead-in", "lead-in", "random start", "on-beat: no lead-in / lead-in",
                  "usable: no lead-in / lead-in", "worst opening: no lead-in / lead-in", *goals], rows)


def fidelity(results: dict, style: str, variant: dict | None = None) -> float | None:
    """The fidelity ratio of a variant's clips (`timing`'s row; default the default request's, `generated`)."""
    g = results["generated"].get(style) or {}
    if variant is None:
        return g.get("ratio")
    real = g.get("real_accuracy")
    return variant["fidelity"] / real if real and variant.get("fidelity") is not None else None


def render(results: dict) -> str:
    model, sizes, goals = results["model"], results["sizes"], results["goals"]
    styles = results["styles"]
    classifier = results["classifier"]
    info = classifier["info"]
    lines = [f"# Style study: `{model['path']}`", "",
             "Does the model write the style it is asked for, blend two styles by weight, and move from one "
             "held-out piece to another? Measured with the style classifier (`midigen.evaluation.style`) on the "
             "corpus split training used. Written by `experiments/style_study/study.py` from its "
             "`results.json`; no number here is typed by hand.", ""]

    # setup
    arch = model.get("model") or {}
    data = model.get("data") or {}
    if classifier["source"] == "bundle":
        how = "the bundle's own `style_classifier.json` (fitted on the training split when the model was trained)"
    else:
        how = (f"**fitted here**: the bundle has no `style_classifier.json`, so one was fitted with "
               f"`fit_from_corpus` on the corpus's TRAIN split only ({info.get('per_file')} random "
               f"{info.get('bars')}-bar excerpts per file, conf/train.yaml's `style_classifier`; "
               f"examples {', '.join(f'{s} {n:,}' for s, n in (info.get('train_examples') or {}).items())})")
    split = results["split"]
    lines += ["## Setup", "",
              f"- Command: `{results['command'] or 'run_study(...)'}`",
              f"- Model: `{model['path']}` (given as `{model['ref']}`); run `{model.get('run_id')}` of experiment "
              f"`{model.get('experiment')}`, commit `{model.get('commit')}`; styles {', '.join(model['styles'])}; "
              f"{model['tokenizer']} tokens (vocabulary {model['vocab_size']}); LSTM {arch.get('num_layers')} x "
              f"{arch.get('hidden_size')}, {arch.get('input')} input, style embedding {arch.get('style_dim')}; "
              f"trained on {fmt(data.get('train_files'))} files.",
              f"- Corpus: `{results['corpus']}`, split by file as training splits it (val {split['val_fraction']}, "
              f"test {split['test_fraction']}, conf/data/default.yaml)"
              + (" - **overridden** by the caller" if split["overridden"] else "") + ".",
              f"- Style classifier: {how}; it knows {', '.join(classifier['styles'])}.",
              f"- Sizes: {sizes['files']} generated files per style, {sizes['blend_files']} per blend weight, "
              f"{sizes['pairs']} interpolation pairs of {sizes['steps']} clips; every clip {sizes['bars']} bars at "
              f"120 bpm, seed {sizes['seed']}, no originality resampling (`max_copy=None`). Files are under "
              f"`out/` beside this report (not committed).",
              f"- Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, torch "
              f"{results['machine']['torch']} on {results['machine']['torch_threads']} thread(s) (MIDIGEN_THREADS), "
              f"Python {results['machine']['python']}"
              + (f"; sampling in {results['machine']['sampling']['precision']} with the "
                 f"{results['machine']['sampling']['kernels']} kernels" if results["machine"].get("sampling") else "")
              + f"; finished {results['finished']}."]
    if results["styles_not_measured"]:
        lines.append(f"- Not measured: {', '.join(results['styles_not_measured'])} (unknown to the classifier, or not in the corpus).")
    lines += [""]
    lines += table(["phase", "wall time"], [[name, seconds(value)] for name, value in results["timings"].items()])

    files = results["files"]
    lines += ["", "## Files per style", "",
              f"Listed: from the corpus's {files['source']}; usable: tokenized by the model's tokenizer "
              f"({files['skipped']} skipped in all).", ""]
    lines += table(["style", "listed", "usable", "train", "val", "test", "the model knows it"],
                   [[s, fmt(r["listed"]), fmt(r["usable"]), fmt(r["train"]), fmt(r["val"]), fmt(r["test"]),
                     fmt(r["model_knows"])] for s, r in files["styles"].items()])

    if results.get("timing"):
        t = results["timing"]
        sizes_files = next(iter(t.values()))["model"]["files"]
        lines += ["", "## In time, file by file: real held-out excerpts vs generated", "",
                  f"Real: every {sizes['bars']}-bar window of each TEST file, cut at its own bar lines. Generated: "
                  f"{sizes_files} files per style with `style={{s: 1.0}}`, seed {sizes['seed']}, opened by the model "
                  f"(`start=model`, the default{_lead_in_words(results)}) and with the seed's uniformly random "
                  "first pitch (`start=random`). "
                  "A file is usable when on the 16th/triplet grid (>= 0.95 of onsets and offsets), in phase (on-beat "
                  "share at or above the style's 5th percentile over its TRAIN windows, shown in brackets) and "
                  "without hanging notes. Goals: usable share generated >= "
                  f"{results['goals'].get('usable')}x real; mean on-beat share within "
                  f"{int(100 * results['goals'].get('on_beat', 0))}% of real's.", ""]
        lines += timing_table(results)
        lines += ["", *noise_note(results)] if noise_note(results) else []
        meters = meter_table(results)
        if meters:
            lines += ["", "### In the style's own meter", "",
                      "Styles whose TRAIN windows are mostly in bars of other than 4 beats (the model's reference "
                      "says so too: `window_meter`): the same "
                      f"request in 4/4 (the default, above) and with `meter=` the signature they use most (a clip of "
                      f"{sizes['bars']} bars of it). Real: the same TEST windows, whatever their meter. On-beat counts "
                      "quarter-note beats in any meter.", ""]
            lines += meters
        opening = opening_table(results)
        if opening:
            lines += ["", "### Where a clip opens", "",
                      "Generated: the default request (a bar's lead-in, where it is the default) and the model's "
                      "opening without a lead-in (`lead_in=0`). "
                      "Opening: semitones between the median pitch of the notes at a clip's first onset and the "
                      "median pitch of all its notes (`metrics.opening_distance`; 0 for a chord or note in the middle "
                      "of the clip's register). Real: the same TEST windows, and each test file's first whole "
                      "window (how its pieces open). Files beyond p95: generated files opening further from their "
                      "register than 95% of the real windows. Span: highest minus lowest pitch, semitones.", ""]
            lines += opening

    # 1 + 2
    generated = results["generated"]
    reached = [s for s in styles if generated[s]["met"]]
    judged = [s for s in styles if generated[s]["met"] is not None]
    lines += ["", "## Style fidelity: real held-out vs generated", "",
              f"Real: the classifier's accuracy on {info.get('per_file', '')} random {info.get('bars', '')}-bar "
              f"excerpts of each TEST file (the ceiling). Generated: {sizes['files']} files per style with "
              f"`style={{s: 1.0}}`, each classified whole. Ratio = generated / real; goal >= {goals['ratio']}: "
              f"met for {len(reached)} of {len(judged)} style(s)"
              + (f" ({', '.join(reached)})" if reached else "") + ".", ""]
    lines += table(["style", "real held-out accuracy", "generated accuracy", "ratio", "95% interval",
                    f"goal >= {goals['ratio']}", "mean P(style) of generated", "generated files classified as"],
                   [[s, fmt(generated[s]["real_accuracy"]), fmt(generated[s]["accuracy"]), fmt(generated[s]["ratio"]),
                     span(generated[s].get("ratio_interval")), met(generated[s]["met"], generated[s].get("sure")),
                     fmt(generated[s]["mean_probability"]),
                     ", ".join(f"{k} {v}" for k, v in generated[s]["classified_as"].items())
                     + (f" ({generated[s]['silent_or_unreadable']} silent)" if generated[s]["silent_or_unreadable"]
                        else "")] for s in styles])

    # 3
    weights = results["blend_weights"]
    blends = results["blends"]
    lines += ["", "## Blends", "",
              f"`style={{a: w, b: 1 - w}}` at w = {', '.join(f'{w:g}' for w in weights)}, {sizes['blend_files']} "
              "files each, the same seed at every weight. Share = the mean over files of P(a) / (P(a) + P(b)); it "
              "should fall at every step as w falls (monotone).", ""]
    if blends:
        lines += table(["pair (a, b)", *[f"share at w={w:g}" for w in weights], "monotone"],
                       [[f"{c['a']}, {c['b']}", *[fmt(p["share_a"], 4) for p in c["points"]], fmt(c["monotone"])]
                        for c in blends])
        lines += ["", "The classifier's mean probability of a and of b, and the share of files with P(a) > P(b):", ""]
        lines += table(["pair (a, b)", "w", "files", "mean P(a)", "mean P(b)", "P(a) > P(b)"],
                       [[f"{c['a']}, {c['b']}", f"{p['weight_a']:g}", fmt(p["files"]), fmt(p["p_a"]), fmt(p["p_b"]),
                         fmt(p["classified_a"])] for c in blends for p in c["points"]])
    else:
        lines += ["No pair: fewer than 2 styles measured."]

    # 4
    nll = results["nll"]
    order = results["ngram_order"]
    lines += ["", "## Held-out NLL per note", "",
              f"Each style's TEST files, teacher-forced: events 2..N of each file (chunks of up to "
              f"{results['nll_chunk']} events, the state carried), the model conditioned on the style's one-hot "
              "weight, "
              f"against a {order}-gram (interpolated Kneser-Ney) fitted on that style's TRAIN files and scored on "
              "the same events. Nats summed over the style's files, divided by their notes (NOTE_ONs), which "
              "compares tokenizers; per event beside it. The last column is the training run's logged test NLL "
              "per event for the style (its own windows, so close to but not the same as this).", ""]
    lines += table(["style", "test files", "notes", "model nats/note", f"{order}-gram nats/note", "model nats/event",
                    f"{order}-gram nats/event", "model better", "logged test NLL/event"],
                   [[s, fmt((nll.get(s) or {}).get("test_files")), fmt((nll.get(s) or {}).get("notes")),
                     fmt((nll.get(s) or {}).get("model_per_note")), fmt((nll.get(s) or {}).get("ngram_per_note")),
                     fmt((nll.get(s) or {}).get("model_per_event")), fmt((nll.get(s) or {}).get("ngram_per_event")),
                     fmt((nll.get(s) or {}).get("model_better")), fmt(model["logged_test_nll_per_event"].get(s))]
                    for s in styles])
    missing = [s for s in styles if not nll.get(s)]
    if missing:
        lines += ["", f"No test or train files (so no NLL) for: {', '.join(missing)}."]

    # 5
    moves = results["interpolation"]
    lines += ["", "## Interpolation", ""]
    if moves["pairs"]:
        lines += [f"{len(moves['pairs'])} pairs (A, B) of TEST files of different styles (seeded draw, cycling "
                  f"through the style pairs), {moves['steps']} steps each from A to B with `interpolate_batch` "
                  f"(`midigen interpolate --num {moves.get('variations', 1)} --mix {results['sizes'].get('mix', 'geometric')}`: "
                  f"{moves.get('variations', 1)} clips per "
                  "step; A's and B's styles one-hot, seed = the pair's number). Distance: Euclidean between a clip's "
                  "style features and those of A's (B's) whole file, each feature divided by the classifier's "
                  "scale (its training standard deviation), averaged over the step's clips. Spearman rho of "
                  "(step, distance) per pair, averaged over the pairs.", ""]
        lines += table(["", "mean rho", "95% interval (pairs resampled)", "goal", "", "pairs meeting it alone"],
                       [["(step, distance to A)", fmt(moves["mean_rho_a"]), span(moves.get("rho_a_interval")),
                         f">= {goals['rho']}", met(moves["met_a"], moves.get("sure_a")),
                         f"{moves['pairs_rising_a']} of {len(moves['pairs'])}"],
                        ["(step, distance to B)", fmt(moves["mean_rho_b"]), span(moves.get("rho_b_interval")),
                         f"<= -{goals['rho']}", met(moves["met_b"], moves.get("sure_b")),
                         f"{moves['pairs_falling_b']} of {len(moves['pairs'])}"]])
        if "mean_rho_a_single" in moves:
            lines += ["", f"With one clip per step (the first variation alone, what `--num 1` shows) the same means "
                      f"are {fmt(moves['mean_rho_a_single'], 2)} and {fmt(moves['mean_rho_b_single'], 2)}: single "
                      "clips are noisy, the trend is in the average."]
        lines += ["", "Per step, averaged over the pairs (P(style of A): the classifier's probability of A's style "
                  "for the clip):", ""]
        lines += table(["step", "weight of B", "mean distance to A", "mean distance to B", "mean P(style of A)"],
                       [[str(i + 1), f"{w:.2f}", fmt(moves["mean_d_a"][i], 2), fmt(moves["mean_d_b"][i], 2),
                         fmt(moves["mean_p_style_a"][i])] for i, w in enumerate(moves["weights_of_b"])])
        lines += ["", "Per pair:", ""]
        lines += table(["#", "A", "B", "rho (step, d_A)", "rho (step, d_B)", "notes per clip"],
                       [[str(r["seed"]), f"{r['a']} ({r['style_a']})", f"{r['b']} ({r['style_b']})",
                         fmt(r["rho_a"], 2), fmt(r["rho_b"], 2), " ".join(str(n) for n in r["notes"])]
                        for r in moves["pairs"]])
    else:
        lines += ["No pair: fewer than 2 of the measured styles have test files."]

    lines += ["", "## For the README", "", readme_table(results), ""]
    return "\n".join(lines)


def write_report(results: dict, out: Path) -> Path:
    path = Path(out) / "REPORT.md"
    path.write_text(render(results))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE), help="the folder holding results.json (default: this folder)")
    args = p.parse_args(argv)
    results = json.loads((Path(args.out) / "results.json").read_text())
    print(f"wrote {write_report(results, Path(args.out))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
