"""REPORT.md of the fine-tune study, from results.json alone (`python report.py` re-renders it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def fmt(value, digits: int = 2) -> str:  # noqa: ANN001
    return "n/a" if value is None else f"{value:.{digits}f}"


def met(flag) -> str:  # noqa: ANN001
    return "n/a" if flag is None else ("met" if flag else "**not met**")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def goals(r: dict) -> list[tuple[str, str, bool | None]]:
    """(goal, figure, met) for each of the issue's numbers."""
    nll, g = r["nll"], r["goals"]
    tuned, scratch, base = (nll[k]["per_note"] for k in ("finetuned", "scratch", "base"))
    best = nll.get("base_best_style", {}).get("per_note")
    fid = r["fidelity"]["finetuned"]
    ratio = fid["accuracy"] / r["ceiling"] if r["ceiling"] else None
    forgot = r["forgetting"].values()
    worst_nll = max((row["nll_change"] for row in forgot if row["nll_change"] is not None), default=None)
    worst_fid = min((row["fidelity_change"] for row in forgot if row["fidelity_change"] is not None), default=None)
    control = min((row["fidelity_control_change"] for row in forgot
                   if row.get("fidelity_control_change") is not None), default=None)
    minutes = r["runs"]["finetune"]["seconds"] / 60
    t = r["timing"]["finetuned"]
    usable_ratio = t["usable_ratio"]
    return [
        ("held-out NLL per note: fine-tuned below the shipped model and from scratch",
         f"{fmt(tuned)} vs {fmt(base)} (shipped, even blend; best base style {fmt(best)}) and {fmt(scratch)}",
         tuned < min(base, scratch, best if best is not None else base)),
        (f"fidelity at least {g['fidelity_ratio']}x the real ceiling",
         f"{fmt(fid['accuracy'])} vs ceiling {fmt(r['ceiling'])} ({fmt(ratio)}x)",
         None if ratio is None else ratio >= g["fidelity_ratio"]),
        (f"forgetting: every base style's NLL per note worse by at most {g['forgetting_nll']:.0%}",
         f"worst {worst_nll:+.1%}" if worst_nll is not None else "n/a",
         None if worst_nll is None else worst_nll <= g["forgetting_nll"]),
        (f"forgetting: every base style's fidelity lower by at most {g['forgetting_fidelity']}",
         (f"worst {worst_fid:+.2f}" if worst_fid is not None else "n/a")
         + (f" (the shipped model against itself, other seeds: worst {control:+.2f})" if control is not None else ""),
         None if worst_fid is None else worst_fid >= -g["forgetting_fidelity"]),
        (f"the fine-tune command within {g['minutes']:.0f} minutes",
         f"{minutes:.1f} min, peak memory {r['runs']['finetune']['peak_memory_mb']:.0f} MB",
         minutes <= g["minutes"]),
        (f"usable share of generated files at least {g['usable_ratio']}x the real windows'",
         f"{fmt(t['model']['usable'])} vs {fmt(t['real_usable'])} ({fmt(usable_ratio)}x)",
         None if usable_ratio is None else usable_ratio >= g["usable_ratio"]),
    ]


def _schedule(r: dict) -> str:
    """Which from-scratch recipe is (b), and what the other(s) scored (studies before the second recipe: none)."""
    others = r["nll"].get("scratch_schedules") or {}
    chosen = r["runs"]["scratch"].get("scheduler")
    if not chosen or len(others) < 2:
        return ""
    rest = ", ".join(f"{k} {fmt(v['per_note'])}" for k, v in others.items() if k != chosen)
    return f", the better of its schedules: scheduler={chosen} ({rest})"


def readme_table(r: dict) -> str:
    """The README's table: the three models side by side, then the goals."""
    nll, fid, t, runs = r["nll"], r["fidelity"], r["timing"], r["runs"]
    rows = [["(a) shipped model, untouched", f"{fmt(nll['base']['per_note'])} (even blend); "
             f"{fmt(nll['base_best_style']['per_note'])} as {nll['base_best_style']['as']}",
             "cannot be asked for it", "n/a", "n/a"],
            [f"(b) same size, from scratch on the 30 files{_schedule(r)}", fmt(nll["scratch"]["per_note"]),
             fmt(fid["scratch"]["accuracy"]), f"{fmt(t['scratch']['model']['usable'])}",
             f"{runs['scratch']['seconds'] / 60:.1f} min"],
            ["(c) `midigen finetune` from the shipped model", fmt(nll["finetuned"]["per_note"]),
             fmt(fid["finetuned"]["accuracy"]), f"{fmt(t['finetuned']['model']['usable'])}",
             f"{runs['finetune']['seconds'] / 60:.1f} min, {runs['finetune']['peak_memory_mb']:.0f} MB peak"]]
    lines = table(["model", f"held-out NLL per note ({r['heldout_files']} files)",
                   f"fidelity ({r['generated_files']} files; ceiling {fmt(r['ceiling'])})",
                   f"usable share (real {fmt(t['finetuned']['real_usable'])})", "wall time"], rows)
    lines += ["", *table(["goal", "figure", ""], [[g, f, met(m)] for g, f, m in goals(r)])]
    return "\n".join(lines)


