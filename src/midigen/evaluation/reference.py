"""What real music of a style scores, and whether one generated file is usable against it.

A producer judges generated files one by one, and a batch mean hides the bad ones: a clip
on the 16th grid but a 16th out of phase with the beat has on_grid 1.0. So each file gets
a verdict (`usable`): on the grid, in phase with the beat as often as real music of its
style is, no hanging note. "As often as real music" is a number measured here
(`real_reference`): real files are cut at their own bar lines into 8-bar windows, the
length of a generated clip, and each window is measured like a clip; the style's 5th
percentile of `on_beat` is the lowest a usable clip may score.

Not for: the metrics themselves (`midigen.evaluation.metrics`) or printing
(`midigen.evaluation.evaluate`). On the producer path: numpy and symusic only.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from midigen.data.midi_io import meter_beats, read_midi
from midigen.errors import MidiReadError
from midigen.evaluation.metrics import (
    GRID_TOLERANCE_BEATS, bar_lines, long_notes, midi_files, on_beat, on_grid, opening_distance, repetition_half,
    stuck_ratio,
)

WINDOW_BARS = 8  # a generated clip's default length (`generate --bars 8`)
REFERENCE_METRICS = ("on_beat", "on_grid", "stuck_ratio", "repetition_half", "long_notes", "opening_distance",
                     "pitch_range")
USABLE_ON_GRID = 0.95  # the least share of onsets and offsets on the 16th/triplet grid
# Without real music to compare with: a fifth of the onsets on a beat. Steady 16ths in phase
# put a quarter there; real reels do little more (0.5 would fail 80% of the committed corpus's
# fiddle excerpts, 0.2 fails 10%), and real styles' 5th percentiles run from about 0.2 (fiddle,
# fife, Irish) to 0.96 (Palestrina): give --reference for a style's own bound.
FALLBACK_ON_BEAT = 0.2
FALLBACK_WORDS = "a fallback: no real excerpts to compare with"


# --- real music, window by window ---------------------------------------------------------


def window_metrics(path: str | Path, window_bars: int = WINDOW_BARS) -> list[dict]:
    """REFERENCE_METRICS of each whole `window_bars`-bar window of one real MIDI file.

    Bars follow the file's time signatures (4/4 from tick 0 without any); each bar keeps
    its own length (3/4: 3 beats, 6/8: 3 beats), and beats are quarter notes counted from
    each bar line, as in a generated clip (see `metrics.on_beat`). A short first bar (a
    pickup) is left out, then windows follow one another from the first full bar; a last
    part shorter than a window is left out, and so is a window without notes. A note is in
    the window where it starts and is cut at the window's end. Returns [] for a file
    shorter than one window. MidiReadError for an unreadable or type-2 file, no notes or
    drums only; ValueError for window_bars < 1.
    """
    if window_bars < 1:
        raise ValueError(f"window_bars={window_bars}: a window is at least one bar")
    notes = read_midi(path, need_notes=True)
    on, off, pitch, tpb = notes.on, notes.off, notes.pitch, float(notes.ticks_per_beat)
    end = max(int(notes.end), int(off.max()))
    edges = np.append(bar_lines(notes.time_signatures, tpb, end), end)  # bar lines, then the end
    if edges.size > 3 and edges[1] - edges[0] < edges[2] - edges[1]:
        edges = edges[1:]  # a pickup bar
    order = np.argsort(on, kind="stable")
    on, off, pitch = on[order], off[order], pitch[order]
    tolerance = GRID_TOLERANCE_BEATS * tpb  # an onset a few ticks early belongs to the bar it anticipates
    signatures = sorted((int(t), int(n), int(d)) for t, n, d in notes.time_signatures if n > 0 and d > 0)
    rows = []
    for first in range(0, edges.size - window_bars, window_bars):
        start, stop = edges[first], edges[first + window_bars]
        lo, hi = np.searchsorted(on, [start - tolerance, stop - tolerance])
        if hi > lo:
            row = _window_row(on[lo:hi] - start, np.minimum(off[lo:hi], stop) - start, pitch[lo:hi], tpb,
                              stop - start, edges[first:first + window_bars] - start)
            # the signature in force where the window starts (4/4 before any)
            now = [f"{n}/{d}" for t, n, d in signatures if t <= start + tolerance]
            rows.append({**row, "meter": now[-1] if now else "4/4"})
    return rows


def _window_row(on, off, pitch, tpb: float, length: float, bars: np.ndarray) -> dict:
    return {
        "n_notes": int(on.size),
        "on_beat": on_beat(on, tpb, bars),
        "on_grid": on_grid(np.concatenate([on, off]), tpb),
        "stuck_ratio": stuck_ratio(on, pitch, tpb),
        "repetition_half": repetition_half(on, pitch, tpb, length, bars) or 0.0,
        "long_notes": long_notes(on, off, tpb),
        "opening_distance": opening_distance(on, pitch, tpb),
        "pitch_range": int(pitch.max() - pitch.min()),
    }


def window_stats(rows: list[dict]) -> dict:
    """{"windows": n, "metrics": {metric: {"mean", "p5", "p50", "p95"}}, "usable": share} over
    window rows (`window_metrics`' dicts); a metric without values maps to None. "usable": the
    share of the windows that `usable` passes against these windows' own p5 of on_beat (a real
    window has no hanging note), None without windows: how usable the real music itself is, the
    most a generated clip of the style can be asked to be (real madrigals leave the 16th grid)."""
    stats = {}
    for key in REFERENCE_METRICS:
        values = np.asarray([row[key] for row in rows if row.get(key) is not None], dtype=np.float64)
        if values.size == 0:
            stats[key] = None
            continue
        p5, p50, p95 = np.percentile(values, [5, 50, 95])
        stats[key] = {"mean": float(values.mean()), "p5": float(p5), "p50": float(p50), "p95": float(p95)}
    share = None
    if stats["on_beat"] is not None:
        share = float(np.mean([usable(row, stats["on_beat"]["p5"])[0] for row in rows]))
    return {"windows": len(rows), "metrics": stats, "usable": share, "meter": window_meter(rows)}


def window_meter(rows: list[dict]) -> dict | None:
    """The meter most of the windows are in: {"meter": the signature they use most among those
    with the commonest bar length, "beats": that bar length in quarter-note beats (3/4 and 6/8:
    3), "share": of the windows in bars of that many beats}. None without windows that say
    (a reference written before windows kept their meter)."""
    meters = [row["meter"] for row in rows if row.get("meter")]
    if not meters:
        return None
    by_beats: dict[float, int] = {}
    for meter in meters:
        by_beats[meter_beats(meter)] = by_beats.get(meter_beats(meter), 0) + 1
    whole = {b: n for b, n in by_beats.items() if b == int(b) and b >= 1}
    if not whole:
        return None
    top = max(whole, key=lambda b: (whole[b], b == 4))  # a tie goes to 4/4
    names = [m for m in meters if meter_beats(m) == top]
    return {"meter": max(set(names), key=lambda m: (names.count(m), m)), "beats": int(top),
            "share": whole[top] / len(meters)}


def real_reference(root: str | Path, window_bars: int = WINDOW_BARS, files: list[str] | None = None) -> dict:
    """What real music scores, per `window_bars`-bar window, over a folder of MIDI files.

    `root` is laid out like a corpus, <root>/<style>/**/*.mid (files of any length; files
    directly under root belong to no style); `files` (paths relative to root) limits it to
    those, e.g. a training split. Returns {"window_bars", "seconds" (wall time),
    "all": stats of every window, "styles": {style: stats}, "skipped": {relative path:
    reason}}, where stats is `window_stats` plus "files" (files that gave a window). A file
    shorter than a window is skipped with that reason, as is any file `window_metrics`
    refuses. MidigenError for a missing folder or one without MIDI files. Reads notes with
    symusic only (fast enough for train time): the committed corpus's 16 files (41 windows)
    take 0.08 s, 2000 such files (5125 windows) 5 s, on one core of a shared 2-core machine.
    """
    started = time.perf_counter()
    root = Path(root).expanduser()
    paths = midi_files(root) if files is None else [root / f for f in files]
    by_style: dict[str, list[dict]] = {}
    counts: dict[str, int] = {}
    everything, skipped = [], {}
    for file in paths:
        name = file.relative_to(root).as_posix() if root.is_dir() else file.name
        try:
            rows = window_metrics(file, window_bars)
        except MidiReadError as exc:
            skipped[name] = str(exc)
            continue
        if not rows:
            skipped[name] = f"{file.name}: shorter than {window_bars} bars"
            continue
        style = name.split("/")[0] if "/" in name else None
        everything.append(rows)
        if style is not None:
            by_style.setdefault(style, []).extend(rows)
            counts[style] = counts.get(style, 0) + 1
    styles = {style: {"files": counts[style], **window_stats(rows)} for style, rows in sorted(by_style.items())}
    pooled = {"files": len(everything), **window_stats([row for rows in everything for row in rows])}
    return {"window_bars": window_bars, "seconds": time.perf_counter() - started, "all": pooled,
            "styles": styles, "skipped": skipped}


# --- one file's verdict ---------------------------------------------------------------------


def usable(metrics: dict, reference: float | None = None, label: str = "real excerpts") -> tuple[bool, list[str]]:
    """Whether a producer can use this file as it is, and why not, in words.

    `metrics`: a file's metrics (`metrics.file_metrics` / `note_metrics`). Usable means:
    on the grid (`on_grid` >= USABLE_ON_GRID), in phase with the beat (`on_beat` >=
    `reference`, the style's real 5th percentile from `real_reference`, which `label`
    names, e.g. "real chorale excerpts"; without one, FALLBACK_ON_BEAT, and the reason says
    so) and no hanging note (none never released). A note held long (`long_notes`, over
    LONG_NOTE_BEATS beats) is reported but is no defect by itself: real Palestrina holds breves,
    folk songs fermatas (counted against the verdict, 85% of real renaissance excerpts and 37%
    of folk ones failed), and `generate --max-note-beats` caps generated notes anyway.
    Returns (verdict, reasons): reasons is empty when usable, else one line per failure,
    e.g. "off the beat: 0.02 of onsets on a beat, real chorale excerpts >= 0.66".
    """
    if not metrics.get("n_notes"):
        return False, ["no notes"]
    if reference is None:
        reference, bound = FALLBACK_ON_BEAT, f"usable >= {FALLBACK_ON_BEAT:.2f} ({FALLBACK_WORDS})"
    else:
        bound = f"{label} >= {reference:.2f}"
    reasons = []
    if metrics["on_grid"] < USABLE_ON_GRID:
        reasons.append(f"off the grid: {metrics['on_grid']:.2f} of onsets and offsets on a 16th or triplet "
                       f"grid line, usable >= {USABLE_ON_GRID:.2f}")
    if metrics["on_beat"] < reference:
        reasons.append(f"off the beat: {metrics['on_beat']:.2f} of onsets on a beat, {bound}")
    if metrics.get("hanging_notes"):
        reasons.append(f"hanging notes: {_notes(metrics['hanging_notes'])} never released")
    return not reasons, reasons


def _notes(count: int) -> str:
    return f"{count} note" if count == 1 else f"{count} notes"


def style_of(name: str, styles) -> str | None:
    """The style a generated file belongs to, by its name: its first folder (chorale/x.mid) or
    a word of its file name (chorale_s0_01.mid, as `generate --name chorale` writes), when
    that is one of `styles`; None otherwise (then the pooled reference applies)."""
    known = set(styles)
    parts = name.split("/")
    if len(parts) > 1 and parts[0] in known:
        return parts[0]
    words = [w for w in re.split(r"[^A-Za-z0-9]+", Path(parts[-1]).stem) if w in known]
    return words[0] if len(set(words)) == 1 else None


def judge_files(files: dict[str, dict], reference: dict | None = None, folder_style: str | None = None) -> dict:
    """`usable` for every file, against the matching style's real p5 of on_beat, and the worst file.

    `files`: {name: metrics}; `reference`: `real_reference`'s result, or None for the
    fallback; `folder_style`: the style of files whose names name none (`evaluate` passes
    the folder's own name: ideas/chorale/take1.mid is a chorale), if the reference has it.
    Returns {"files": {name: {"usable", "reasons", "on_beat_min", "against"}} ("against":
    "real chorale excerpts (40 windows)", "real excerpts (...)" pooled, or "fallback"),
    "worst": {"file", "on_beat"} (lowest on_beat; None for no files), "unusable": count,
    "judged": count, "basis": the on_beat bounds used and where they come from, in words}.
    """
    verdicts = {}
    for name, metrics in files.items():
        threshold, label, windows = _threshold(name, reference, folder_style)
        ok, reasons = usable(metrics, threshold, label)
        verdicts[name] = {"usable": ok, "reasons": reasons,
                          "on_beat_min": FALLBACK_ON_BEAT if threshold is None else threshold,
                          "against": f"{label} ({windows} windows)" if windows else label}
    worst = min(files, key=lambda name: files[name]["on_beat"], default=None)
    bounds = {v["against"]: v["on_beat_min"] for v in verdicts.values()}
    basis = "; ".join(f"on_beat >= {least:.2f}, "
                      + (FALLBACK_WORDS if against == "fallback" else f"the 5th percentile of {against}")
                      for against, least in bounds.items())
    return {"files": verdicts, "worst": None if worst is None else {"file": worst, "on_beat": files[worst]["on_beat"]},
            "unusable": sum(not v["usable"] for v in verdicts.values()), "judged": len(verdicts), "basis": basis}


def _threshold(name: str, reference: dict | None, folder_style: str | None) -> tuple[float | None, str, int]:
    """(the file's least on_beat or None for the fallback, what it comes from, windows measured)."""
    if not reference or not reference["all"]["metrics"]["on_beat"]:
        return None, "fallback", 0
    styles = [s for s, stats in reference["styles"].items() if stats["metrics"]["on_beat"]]
    style = style_of(name, styles) or (folder_style if folder_style in styles else None)
    stats = reference["styles"][style] if style else reference["all"]
    label = f"real {style} excerpts" if style else "real excerpts"
    return stats["metrics"]["on_beat"]["p5"], label, stats["windows"]
