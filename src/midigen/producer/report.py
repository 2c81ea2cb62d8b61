"""What `generate` and `interpolate` say about the clips they wrote: file by file, then the worst.

A producer judges each file in a DAW, so each file gets its own line: notes, share of onsets
on the beat, whether it is usable (on the grid, in phase with the beat as real music of its
style is, no hanging notes) and why not, its copy ratio; then the batch means and the worst
file, so one bad clip cannot hide in a mean. The usable bound is the style's real 5th
percentile of on-beat share where the model carries its training corpus's reference
(`reference.json`), else the documented fallback. With --json, one object with the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# A style whose real windows are this often in bars of another length than a clip's gets a --meter hint.
OWN_METER_SHARE = 0.5
SUMMARY_KEYS = ("in_scale", "on_grid", "on_beat", "stuck_ratio", "pitch_range", "opening_distance", "polyphony",
                "note_density", "repetition_half")


def judge(results: list[dict], req, bundle, reference: dict | None = None) -> dict:  # noqa: ANN001
    """{"files": {name: metrics + "usable", "reasons", "against"}, "mean": {...}, "worst", "unusable", "basis"}.

    `reference`: real excerpts' figures (`evaluation.reference.real_reference`), default the bundle's own."""
    from midigen.data.midi_io import TICKS_PER_BEAT
    from midigen.evaluation.metrics import note_metrics
    from midigen.evaluation.reference import judge_files

    meter = [(0, *req.time_signature)] if getattr(req, "meter", None) else None
    rows = {r["name"]: note_metrics(*r["notes"], TICKS_PER_BEAT, end_tick=r.get("end_tick"), time_signatures=meter)
            for r in results}
    style = _main_style(req.style, bundle)
    if reference is None and bundle is not None:
        reference = bundle.reference
    verdicts = judge_files(rows, reference, folder_style=style)
    for r in results:
        row = rows[r["name"]]
        row.update(verdicts["files"][r["name"]], copy=r.get("copy"), weight=r.get("weight"))
        if r.get("cut_at_bar"):
            row["usable"] = False
            row["reasons"] = [*row["reasons"], f"stopped in bar {r['cut_at_bar']}: the model wrote over the event "
                                               f"budget of the clip (silence after)"]
    mean = {}
    for key in SUMMARY_KEYS:
        values = [row[key] for row in rows.values() if row.get(key) is not None]
        if values:
            mean[key] = float(np.mean(values))
    unusable = sum(not row["usable"] for row in rows.values())
    return {"files": rows, "mean": mean, "worst": verdicts["worst"], "unusable": unusable, "basis": verdicts["basis"],
            "meter": own_meter_hint(reference, style, getattr(req, "meter", None) or "4/4")}


def own_meter_hint(reference: dict | None, style: str | None, meter: str) -> dict | None:
    """{"style", "meter", "beats", "share"} when most of the style's real training windows are in
    bars of another length than the request's `meter` (so `--meter` could write it in its own),
    else None: the reference's `window_meter`, for a model whose reference has it."""
    from midigen.data.midi_io import meter_beats

    own = (((reference or {}).get("styles") or {}).get(style) or {}).get("meter") if style else None
    if not own or own["share"] < OWN_METER_SHARE or own["beats"] == meter_beats(meter):
        return None
    return {"style": style, **own}


def _main_style(style: dict | None, bundle) -> str | None:  # noqa: ANN001
    """The style a request leans to most (what its files are judged against), or None for an even blend."""
    if style:
        return max(style, key=style.get)
    styles = bundle.styles if bundle is not None else []
    return styles[0] if len(styles) == 1 else None


def print_report(verdict: dict, files: list[Path], source, req, as_json: bool, extra: dict | None = None,  # noqa: ANN001
                 audio: dict | None = None) -> None:
    rows = verdict["files"]
    names = [f.name for f in files]
    if as_json:
        payload = {"model": source.ref, "model_source": source.to_dict(), "seed": req.seed,
                   "fresh_seed": req.fresh_seed, "files": [str(f) for f in files],
                   "per_file": {str(f): rows[f.name] for f in files}, "metrics": verdict["mean"],
                   "worst": verdict["worst"], "unusable": verdict["unusable"], "basis": verdict["basis"],
                   "own_meter": verdict.get("meter"),
                   "copy": {str(f): rows[f.name]["copy"] for f in files if rows[f.name].get("copy")},
                   **(extra or {})}
        if audio:
            payload["audio"] = {**audio, "files": [str(a) for a in audio["files"]]}
        print(json.dumps(payload, default=_plain))
        return
    print(f"model: {source.describe()}")
    for f in files:
        print(f"wrote {f}  {_file_line(rows[f.name], audio)}")
    for name in names:
        for reason in rows[name]["reasons"]:
            print(f"  {name}: {reason}")
    if audio:
        how = ("the built-in piano (--soundfont FILE.sf2 with FluidSynth installed for General MIDI sounds)"
               if audio["renderer"] == "builtin" else f"FluidSynth with {audio['renderer'].split(':', 1)[1]}")
        print(f"audio: {len(audio['files'])} {audio['format']} files, renderer {audio['renderer'].split(':', 1)[0]}: {how}")
    print("batch: " + "  ".join(f"{k} {v:.3g}" for k, v in verdict["mean"].items()))
    worst = verdict["worst"]
    if worst:
        print(f"worst: {worst['file']} (on_beat {worst['on_beat']:.2f}); usable {len(names) - verdict['unusable']} "
              f"of {len(names)} ({verdict['basis']})")
    hint = verdict.get("meter")
    if hint:
        print(f"meter: real {hint['style']} music is mostly in {hint['beats']}-beat bars ({hint['share']:.0%} of its "
              f"training windows, most often {hint['meter']}); these clips are {req.meter}: --meter {hint['meter']} "
              "writes the style in its own")
    seed_note = " (fresh; --seed with it writes these files again)" if req.fresh_seed else ""
    print(f"seed: {req.seed}{seed_note}")


# A run of this many melody notes found in one training file is named in the file's line: a
# producer hears a phrase that long as a quote (of their own file, after `midigen finetune`).
COPIED_RUN_NOTES = 8


def _file_line(row: dict, audio: dict | None) -> str:
    text = f"{row['n_notes']} notes  on_beat {row['on_beat']:.2f}  {'usable' if row['usable'] else 'NOT usable'}"
    copy = row.get("copy")
    if copy:
        text += f"  copy {copy['copy_ratio']:.2f}"
        if copy.get("resampled"):
            text += f" (resampled {copy['resampled']}x"
            text += f", still above --max-copy {copy['max_copy']:.2f})" if copy["over"] else ")"
        if copy.get("source") and copy.get("longest_run", 0) >= COPIED_RUN_NOTES:
            text += f"  copies {copy['longest_run']} melody notes of {copy['source']}"
    if row.get("weight") is not None:
        text += f"  weight of B {row['weight']:.2f}"
    return text


def _plain(value: object) -> object:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
