"""The sampler's setting per style, measured: which nucleus mass (`--top-p`) makes a style's
generated clips sound like the style, without making them less usable.

Nucleus sampling cuts the least likely events at each step. For a dense texture those are
often its extra voices and off-beat notes, so a style whose clips are thinner or plainer than
its real music (a string quartet after fine-tuning, a reel) can lose what makes it itself; for
another style the cut keeps it clean. So the mass is chosen per style, on generated clips:
for each candidate, `files` 8-bar clips of the style alone (one seed) are classified by the
style classifier that travels with the model and judged file by file (`report.judge`: on the
grid, in phase, no hanging notes). A file is good when it is both usable and heard as the style;
the candidate with the most good files wins, but DEFAULT_TOP_P stays unless the winner beats
it by more than twice the standard error of the difference (64 clips cannot tell 0.05 apart;
chasing the draw's noise would move a setting for nothing), and a candidate less usable than the
default by more than twice its standard error is never taken; one with as many good files and
more usable ones by more than twice the standard error is taken too. The choice is stored in the model
folder's config.json (`sampling.top_p`, read by `Bundle.top_p`: a request that sets no `--top-p`
uses it, a blend the average by weight), with a table in its card. A fine-tune runs it for its new style;
`midigen models calibrate DIR` for any model folder.

Not for: sampling (`sampling.py`), the request's defaults (`request.py`).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from pathlib import Path

from midigen.errors import MidigenError
from midigen.producer.request import DEFAULT_TOP_P, is_nucleus_mass

CANDIDATES = (0.9, 0.95, 1.0)
CALIBRATION_FILES = 64
CALIBRATION_BARS = 8
# The clips' seed: apart from the seeds the studies judge a model's files with (0 and up, 1000 and
# up), so a setting chosen here is measured there on clips it was not chosen on.
CALIBRATION_SEED = 20261130
CARD_HEADING = "## Sampling per style"


def measure(bundle, classifier, style: str, candidates, files: int, out: Path, seed: int) -> dict:  # noqa: ANN001
    """{candidate: {"fidelity", "usable", "good", "files"}}: the shares of `files` clips of `style`
    alone at each candidate heard as the style, usable, and both (written under `out`, one folder
    per candidate)."""
    from midigen.evaluation.style import classify_files
    from midigen.producer.generate import GenerateRequest, generate_batch
    from midigen.producer.report import judge

    rows = {}
    for top_p in candidates:
        top_p = float(top_p)
        req = GenerateRequest(num=files, bars=CALIBRATION_BARS, style={style: 1.0}, seed=seed, top_p=top_p,
                              max_copy=None, name=f"{style}_p{top_p:g}")
        clips = generate_batch(bundle, req)
        folder = out / style / f"top_p_{top_p:g}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for clip in clips:
            (folder / clip["name"]).write_bytes(clip["midi"])
        usable = {name: bool(f["usable"]) for name, f in judge(clips, req, bundle)["files"].items()}
        heard = {name: f["style"] == style
                 for name, f in classify_files(classifier, folder, expected=style)["files"].items()}
        n = max(1, len(clips))
        rows[top_p] = {"fidelity": sum(heard.values()) / n, "usable": sum(usable.values()) / n,
                       "good": sum(usable[name] and heard.get(name, False) for name in usable) / n, "files": len(clips)}
    return rows


def choose(rows: dict) -> float:
    """The candidate with the largest share of good files (usable and heard as the style) among
    those no less usable than DEFAULT_TOP_P; the default stays unless the winner has more good
    files by more than twice the standard error of the difference (a gain the clips' draw alone
    would rarely give), and a candidate whose usable share is lower by more than that is never
    taken: a style heard more often in files a producer cannot use is no gain. Short of that, a
    candidate with no fewer good files than the default and more usable ones by more than twice
    the standard error is taken (the most usable such): files a producer can use, at no cost."""
    if DEFAULT_TOP_P not in rows:
        return max(rows, key=lambda p: (round(rows[p]["good"], 9), round(rows[p]["usable"], 9)))
    default = rows[DEFAULT_TOP_P]
    eligible = [p for p, row in rows.items()
                if row["usable"] >= default["usable"] - 2 * _se(row, default, "usable")]
    best = max(eligible, key=lambda p: (round(rows[p]["good"], 9), -abs(p - DEFAULT_TOP_P)))
    if best != DEFAULT_TOP_P and rows[best]["good"] - default["good"] > 2 * _se(rows[best], default, "good"):
        return best
    steadier = [p for p, row in rows.items() if p != DEFAULT_TOP_P and row["good"] >= default["good"]
                and row["usable"] - default["usable"] > 2 * _se(row, default, "usable")]
    if steadier:
        return max(steadier, key=lambda p: (round(rows[p]["usable"], 9), round(rows[p]["good"], 9)))
    return DEFAULT_TOP_P


def _se(a: dict, b: dict, key: str) -> float:
    """The standard error of the difference of two shares (of a["files"] and b["files"] files)."""
    return math.sqrt(sum(row[key] * (1 - row[key]) / max(1, row.get("files", 1)) for row in (a, b)))


def calibrate(bundle, styles: list[str] | None = None, candidates=CANDIDATES, files: int = CALIBRATION_FILES,  # noqa: ANN001
              out: Path | None = None, seed: int = CALIBRATION_SEED, progress=None) -> dict:  # noqa: ANN001
    """{style: {"top_p": chosen, "candidates": measure's rows}} for `styles` (default: all the model's)."""
    classifier = bundle.style_classifier
    if classifier is None:
        raise MidigenError(f"{bundle.path}: the model carries no style classifier, so its styles cannot be "
                           "heard; calibrate a model trained with style_classifier set")
    styles = list(styles or bundle.styles)
    unknown = [s for s in styles if s not in bundle.styles]
    if unknown:
        raise MidigenError(f"unknown style {', '.join(unknown)}: this model knows {', '.join(bundle.styles)}")
    missing = [s for s in styles if s not in classifier.styles]
    if missing:
        raise MidigenError(f"the model's style classifier does not know {', '.join(missing)}")
    if not candidates or not all(is_nucleus_mass(c) for c in candidates):
        raise MidigenError(f"--candidates {','.join(map(str, candidates))}: nucleus masses in (0, 1], e.g. 0.9,0.95,1")
    candidates = sorted({float(c) for c in candidates})
    if not 1 <= files <= 128:
        raise MidigenError(f"--files {files}: from 1 to 128")
    with tempfile.TemporaryDirectory(prefix="midigen-calibrate-") as scratch:
        where = Path(out) if out is not None else Path(scratch)  # the clips are kept only where asked
        result = {}
        for style in styles:
            rows = measure(bundle, classifier, style, candidates, files, where, seed)
            result[style] = {"top_p": choose(rows), "candidates": rows}
            if progress is not None:
                progress(style, result[style])
    return result


def parse_candidates(text: str) -> list[float]:
    """'0.9,0.95,1' -> [0.9, 0.95, 1.0]; anything else is one MidigenError line."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(is_nucleus_mass(v) for v in values):
        raise MidigenError(f"--candidates {text}: nucleus masses in (0, 1], comma-separated, e.g. 0.9,0.95,1")
    return values


def card_section(result: dict, files: int) -> str:
    """The card's section: each style's chosen mass and what every candidate measured."""
    lines = [CARD_HEADING, "",
             "A request without `--top-p` draws each style with its mass below (a blend: the average by weight; "
             f"a style not listed: {DEFAULT_TOP_P}). Chosen on {files} generated {CALIBRATION_BARS}-bar clips of the "
             "style alone per candidate: the one with the most good files (usable and heard as the style by the "
             f"style classifier), where it beats {DEFAULT_TOP_P} by more than twice the standard error and is "
             "not less usable by more than that, or has as many good files and more usable ones by more than "
             "twice the standard error.", "",
             "| style | top-p | " + " | ".join(f"good / heard / usable at {p:g}" for p in _candidates(result)) + " |",
             "|---|---|" + "---|" * len(_candidates(result))]
    for style, row in result.items():
        cells = [_cell(row["candidates"][p]) if p in row["candidates"] else "-" for p in _candidates(result)]
        lines.append(f"| {style} | {row['top_p']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(row: dict) -> str:
    return (f"{row['good']:.2f} / " if "good" in row else "") + f"{row['fidelity']:.2f} / {row['usable']:.2f}"


def _candidates(result: dict) -> list[float]:
    return sorted({p for row in result.values() for p in row["candidates"]})


def settings(result: dict, earlier: dict | None = None, files: int = CALIBRATION_FILES) -> dict:
    """config.json's "sampling" with `result` merged into `earlier` (other styles' settings kept):
    {"top_p": {style: mass}, "measured": {style: {"files", "candidates": {mass: row}}}}."""
    earlier = earlier or {}
    return {**earlier,
            "top_p": {**(earlier.get("top_p") or {}), **{s: row["top_p"] for s, row in result.items()}},
            "measured": {**(earlier.get("measured") or {}),
                         **{s: {"files": files, "candidates": {f"{p:g}": v for p, v in row["candidates"].items()}}
                            for s, row in result.items()}}}


def measured(sampling: dict) -> dict:
    """`calibrate`'s result as config.json's sampling section stores it (every style measured so far)."""
    return {s: {"top_p": float(sampling["top_p"][s]), "candidates": {float(p): v for p, v in m["candidates"].items()},
                "files": m.get("files")}
            for s, m in (sampling.get("measured") or {}).items() if s in (sampling.get("top_p") or {})}


def write_settings(folder: Path, result: dict, files: int) -> dict:
    """Store the chosen masses in the model folder: config.json's sampling section (other styles'
    settings kept) and the card's section, rewritten from every style measured so far."""
    from midigen.producer.bundle import CARD, CONFIG

    config_path = folder / CONFIG
    config = json.loads(config_path.read_text())
    config["sampling"] = settings(result, config.get("sampling"), files)
    card_path = folder / CARD
    card = card_path.read_text() if card_path.exists() else ""
    card = re.sub(rf"\n*{re.escape(CARD_HEADING)}\n.*?(?=\n## |\Z)", "", card, flags=re.S).rstrip("\n")
    card = (card + "\n\n" if card else "") + card_section(measured(config["sampling"]), files)
    config_path.write_text(json.dumps(config, indent=2, default=str))  # both built before either is written
    card_path.write_text(card)
    return config["sampling"]
