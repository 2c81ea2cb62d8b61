"""Why `--style-strength`: a model drawn freely drifts towards what all its styles share.

For each style named, on the shipped model and the corpus split training used: the share of
TIME_SHIFTs that are a 16th note (3 steps of a beat's 12), (1) in the style's held-out TEST
files, (2) as the model predicts them teacher-forced on those files (its mean next-event
distribution over the TIME_SHIFTs, at the events that are one), and (3) in 64 clips of 8 bars
the model draws itself (model start, seed 0, the style's top-p, the grid), at strength 0 and at
the strength the model carries for the style; with each its mean share of onsets on a beat.

    .venv/bin/python experiments/style_study/drift.py fiddle fife irish

About a minute a style on a 2-core CPU. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SIXTEENTH = 3  # steps of a 12-step beat


def _study():
    spec = importlib.util.spec_from_file_location("style_study", HERE / "study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["style_study"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def shift_share(seqs, steps: int, offset: int, max_shift: int) -> float:
    shifts = np.concatenate([s[(s >= offset) & (s < offset + max_shift)] - offset + 1 for s in seqs])
    return float(np.mean(shifts == steps)) if shifts.size else float("nan")


def teacher_forced(model, seqs, positions, weights, offset: int, max_shift: int) -> float:  # noqa: ANN001
    """The model's predicted share of 16th shifts among shifts, where the next event is a shift."""
    total, count = 0.0, 0
    with torch.no_grad():
        for seq, at in zip(seqs, positions):
            logits, _ = model(torch.from_numpy(seq[None]), weights, None,
                              positions=None if at is None else torch.from_numpy(at[None]))
            probs = F.softmax(logits[0, :-1].float(), -1).numpy()
            target = seq[1:]
            is_shift = (target >= offset) & (target < offset + max_shift)
            shift_probs = probs[is_shift][:, offset:offset + max_shift]
            shift_probs = shift_probs / shift_probs.sum(1, keepdims=True)
            total += float(shift_probs[:, SIXTEENTH - 1].sum())
            count += int(is_shift.sum())
    return total / max(count, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("styles", nargs="+")
    p.add_argument("--model", default=str(ROOT / "models" / "pretrained"))
    p.add_argument("--corpus", default=str(ROOT / "data" / "corpus"))
    p.add_argument("--files", type=int, default=64)
    p.add_argument("--lead-in", type=int, default=1, help="bars the model plays before each clip (generate's "
                                                           "--lead-in; the README's table: 0, measured before it)")
    args = p.parse_args()
    from midigen.data.events import TIME_SHIFT_OFFSET
    from midigen.evaluation.metrics import on_beat
    from midigen.evaluation.reference import window_metrics
    from midigen.producer.bundle import load_bundle
    from midigen.producer.generate import GenerateRequest, generate_batch

    ss = _study()
    bundle = load_bundle(args.model)
    corpus = ss.token_corpus(Path(args.corpus), bundle.params, ROOT / "data" / "cache", ss.conf_settings())
    model, max_shift = bundle.model.float().eval(), bundle.params.max_shift
    print("| style | 16th shifts: real test files | teacher-forced | drawn, strength 0 | drawn, strength s | s | "
          "on-beat: real | strength 0 | strength s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for style in args.styles:
        seqs, positions = ss.sequences(corpus, "test", style), ss.positions(corpus, "test", style)
        weights = torch.tensor([[1.0 if s == style else 0.0 for s in bundle.styles]])
        forced = teacher_forced(model, seqs, positions or [None] * len(seqs), weights, TIME_SHIFT_OFFSET, max_shift)
        real_beat = float(np.mean([row["on_beat"] for f in corpus.split("test") if f["style"] == style
                                   for row in ss._windows(Path(args.corpus) / f["rel"], 8, window_metrics)]))
        strength = bundle.style_strength(weights[0].tolist())
        drawn = {}
        for s in (0.0, strength):
            req = GenerateRequest(num=args.files, bars=8, seed=0, style={style: 1.0}, style_strength=s, max_copy=None,
                                  lead_in=args.lead_in)
            clips = generate_batch(bundle, req)
            beats = [on_beat(c["notes"][0], 960) for c in clips]
            drawn[s] = (shift_share([c["ids"] for c in clips], SIXTEENTH, TIME_SHIFT_OFFSET, max_shift),
                        float(np.mean([b for b in beats if b is not None])))
        print(f"| {style} | {shift_share(seqs, SIXTEENTH, TIME_SHIFT_OFFSET, max_shift):.2f} | {forced:.2f} | "
              f"{drawn[0.0][0]:.2f} | {drawn[strength][0]:.2f} | {strength:g} | {real_beat:.2f} | "
              f"{drawn[0.0][1]:.2f} | {drawn[strength][1]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
