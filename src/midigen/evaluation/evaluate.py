"""`midigen evaluate DIR`: a folder's musical metrics as a table or JSON, one line per file
with its verdict (usable as it is, or why not) and the worst file, with what was asked beside
them: the overlap with a reference folder, copying from a model's training set, and the style
each file sounds like to a model's style classifier.

Not for: the metrics themselves (`midigen.evaluation.metrics`) or the classifier
(`midigen.evaluation.style`).
"""

from __future__ import annotations

import json
from pathlib import Path

from midigen.errors import MidigenError
from midigen.evaluation.metrics import folder_metrics, midi_files, overlaps
from midigen.evaluation.originality import copy_report
from midigen.evaluation.reference import USABLE_ON_GRID, judge_files, real_reference
from midigen.evaluation.style import StyleClassifier, classify_files


def evaluate_command(args) -> int:
    """`midigen evaluate DIR [--reference REF] [--against MODEL] [--style-of MODEL [--expect S]] [--json]`.

    Prints a table of every file's metrics and verdict (`reference.usable`), the folder
    mean, the worst file (lowest on_beat) and how many are not usable, and the files
    skipped with their reasons (unreadable, not valid MIDI, type 2, no notes, drums only:
    in no mean). With --reference REF (real music, laid out <REF>/<style>/*.mid or flat):
    the verdicts' least on_beat is the 5th percentile of REF's 8-bar excerpts, per style
    where a file's name or DIR's own name names one (`reference.judge_files`), else all of
    REF's excerpts pooled; without --reference, the fallback
    FALLBACK_ON_BEAT, said so; and the overlap per feature. With --against, how much is
    copied from the model's training set; with --style-of, the style each file sounds like
    to the model's classifier, which the CLI finds and passes as `args.style_classifier`.
    With --json one object {"files", "mean", "skipped", "verdicts" (`judge_files`), and
    where asked "reference": {"mean", "skipped", "excerpts" (`real_reference`)}, "overlap",
    "originality", "style"}. Returns 0. MidigenError for a missing folder, one without
    MIDI files, or one where no file is readable.
    """
    result = folder_metrics(args.dir)
    if not result["files"]:
        raise MidigenError(f"{args.dir}: no MIDI file with notes to measure ({_skipped_summary(result['skipped'])})")
    reference = None
    if args.reference:
        reference = folder_metrics(args.reference)
        if not reference["files"]:
            raise MidigenError(f"{args.reference}: no readable reference MIDI files "
                               f"({_skipped_summary(reference['skipped'])})")
        result["reference"] = {"mean": reference["mean"], "skipped": reference["skipped"],
                               "excerpts": real_reference(args.reference)}
        result["overlap"] = overlaps(result["files"].values(), reference["files"].values())
    result["verdicts"] = judge_files(result["files"], result.get("reference", {}).get("excerpts"),
                                     folder_style=Path(args.dir).expanduser().resolve().name)
    if args.against:
        readable = [file for file in midi_files(args.dir) if _name_in(file, args.dir) in result["files"]]
        result["originality"] = copy_report(readable, args.against)
    if getattr(args, "style_classifier", None):
        result["style"] = classify_files(StyleClassifier.load(args.style_classifier), args.dir, expected=args.expect)
        result["style"]["expected"] = args.expect
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_report(result, args.dir, args.reference))
    return 0


def _name_in(file: Path, root) -> str:
    root = Path(root).expanduser()
    return file.relative_to(root).as_posix() if root.is_dir() else file.name


def _skipped_summary(skipped: dict) -> str:
    reasons = list(skipped.values())
    more = f"; and {len(reasons) - 2} more" if len(reasons) > 2 else ""
    return "; ".join(reasons[:2]) + more


_COLUMNS = (  # (metric, header, width, format)
    ("n_notes", "notes", 6, "d"), ("duration_beats", "beats", 7, ".1f"), ("key", "key", 9, "s"),
    ("in_scale", "scale", 6, ".2f"), ("on_grid", "grid", 6, ".2f"), ("on_beat", "beat", 6, ".2f"),
    ("stuck_ratio", "stuck", 6, ".2f"), ("repetition_half", "AA", 5, ".2f"), ("pitch_range", "range", 6, "d"),
    ("opening_distance", "open", 5, ".0f"), ("polyphony", "poly", 6, ".2f"), ("note_density", "n/beat", 7, ".2f"), ("hanging_notes", "hang", 5, "d"),
    ("long_notes", "long", 5, "d"), ("ends_on_bar", "on bar", 7, "b"),
)