def render(r: dict) -> str:
    forgot = r["forgetting"]
    lines = ["# Fine-tune study: a producer's folder as a new style", "",
             "Generated by `bash experiments/finetune_study/run.sh` (experiments/finetune_study/study.py); every "
             "figure is from results.json.", "",
             f"The producer's folder: {r['finetune_files']} of music21's string quartet movements (`classical`, "
             f"outside the default corpus, so the shipped model never saw them), imported as style `{r['style']}`; "
             f"the other {r['heldout_files']} movements are held out and read by no model. The fine-tune and the "
             f"from-scratch run had the same training-time limit ({r['train_minutes']:g} min, `trainer.max_time`). "
             f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores.", "",
             readme_table(r), "",
             "## Forgetting, per base style", "",
             f"TEST-split NLL per note (as training split the corpus) and fidelity of {r['forgetting_files']} "
             "generated 8-bar files per style and model, by the fine-tuned model's classifier (which knows "
             f"`{r['style']}` too) for both. s.e.: the standard error of the fidelity change (two shares of "
             f"{r['forgetting_files']} files); a change within 2 s.e. of zero is not told apart from noise. "
             "Control: the shipped model's files drawn again with other seeds, against its first draw (how far "
             "fidelity moves when nothing was forgotten).", ""]
    lines += table(["style", "test files", "NLL/note shipped", "fine-tuned", "change", "fidelity shipped",
                    "fine-tuned", "change", "s.e.", "control"],
                   [[s, str(row["test_files"]), fmt(row["nll_base"]), fmt(row["nll_finetuned"]),
                     "n/a" if row["nll_change"] is None else f"{row['nll_change']:+.1%}",
                     fmt(row["fidelity_base"]), fmt(row["fidelity_finetuned"]),
                     "n/a" if row["fidelity_change"] is None else f"{row['fidelity_change']:+.2f}",
                     fmt(row.get("fidelity_change_se")),
                     "n/a" if row.get("fidelity_control_change") is None else f"{row['fidelity_control_change']:+.2f}"]
                    for s, row in forgot.items()])
    t = r["timing"]["finetuned"]
    lines += ["", "## The new style, file by file", "",
              f"Of {t['model']['files']} generated `{r['style']}` files: usable {fmt(t['model']['usable'])} "
              f"(real held-out windows {fmt(t['real_usable'])}, {t['real_windows']} windows); on-beat share "
              f"{fmt(t['model']['on_beat'])} (real {fmt(t['real_on_beat'])}); worst file: "
              + (f"{t['model']['worst']['file']} (on-beat {fmt(t['model']['worst']['on_beat'])})"
                 if t['model'].get('worst') else "none") + ".", "",
              "Classified as (fine-tuned): " + ", ".join(
                  f"{k} {v}" for k, v in sorted(r["fidelity"]["finetuned"]["classified_as"].items(),
                                                key=lambda kv: -kv[1])), "",
              "## Runs", "",
              f"- Fine-tune: {r['runs']['finetune']['seconds'] / 60:.1f} min wall (import, classifier, index, "
              f"training, test, registration), peak memory {r['runs']['finetune']['peak_memory_mb']:.0f} MB; "
              "its logged figures: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["finetune_metrics"].items())),
              *(f"- From scratch, scheduler={k}: {v['seconds'] / 60:.1f} min wall; held-out NLL per note "
                f"{fmt(v['per_note'])}" for k, v in (r["nll"].get("scratch_schedules") or {}).items()),
              f"- From scratch, (b): {r['runs']['scratch']['seconds'] / 60:.1f} min wall; "
              + ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["scratch_metrics"].items())),
              f"- The whole study: {r['seconds'] / 60:.1f} min; finished {r['finished']}", ""]
    return "\n".join(lines)


def write_report(results: dict, out: Path) -> Path:
    out.write_text(render(results))
    return out


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv or sys.argv[1:] or [str(HERE)])[0])
    results = json.loads((folder / "results.json").read_text())
    print(write_report(results, folder / "REPORT.md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
