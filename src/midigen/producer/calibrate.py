"""The sampler's settings per style, measured: which nucleus mass (`--top-p`) and which style
strength (`--style-strength`) make a style's generated clips sound like the style, without
making them less usable.

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

The style strength (`sampling.SamplingOptions.style_strength`) is chosen second, at the chosen
mass, from its candidates STRENGTHS, by good files and then by rhythm (`choose_in_time`): among
the candidates as usable as the default (0, as trained) or as the style's real excerpts, and
with as many good files as the best within a standard error, the one whose clips' mean on-beat
share is closest to the real style's (the reference that travels with the model). A model drawn
freely drifts towards what all its styles share (a reel comes out as plain eighths and quarters,
on the beat far more often than a real reel); leaning into
the style pushes back, until the clip overshoots into a caricature, busier than the style,
which the rhythm rule and the usable verdict catch. Stored as `sampling.style_strength`.

Not for: sampling (`sampling.py`), the request's defaults (`request.py`).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from midigen.errors import MidigenError
from midigen.producer.request import DEFAULT_STYLE_STRENGTH, DEFAULT_TOP_P, is_nucleus_mass, is_style_strength

CANDIDATES = (0.9, 0.95, 1.0)
STRENGTHS = (0.0, 0.5, 1.0, 1.5, 2.0)
CALIBRATION_FILES = 64
CALIBRATION_BARS = 8
# The clips' seed: apart from the seeds the studies judge a model's files with (0 and up, 1000 and
# up), so a setting chosen here is measured there on clips it was not chosen on.
CALIBRATION_SEED = 20261130
CARD_HEADING = "## Sampling per style"


def measure(bundle, classifier, style: str, candidates, files: int, out: Path, seed: int,  # noqa: ANN001
            knob: str = "top_p", fixed: dict | None = None) -> dict:
    """{candidate: {"fidelity", "usable", "good", "files", "on_beat"}}: the shares of `files` clips of
    `style` alone at each candidate value of `knob` ("top_p" or "style_strength"; the other
    request fields in `fixed`) heard as the style, usable, and both, and their mean on-beat share
    (written under `out`, one folder per candidate)."""
    from midigen.evaluation.style import classify_files
    from midigen.producer.generate import GenerateRequest, generate_batch
    from midigen.producer.report import judge

    rows = {}
    tag = {"top_p": "p", "style_strength": "s"}[knob]
    for value in candidates:
        value = float(value)
        req = GenerateRequest(num=files, bars=CALIBRATION_BARS, style={style: 1.0}, seed=seed, max_copy=None,
                              name=f"{style}_{tag}{value:g}", **{**(fixed or {}), knob: value})
        clips = generate_batch(bundle, req)
        folder = out / style / (f"top_p_{value:g}" if knob == "top_p" else f"top_p_{req.top_p:g}_strength_{value:g}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for clip in clips:
            (folder / clip["name"]).write_bytes(clip["midi"])
        judged = judge(clips, req, bundle)["files"]
        usable = {name: bool(f["usable"]) for name, f in judged.items()}
        beats = [f["on_beat"] for f in judged.values() if f.get("on_beat") is not None]
        heard = {name: f["style"] == style
                 for name, f in classify_files(classifier, folder, expected=style)["files"].items()}
        n = max(1, len(clips))
        rows[value] = {"fidelity": sum(heard.values()) / n, "usable": sum(usable.values()) / n,
                       "good": sum(usable[name] and heard.get(name, False) for name in usable) / n, "files": len(clips),
                       "on_beat": float(np.mean(beats)) if beats else None,
                       "on_beat_sd": float(np.std(beats, ddof=1)) if len(beats) > 1 else None}
    return rows


def choose(rows: dict, keep: float = DEFAULT_TOP_P) -> float:
    """The candidate with the largest share of good files (usable and heard as the style) among
    those no less usable than the default (`keep`: DEFAULT_TOP_P, or DEFAULT_STYLE_STRENGTH
    for strengths); the default stays unless the winner has more good
    files by more than twice the standard error of the difference (a gain the clips' draw alone
    would rarely give), and a candidate whose usable share is lower by more than that is never
    taken: a style heard more often in files a producer cannot use is no gain. Short of that, a
    candidate with no fewer good files than the default and more usable ones by more than twice
    the standard error is taken (the most usable such): files a producer can use, at no cost."""
    if keep not in rows:
        return max(rows, key=lambda p: (round(rows[p]["good"], 9), round(rows[p]["usable"], 9)))
    default = rows[keep]
    eligible = [p for p, row in rows.items()
                if row["usable"] >= default["usable"] - 2 * _se(row, default, "usable")]
    best = max(eligible, key=lambda p: (round(rows[p]["good"], 9), *_nearness(p, keep)))
    if best != keep and rows[best]["good"] - default["good"] > 2 * _se(rows[best], default, "good"):
        return best
    steadier = [p for p, row in rows.items() if p != keep and row["good"] >= default["good"]
                and row["usable"] - default["usable"] > 2 * _se(row, default, "usable")]
    if steadier:
        return max(steadier, key=lambda p: (round(rows[p]["usable"], 9), round(rows[p]["good"], 9)))
    return keep


def choose_in_time(rows: dict, real: dict | None, keep: float = DEFAULT_STYLE_STRENGTH) -> float:
    """The style strength whose clips are good and in time: `choose`'s good files, then the real
    style's rhythm. `real`: {"on_beat": the mean share of onsets on a beat of the style's real
    excerpts, "usable": their usable share} (`real_style`), from the reference that travels with
    the model; without it, or without the rows' on-beat shares, `choose`.

    1. Eligible: candidates no less usable than the default beyond twice the standard error, or
       no less usable than the style's real excerpts are (real reels leave the grid more often
       than a model drawn as trained does; a producer can use such a file as well as a real one).
    2. Contenders: eligible candidates whose share of good files is within one standard error of
       the best eligible one's: the rhythm decides only between strengths heard as the style
       about equally often, never for one with clearly fewer good files.
    3. The contender whose clips' mean on-beat share is closest to the real style's; those
       within twice the standard error of that one's distance tie, and of them the one with the
       most good files, or the nearest the default among those within a standard error of it, is
       taken (a setting moved for the draw's noise is moved for nothing). The lean's pull on the
       rhythm is steady (a step of 0.5 moves a reel's on-beat share by 0.03-0.05; its standard
       error over 128 clips is about 0.01).
    """
    if (not real or real.get("on_beat") is None or keep not in rows
            or any(row.get("on_beat") is None for row in rows.values())):
        return choose(rows, keep)
    default, target = rows[keep], real["on_beat"]
    real_usable = real.get("usable")

    def floor(row: dict) -> float:
        noise = default["usable"] - 2 * _se(row, default, "usable")
        return noise if real_usable is None else min(noise, real_usable)

    eligible = [s for s, row in rows.items() if row["usable"] >= floor(row)]
    top = max(eligible, key=lambda s: (round(rows[s]["good"], 9), *_nearness(s, keep)))
    contenders = [s for s in eligible if rows[top]["good"] - rows[s]["good"] <= _se(rows[s], rows[top], "good")]

    def gap(s: float) -> float:
        return abs(rows[s]["on_beat"] - target)

    closest = min(contenders, key=lambda s: (round(gap(s), 9), *(-x for x in _nearness(s, keep))))
    tied = [s for s in contenders if gap(s) - gap(closest) <= 2 * _beat_se(rows[s], rows[closest])]
    best = max(tied, key=lambda s: (round(rows[s]["good"], 9), *_nearness(s, keep)))
    # as many good files within a standard error: the nearest the default (a move for the draw's noise is none)
    near = [s for s in tied if rows[best]["good"] - rows[s]["good"] <= _se(rows[s], rows[best], "good")]
    return max(near, key=lambda s: _nearness(s, keep))


def _nearness(value, keep) -> tuple:  # noqa: ANN001 - a float, or a (mass, strength) pair
    """How near a candidate is to the default, larger for nearer: a tie goes to the default's side.
    A (mass, strength) pair (`calibrate(joint=True)`): the strength's distance first."""
    if isinstance(value, tuple):
        return -abs(value[1] - keep[1]), -abs(value[0] - keep[0])
    return (-abs(value - keep),)


def _beat_se(a: dict, b: dict) -> float:
    """The standard error of the difference of two rows' mean on-beat shares (0 for rows measured
    before their spread was kept)."""
    return math.sqrt(sum((row.get("on_beat_sd") or 0.0) ** 2 / max(1, row.get("files", 1)) for row in (a, b)))


def real_style(reference: dict | None, style: str) -> dict | None:
    """{"on_beat": mean, "usable": share or None} of the style's real excerpts in a model's
    reference (`evaluation.reference.real_reference`), or None where it has none."""
    stats = ((reference or {}).get("styles") or {}).get(style) or {}
    beat = (stats.get("metrics") or {}).get("on_beat")
    if not beat:
        return None
    return {"on_beat": float(beat["mean"]), "usable": stats.get("usable")}


def _se(a: dict, b: dict, key: str) -> float:
    """The standard error of the difference of two shares (of a["files"] and b["files"] files),
    each share taken as (k + 1) / (n + 2) (Agresti and Caffo 2000): the plain p(1 - p) / n is 0 at
    a share of 1, and then one unusable file in 128 would count as beyond the noise."""
    def variance(row: dict) -> float:
        n = max(1, row.get("files", 1))
        p = (row[key] * n + 1) / (n + 2)
        return p * (1 - p) / n

    return math.sqrt(variance(a) + variance(b))


def calibrate(bundle, styles: list[str] | None = None, candidates=CANDIDATES, files: int = CALIBRATION_FILES,  # noqa: ANN001, C901
              out: Path | None = None, seed: int = CALIBRATION_SEED, progress=None,  # noqa: ANN001
              strengths=STRENGTHS, joint: bool = False) -> dict:
    """{style: {"top_p": chosen, "candidates": measure's rows, "style_strength": chosen,
    "strengths": measure's rows, "real": `real_style`}} for `styles` (default: all the model's).

    The mass first, at strength 0, then the strength at the chosen mass (the strength-0 row is
    the mass's own). `candidates` None keeps the model's mass per style and its stored rows
    (`midigen models calibrate --keep-top-p`: strengths alone); `strengths` empty leaves the
    strength out (not stored). `joint` (`--joint`): every strength at every mass, and the pair
    chosen by `choose_in_time` against (DEFAULT_TOP_P, 0), with "grid": {mass: rows} (the one
    step at a time misses a pair whose mass only pays at a strength: medieval at 0.9 and 0.5)."""
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
    if candidates is not None:
        if not candidates or not all(is_nucleus_mass(c) for c in candidates):
            raise MidigenError(f"--candidates {','.join(map(str, candidates))}: nucleus masses in (0, 1], "
                               "e.g. 0.9,0.95,1")
        candidates = sorted({float(c) for c in candidates})
    strengths = sorted({float(s) for s in strengths or ()})
    if not all(is_style_strength(s) for s in strengths):
        raise MidigenError(f"--strengths {','.join(f'{s:g}' for s in strengths)}: style strengths from 0, "
                           "e.g. 0,0.5,1,1.5")
    if candidates is None and not strengths:
        raise MidigenError("nothing to calibrate: keeping the masses needs strengths to try")
    if joint and (candidates is None or not strengths):
        raise MidigenError("--joint tries every strength at every mass: it needs both (drop --keep-top-p, "
                           "give --strengths)")
    if not 1 <= files <= 128:
        raise MidigenError(f"--files {files}: from 1 to 128")
    stored = measured((bundle.meta or {}).get("sampling") or {})
    with tempfile.TemporaryDirectory(prefix="midigen-calibrate-") as scratch:
        where = Path(out) if out is not None else Path(scratch)  # the clips are kept only where asked
        result = {}
        for style in styles:
            if candidates is not None:
                rows = measure(bundle, classifier, style, candidates, files, where, seed,
                               fixed={"style_strength": DEFAULT_STYLE_STRENGTH})
                top_p = choose(rows)
            else:
                top_p = bundle.top_p([1.0 if s == style else 0.0 for s in bundle.styles])
                rows = stored.get(style, {}).get("candidates", {})
            result[style] = {"top_p": top_p, "candidates": rows}
            if joint:
                result[style].update(_joint(bundle, classifier, style, rows, strengths, files, where, seed))
            elif strengths:
                # The mass's own row is strength 0 where it was measured on as many clips of this seed.
                own = rows.get(top_p) if candidates is not None or stored.get(style, {}).get("files") == files else None
                srows = _strength_rows(bundle, classifier, style, top_p, own, strengths, files, where, seed)
                real = real_style(bundle.reference, style)
                result[style].update(style_strength=choose_in_time(srows, real, keep=DEFAULT_STYLE_STRENGTH),
                                     strengths=srows, **({"real": real} if real else {}))
            if progress is not None:
                progress(style, result[style])
    return result


def _joint(bundle, classifier, style: str, rows: dict, strengths: list[float], files: int, where: Path,  # noqa: ANN001
           seed: int) -> dict:
    """`calibrate(joint=True)` for one style: each strength measured at each mass of `rows` (its
    strength-0 row the mass's own), the (mass, strength) pair chosen by `choose_in_time`."""
    grid = {mass: _strength_rows(bundle, classifier, style, mass, row, strengths, files, where, seed)
            for mass, row in rows.items()}
    real = real_style(bundle.reference, style)
    cells = {(mass, strength): row for mass, srows in grid.items() for strength, row in srows.items()}
    mass, strength = choose_in_time(cells, real, keep=(DEFAULT_TOP_P, DEFAULT_STYLE_STRENGTH))
    return {"top_p": mass, "style_strength": strength, "strengths": grid[mass], "grid": grid,
            "top_p_as_trained": choose(rows), **({"real": real} if real else {})}


def _strength_rows(bundle, classifier, style: str, mass: float, own: dict | None, strengths: list[float],  # noqa: ANN001
                   files: int, where: Path, seed: int) -> dict:
    """measure's rows of each strength at `mass`, sorted; strength 0 is `own` (the mass's row,
    drawn at strength 0 on the same seed) where given, measured otherwise."""
    known = {DEFAULT_STYLE_STRENGTH: own} if own and DEFAULT_STYLE_STRENGTH in strengths else {}
    todo = [s for s in strengths if s not in known]
    return dict(sorted({**known, **measure(bundle, classifier, style, todo, files, where, seed,
                                           knob="style_strength", fixed={"top_p": mass})}.items()))


def parse_candidates(text: str, words: str = "nucleus masses in (0, 1]", example: str = "0.9,0.95,1",
                     fits=is_nucleus_mass, flag: str = "--candidates") -> list[float]:  # noqa: ANN001
    """'0.9,0.95,1' -> [0.9, 0.95, 1.0]; anything else is one MidigenError line (`fits`, `words`,
    `example`, `flag`: what the values must be, for another list such as --strengths)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(fits(v) for v in values):
        raise MidigenError(f"{flag} {text}: {words}, comma-separated, e.g. {example}")
    return values


def parse_strengths(text: str) -> list[float]:
    """'0,0.5,1' -> [0.0, 0.5, 1.0]: --strengths."""
    from midigen.producer.request import MAX_STYLE_STRENGTH

    return parse_candidates(text, f"style strengths from 0 to {MAX_STYLE_STRENGTH:g}", "0,0.5,1,1.5",
                            is_style_strength, "--strengths")


def card_section(result: dict, files: int) -> str:
    """The card's section: each style's chosen mass and strength and what every candidate measured."""
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
    leaned = {style: row for style, row in result.items() if row.get("strengths")}
    if leaned:
        values = sorted({s for row in leaned.values() for s in row["strengths"]})
        lines += ["", "A request without `--style-strength` leans into each style by its strength below (a blend: the "
                      f"average by weight; a style not listed: {DEFAULT_STYLE_STRENGTH:g}, as trained), chosen at the "
                      "style's mass on the same clips: among the strengths as usable as 0 (within twice the standard "
                      "error) or as the style's real excerpts, and with as many good files as the best within a "
                      "standard error, the one whose mean share of onsets on a beat (in brackets) is closest to the "
                      "real excerpts' (within twice the standard error: the most good files, or the one nearest 0 "
                      "within a standard error of them).", "",
                  "| style | strength | real: on-beat / usable | "
                  + " | ".join(f"good / heard / usable (on-beat) at {s:g}" for s in values) + " |",
                  "|---|---|---|" + "---|" * len(values)]
        for style, row in leaned.items():
            cells = [_cell(row["strengths"][s], beat=True) if s in row["strengths"] else "-" for s in values]
            real = row.get("real") or {}
            shown = (f"{real['on_beat']:.2f} / " + ("-" if real.get("usable") is None else f"{real['usable']:.2f}")
                     if real else "-")
            lines.append(f"| {style} | {row['style_strength']:g} | {shown} | " + " | ".join(cells) + " |")
    joint = {style: row for style, row in leaned.items() if row.get("grid")}
    if joint:
        lines += ["", "Chosen jointly (`midigen models calibrate --joint`): every strength at every mass, the pair by "
                      "the same rule against the mass 0.95 at strength 0; a clip drawn as trained (`--style-strength "
                      "0`, an interpolation) takes the mass chosen at strength 0 (the first table). Good / usable "
                      "(on-beat) at each mass and strength:", "",
                  "| style | top-p, strength | " + " | ".join(f"at {p:g}" for p in _candidates(result)) + " |",
                  "|---|---|" + "---|" * len(_candidates(result))]
        for style, row in joint.items():
            cells = ["; ".join(f"{k:g}: {v['good']:.2f} / {v['usable']:.2f}"
                               + (f" ({v['on_beat']:.2f})" if v.get("on_beat") is not None else "")
                               for k, v in row["grid"][p].items()) if p in row["grid"] else "-"
                     for p in _candidates(result)]
            lines.append(f"| {style} | {row['top_p']:g}, {row['style_strength']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(row: dict, beat: bool = False) -> str:
    text = (f"{row['good']:.2f} / " if "good" in row else "") + f"{row['fidelity']:.2f} / {row['usable']:.2f}"
    return text + (f" ({row['on_beat']:.2f})" if beat and row.get("on_beat") is not None else "")


def _candidates(result: dict) -> list[float]:
    return sorted({p for row in result.values() for p in row["candidates"]})


def settings(result: dict, earlier: dict | None = None, files: int = CALIBRATION_FILES) -> dict:
    """config.json's "sampling" with `result` merged into `earlier` (other styles' settings kept):
    {"top_p": {style: mass}, "style_strength": {style: s} (where measured), "measured": {style:
    {"files", "candidates": {mass: row}, "strengths": {s: row}}}}."""
    earlier = earlier or {}
    leaned = {s: row["style_strength"] for s, row in result.items() if "style_strength" in row}
    merged = {**earlier,
              "top_p": {**(earlier.get("top_p") or {}), **{s: row["top_p"] for s, row in result.items()}},
              "measured": {**(earlier.get("measured") or {}),
                           **{s: {"files": files, "candidates": {f"{p:g}": v for p, v in row["candidates"].items()},
                                  **({"strengths": {f"{k:g}": v for k, v in row["strengths"].items()}}
                                     if row.get("strengths") else {}),
                                  **({"real": row["real"]} if row.get("real") else {}),
                                  **({"grid": {f"{p:g}": {f"{k:g}": v for k, v in srows.items()}
                                               for p, srows in row["grid"].items()}} if row.get("grid") else {})}
                              for s, row in result.items()}}}
    if leaned or earlier.get("style_strength"):
        merged["style_strength"] = {**(earlier.get("style_strength") or {}), **leaned}
    # a style calibrated again one step at a time has one mass for both, so its old entry goes
    as_trained = {**{s: p for s, p in (earlier.get("top_p_as_trained") or {}).items() if s not in result},
                  **{s: row["top_p_as_trained"] for s, row in result.items() if "top_p_as_trained" in row}}
    merged.pop("top_p_as_trained", None)
    if as_trained:
        merged["top_p_as_trained"] = as_trained
    return merged


def measured(sampling: dict) -> dict:
    """`calibrate`'s result as config.json's sampling section stores it (every style measured so far)."""
    result = {}
    for s, m in (sampling.get("measured") or {}).items():
        if s not in (sampling.get("top_p") or {}):
            continue
        result[s] = {"top_p": float(sampling["top_p"][s]),
                     "candidates": {float(p): v for p, v in m["candidates"].items()}, "files": m.get("files")}
        if s in (sampling.get("top_p_as_trained") or {}):
            result[s]["top_p_as_trained"] = float(sampling["top_p_as_trained"][s])
        if m.get("strengths") and s in (sampling.get("style_strength") or {}):
            result[s].update(style_strength=float(sampling["style_strength"][s]),
                             strengths={float(k): v for k, v in m["strengths"].items()},
                             **({"real": m["real"]} if m.get("real") else {}),
                             **({"grid": {float(p): {float(k): v for k, v in srows.items()}
                                          for p, srows in m["grid"].items()}} if m.get("grid") else {}))
    return result


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
