"""`midigen interpolate A.mid B.mid --steps 5`: clips that move from one MIDI clip to another.

An LSTM has no latent space to walk through, so the walk happens in what it does have: the
state a clip leaves it in, and the style it is asked for. Two copies of the model's state
run side by side, one warmed by the end of A with A's style, the other by the end of B with
B's style; both read every sampled event, and clip i samples each event from the geometric
mix of their next-event distributions, p_A^(1-w) * p_B^w with w = i / (steps - 1)
(`sampling.Towards`). Clip 0 is a continuation of A in A's style, the last clip one of B in
B's style, and between them B's pull grows step by step. Every clip uses the same seed (the
same random numbers), so neighbouring clips differ by the weight, not by luck.

A file's style is what `--style-a` / `--style-b` say, else what the model's style classifier
(carried in its bundle) hears in it, else the model's even blend. Each clip keeps the DAW
facts of `generate`: exactly `--bars` long, one track, every note closed, `--seed` reproducible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from midigen.errors import MidigenError
from midigen.producer.generate import generate_batch
from midigen.producer.request import GenerateRequest, file_stem, parse_style


MIX = "geometric"  # how two next-event distributions mix (`sampling.Towards`)
MAX_STEPS = 32


def blend_weights(steps: int) -> list[float]:
    """The weight of B in each of `steps` clips: 0 ... 1, evenly spaced."""
    if not 2 <= steps <= MAX_STEPS:
        raise MidigenError(f"--steps {steps}: use 2 to {MAX_STEPS} (the first clip follows A, the last B)")
    return [i / (steps - 1) for i in range(steps)]


def file_style(bundle, path: str | Path, explicit: str | None) -> dict[str, float] | None:  # noqa: ANN001
    """The style weights a file is conditioned on: explicit, else the bundle's classifier's verdict."""
    if explicit:
        return parse_style("style", explicit)
    if not bundle.styles:
        return None
    classifier = bundle.style_classifier
    if classifier is None:
        return None  # the model's even blend
    from midigen.evaluation.style import classify_files

    verdict = classify_files(classifier, Path(path))["files"]
    if not verdict:
        return None
    probabilities = next(iter(verdict.values()))["probabilities"]
    known = {s: p for s, p in probabilities.items() if s in bundle.styles}
    total = sum(known.values())
    return {s: p / total for s, p in known.items()} if total > 0 else None


def interpolate_batch(bundle, a: str | Path, b: str | Path, steps: int, req: GenerateRequest,  # noqa: ANN001
                      style_a: str | None = None, style_b: str | None = None, mix: str = MIX) -> list[dict]:
    """`steps` clips from A towards B, `req.num` variations of each. Returns generate_batch's
    dicts plus "weight" (of B), "step" (0-based), "variation" (0-based) and "styles", named
    `<name>_s<seed>_step<k>of<steps>.mid` (with `_<variation>` when req.num > 1), step by step.

    `req` sets everything but the conditioning (bars, bpm, temperature, seed, ...); leave its
    style, primer and context unset. Variation j of every step draws the same random numbers,
    so along a variation the clips differ by the weight, not by luck."""
    from midigen.producer.generate import primer_ids

    for which, path in (("A", a), ("B", b)):
        primer_ids(str(path), bundle.params, label=f"{which} ({path})")  # a bad clip is named as the user gave it
    if req.primer or req.context or req.towards or req.style:
        raise MidigenError("interpolate sets the conditioning itself: leave out --primer and --style")
    weights = blend_weights(steps)
    styles = (file_style(bundle, a, style_a), file_style(bundle, b, style_b))
    width = len(str(steps))
    clips = []
    for k, weight in enumerate(weights):
        step_req = req.but(context=str(a), style=styles[0],
                           towards={"context": str(b), "style": styles[1], "weight": weight, "mix": mix})
        for j, result in enumerate(generate_batch(bundle, step_req)):
            stem = f"{file_stem(req.name)}_s{req.seed}_step{k + 1:0{width}d}of{steps}"
            result.update(name=f"{stem}.mid" if req.num == 1 else f"{stem}_{j + 1:02d}.mid",
                          weight=weight, step=k, variation=j, styles={"a": styles[0], "b": styles[1]})
            clips.append(result)
    return clips


def spearman(x, y) -> float:
    """Spearman's rank correlation of two equal-length sequences (average ranks for ties)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(values.size)
    ranks[order] = np.arange(values.size, dtype=float)
    for value in np.unique(values):  # ties share their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def add_interpolate_arguments(p) -> None:  # noqa: ANN001 - an argparse parser
    from midigen.producer.generate import add_output_arguments
    from midigen.producer.request import CLIP_FIELDS, add_request_arguments

    p.add_argument("a", metavar="A.mid", help="the clip to start from")
    p.add_argument("b", metavar="B.mid", help="the clip to end at")
    p.add_argument("--steps", type=int, default=5, help="clips from A to B, both ends included (default 5)")
    p.add_argument("--num", type=int, default=1, help="variations of each step (default 1)")
    p.add_argument("--mix", choices=["geometric", "arithmetic"], default=MIX,
                   help=f"geometric: each event one both models like; arithmetic: each event from one of them "
                        f"(default {MIX})")
    p.add_argument("--model", default=None, help="as for generate (default: the champion, else the pretrained model)")
    p.add_argument("--bars", type=int, default=8, help="length of each clip in 4/4 bars, exact (default 8)")
    p.add_argument("--form", default=None, help="shape each clip from sections, as for generate (AA', AB, AABA): "
                   "every section is drawn between A and B at the clip's weight")
    p.add_argument("--style-a", default=None, help="A's style weights (default: what the model's classifier hears)")
    p.add_argument("--style-b", default=None, help="B's style weights (default: what the model's classifier hears)")
    add_request_arguments(p, CLIP_FIELDS)
    add_output_arguments(p)


def interpolate_command(args) -> int:  # noqa: ANN001
    from midigen.producer.bundle import load_bundle
    from midigen.producer.output import audio_settings, check_folder, write_clips
    from midigen.producer.registry import default_model_ref, locate_model
    from midigen.producer.request import CLIP_FIELDS, request_from_args

    req = request_from_args(args, CLIP_FIELDS, num=args.num, bars=args.bars, form=args.form)
    blend_weights(args.steps)  # a bad --steps fails before the model loads
    audio = audio_settings(args)
    check_folder(Path(args.out))  # a bad --out fails before the model loads
    source = locate_model(args.model or default_model_ref())
    bundle = load_bundle(source.path)
    clips = interpolate_batch(bundle, args.a, args.b, args.steps, req, args.style_a, args.style_b, args.mix)
    report = {"weights": [c["weight"] for c in clips], "styles": clips[0]["styles"]}
    return write_clips(clips, args, source, audio, req, bundle, report)