def format_report(result: dict, folder, reference=None) -> str:
    """The `evaluate` result as a readable table (one line per file, then the mean)."""
    names = list(result["files"])
    name_width = min(max([len(n) for n in names] + [len("mean")]), 40)
    header = f"{'file':<{name_width}}" + "".join(f"{h:>{w}}" for _, h, w, _ in _COLUMNS) + "  usable"
    verdicts = result["verdicts"]["files"]
    lines = [f"{len(names)} MIDI files in {folder}", header]
    for name in names:
        lines.append(_row(_shorten(name, name_width), result["files"][name], name_width, mean=False)
                     + ("  yes" if verdicts[name]["usable"] else "  NO"))
    lines.append(_row("mean", result["mean"], name_width, mean=True))
    lines += _verdict_lines(result, name_width)
    lines.append("scale: share of notes in the key; grid: onsets and offsets on 16ths/8th triplets; "
                 "beat: onsets on a beat (quarter note); stuck: melody share in one repeated pattern; "
                 "AA: second half replays the first (0..1); open: semitones from the first onset's pitch to the "
                 "file's median; poly: notes sounding at once; "
                 "hang: notes never released; long: notes held over 4 beats; "
                 "on bar: ends on a 4/4 bar line (mean: share of files)")
    if "overlap" in result:
        lines += ["", f"distribution overlap with {reference} (1 = same as the reference, 0 = nothing alike)",
                  f"{'feature':<14}{'overlap':>8}{'generated':>11}{'reference':>11}"]
        for feature, overlap in result["overlap"].items():
            gen, ref = result["mean"].get(feature), result["reference"]["mean"].get(feature)
            lines.append(f"{feature:<14}{_fmt(overlap, '.2f'):>8}{_fmt(gen, '.2f'):>11}{_fmt(ref, '.2f'):>11}")
        lines.append("(generated and reference: folder means)")
    if "style" in result:
        lines += ["", "style (the model's style classifier; probabilities of each style)"]
        for name, verdict in result["style"]["files"].items():
            probabilities = ", ".join(f"{s} {p:.2f}" for s, p in verdict["probabilities"].items())
            lines.append(f"{_shorten(name, name_width):<{name_width}}  {verdict['style']:<12} {probabilities}")
        folder_style = result["style"]["folder"]
        counts = ", ".join(f"{s} {n}" for s, n in folder_style["counts"].items() if n)
        line = f"folder: mostly {folder_style['majority']} ({counts})"
        if "fidelity" in folder_style:
            line += (f"; fidelity to {result['style']['expected']} {folder_style['fidelity']:.2f} "
                     f"(mean probability {folder_style['expected_probability']:.2f})")
        lines.append(line)
    if "originality" in result:
        folder_report = result["originality"]["folder"]
        lines += ["", "copying from the model's training set: "
                  + ", ".join(f"{k} {_fmt(v, '.2f') if isinstance(v, float) else v}" for k, v in folder_report.items())]
    return "\n".join(lines)


def _verdict_lines(result: dict, name_width: int) -> list[str]:
    """The worst file, how many are not usable and why, the skipped files and the verdict's basis."""
    judged, skipped = result["verdicts"], result["skipped"]
    worst = judged["worst"]
    lines = [f"worst: {worst['file']} (on_beat {worst['on_beat']:.2f}); {judged['unusable']} of "
             f"{judged['judged']} files not usable" + (f"; {len(skipped)} skipped" if skipped else "")]
    for name, verdict in judged["files"].items():
        if not verdict["usable"]:
            lines.append(f"not usable {_shorten(name, name_width)}: " + "; ".join(verdict["reasons"]))
    for name, reason in skipped.items():
        lines.append(f"skipped {name}: {reason}")
    lines.append(f"usable: on the grid (>= {USABLE_ON_GRID:.2f}), no note never released, {judged['basis']}")
    return lines


def _row(name: str, metrics: dict, name_width: int, mean: bool) -> str:
    cells = []
    for key, _, width, spec in _COLUMNS:
        value = metrics.get(key)
        if mean and spec in ("d", "b"):
            spec = ".2f" if spec == "b" else ".1f"
        cells.append(f"{_fmt(value, spec):>{width}}")
    return f"{name:<{name_width}}" + "".join(cells)


def _fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    if spec == "b":
        return "yes" if value else "no"
    if spec == "s":
        return str(value)
    return format(value, spec)


def _shorten(name: str, width: int) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]
