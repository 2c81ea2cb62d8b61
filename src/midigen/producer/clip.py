"""One clip from a request: the sampler's options, primers and contexts, the originality guard,
the clip's name and its MIDI bytes. What `generate_batch` (generate.py) and `--form` (form.py)
share; sampling itself is `sampling.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from midigen.data.midi_io import BEATS_PER_BAR, TICKS_PER_BEAT
from midigen.errors import MidigenError, MidiReadError
from midigen.producer.request import RANDOM_START_RANGE, GenerateRequest, file_stem

MAX_RESAMPLES = 5  # a file over --max-copy is sampled again at most this many times; the least-copied is kept
CONTEXT_EVENTS = 512  # the end of a context file that warms the state (about 8 bars of dense music)


def clip_name(req: GenerateRequest, i: int) -> str:
    return f"{file_stem(req.name)}_s{req.seed}_{i + 1:02d}.mid"


def sampling_options(bundle, req: GenerateRequest):  # noqa: ANN001, ANN201 - (SamplingOptions, end tick or None)
    """The sampler's options for a request on this model: its styles, primer or context, lengths in steps."""
    from midigen.data.events import total_steps
    from midigen.producer.sampling import SamplingOptions, Towards

    params = bundle.params
    style = style_weights(bundle, req.style)
    primer = primer_ids(req.primer, params) if req.primer else None
    context, context_start = context_tail(req.context, params)
    towards = None
    if req.towards is not None:
        t = req.towards
        own, own_start = context_tail(t.get("context"), params)
        towards = Towards(context=own, context_start=own_start, style=style_weights(bundle, t.get("style")),
                          weight=float(t.get("weight", 0.5)), mix=t.get("mix", "geometric"))
    spb = params.steps_per_beat(req.bpm)  # steps per beat
    bar_beats = req.bar_beats
    config = bundle.model.config
    if config.position != "none" and bar_beats > config.position_bar_beats:
        raise MidigenError(f"--meter {req.meter}: a bar of {bar_beats} beats; this model knows bars of up to "
                           f"{config.position_bar_beats} beats")
    end_tick = max_steps = None
    if req.bars is not None:
        end_tick = req.bars * bar_beats * TICKS_PER_BEAT
        max_steps = int(np.ceil(req.bars * bar_beats * spb))
        if primer is not None and total_steps(primer, params) >= max_steps:
            raise MidigenError(f"--primer {req.primer} is as long as the requested {req.bars} bars or longer: "
                               "ask for more --bars or use a shorter clip")
    # The lean's second state reads the clip's own context; drawn towards another context (an
    # interpolation), there is no one context to lean from, so those clips are drawn as trained.
    strength = req.style_strength
    if strength is None:
        strength = 0.0 if towards is not None else bundle.style_strength(style)  # the model's setting for the style
    elif strength > 0 and not bundle.styles:
        raise MidigenError(f"--style-strength {strength:g}: this model knows no styles to lean into; use 0")
    elif strength > 0 and towards is not None:
        raise MidigenError(f"--style-strength {strength:g}: an interpolation is drawn as trained (the lean reads one "
                           "clip's context, an interpolation two); use 0")
    top_p = req.top_p
    if top_p is None:  # the model's setting for the style; drawn towards another: the two mixed by the weight
        as_trained = strength == 0  # drawn as trained: the masses chosen for that, where they differ
        top_p = bundle.top_p(style, as_trained)
        if towards is not None:
            top_p = (1.0 - towards.weight) * top_p + towards.weight * bundle.top_p(towards.style, as_trained)
    opts = SamplingOptions(
        num=req.num, max_events=req.event_budget, max_steps=max_steps, temperature=req.temperature,
        top_k=req.top_k, top_p=top_p,
        scale=req.scale_classes, repetition_penalty=req.repetition_penalty,
        max_note_steps=int(round(req.max_note_beats * spb)) if req.max_note_beats else None,
        start=req.start, start_pitches=random_starts(req) if req.start == "random" else None,
        lead_in_steps=int(round(req.lead_in * bar_beats * spb)) if req.start == "model" else 0, bar_beats=bar_beats,
        note_range=req.note_range, voices=req.voices, primer=primer, style=style, seed=req.seed,
        kernels=req.kernels, context=context, context_start=context_start, towards=towards,
        grid=sampling_grid(req.grid, params), style_strength=float(strength),
        lean_from=bundle.lean_from() if strength > 0 else None)
    return opts, end_tick


def sampling_grid(name: str, params) -> tuple[int, ...] | None:  # noqa: ANN001
    """--grid as the sampler's subdivisions of the beat, for this model's time steps."""
    from midigen.producer.request import DEFAULT_GRID, GRIDS

    if name == "auto":
        name = DEFAULT_GRID if params.mode == "beat" else "off"
    grid = GRIDS[name]
    if grid is not None and params.mode != "beat":
        raise MidigenError(f"--grid {name}: this model counts time in milliseconds, not beats; use --grid off")
    fits = [n for n, g in GRIDS.items() if g is None or not any(params.grid % d for d in g)]
    if name not in fits:
        raise MidigenError(f"--grid {name}: this model's beat has {params.grid} steps, too few for it; "
                           f"use one of {', '.join(fits)}")
    return grid


def context_tail(path: str | None, params) -> tuple[np.ndarray | None, int]:  # noqa: ANN001
    """The last CONTEXT_EVENTS events of a MIDI file (its end, where every note is closed) and
    where they start in the bar for a position-aware model: placed so that they end on the clip's
    first bar line, as a DAW clip ends on a bar line and the clip is written from bar 1. Two
    contexts (interpolation's A and B) then agree on where the clip's bars are, so each end of an
    interpolation is exactly a continuation of its clip."""
    from midigen.data.events import total_steps

    if not path:
        return None, 0
    tail = primer_ids(path, params, f"context {path}")[-CONTEXT_EVENTS:]
    return tail, -total_steps(tail, params)


def random_starts(req: GenerateRequest) -> list[int]:
    """The seed's start: a uniformly random first pitch per file (in key, where a key is asked)."""
    low, high = req.note_range or RANDOM_START_RANGE
    rng = np.random.default_rng(req.seed)
    span = np.arange(low, high + 1)
    scale = req.scale_classes
    starts = rng.choice(span, size=req.num, replace=req.num > span.size)
    if scale is not None:
        in_key = span[np.isin(span % 12, scale)]
        if in_key.size == 0:
            raise MidigenError(f"--note-range {low}-{high} holds no note of the key {req.key}: widen it")
        starts = rng.choice(in_key, size=req.num, replace=req.num > in_key.size)
    return starts.tolist()


# Styles a listener (and a style classifier, on real music) hardly tells apart: naming the group
# asks for the even blend of the members the model knows (experiments/style_study/REPORT.md).
STYLE_GROUPS = {"dance": ("fiddle", "irish", "scottish", "northumbrian", "fife")}


def style_weights(bundle, style: dict[str, float] | None):  # noqa: ANN001, ANN201 - a (S,) tensor or None
    """Style weights over the model's styles, a group (`dance`) spread evenly over its members."""
    import torch

    if not style:
        return None
    known = bundle.styles
    if not known:
        raise MidigenError("this model was trained without styles; leave out --style")
    style = _expand_groups(style, known)
    unknown = sorted(set(style) - set(known))
    if unknown:
        groups = [g for g, members in STYLE_GROUPS.items() if any(m in known for m in members)]
        also = f" (and the group{'s' if len(groups) > 1 else ''} {', '.join(groups)})" if groups else ""
        raise MidigenError(f"unknown style {', '.join(unknown)}: this model knows {', '.join(known)}{also}")
    return torch.tensor([style.get(s, 0.0) for s in known], dtype=torch.float32)


def _expand_groups(style: dict[str, float], known: list[str]) -> dict[str, float]:
    expanded: dict[str, float] = {}
    for name, weight in style.items():
        members = [m for m in STYLE_GROUPS.get(name, ()) if m in known] if name not in known else []
        for member, share in ([(m, weight / len(members)) for m in members] if members else [(name, weight)]):
            expanded[member] = expanded.get(member, 0.0) + share
    return expanded


def primer_ids(path: str, params, label: str | None = None) -> np.ndarray:  # noqa: ANN001
    """A MIDI clip's events (to keep as a primer, or the end of it to follow on from); errors
    name the clip as `label` (default: `--primer PATH`)."""
    from midigen.data.events import encode_notes
    from midigen.data.midi_io import read_notes

    label = label or f"--primer {path}"
    if not Path(path).is_file():
        raise MidigenError(f"{label}: no such MIDI file" if not Path(path).is_dir() else f"{label}: is a folder, not a MIDI file")
    try:
        ids = encode_notes(*read_notes(path, params), params)
    except MidiReadError as exc:
        reason = str(exc).split(": ", 1)[-1]
        if reason.startswith("no notes") and has_note_ons(path):
            reason = "its notes never end (note-ons without note-offs)"
        raise MidigenError(f"{label}: {reason}; use a MIDI clip with notes") from None
    return ids.astype(np.int64)


def has_note_ons(path: str) -> bool:
    import mido

    try:
        return any(m.type == "note_on" and m.velocity for m in mido.MidiFile(path, clip=True))
    except Exception:  # unreadable by mido too: the reader's reason stands
        return False


def least_copied(bundle, req, opts, i, ids, notes, index, bound, end_tick):  # noqa: ANN001, ANN202
    """Resample file `i` (up to MAX_RESAMPLES times) while its copy ratio is over `bound`; keep the least copied."""
    from dataclasses import replace

    from midigen.data.midi_io import ids_to_ticks
    from midigen.producer.sampling import sample

    copy = index.check_notes(notes[0], notes[2], TICKS_PER_BEAT)
    attempts = 0
    while bound is not None and copy["copy_ratio"] > bound and attempts < MAX_RESAMPLES:
        attempts += 1
        retry = replace(opts, num=1, start_pitches=[opts.start_pitches[i]] if opts.start_pitches else None,
                        seed=req.seed * 1000 + i * 10 + attempts)
        ids_b = sample(bundle.model, bundle.params, retry)[0]
        notes_b = ids_to_ticks(ids_b, bundle.params, req.bpm, end_tick, min_ticks=TICKS_PER_BEAT // 8)
        copy_b = index.check_notes(notes_b[0], notes_b[2], TICKS_PER_BEAT)
        if copy_b["copy_ratio"] < copy["copy_ratio"]:
            ids, notes, copy = ids_b, notes_b, copy_b
    copy.update(resampled=attempts, max_copy=bound, over=bound is not None and copy["copy_ratio"] > bound)
    return ids, notes, copy


def originality_guard(bundle, max_copy):  # noqa: ANN001, ANN202
    """(index or None, bound or None) for `max_copy`: a number, "auto" or None.

    "auto" checks and reports every file when the model carries an index, and bounds it by
    the index's held-out calibration when it has one; a number needs an index."""
    from midigen.evaluation.originality import OriginalityIndex

    if max_copy is None:
        return None, None
    if bundle.index_path is None:
        if max_copy == "auto":
            return None, None
        raise MidigenError(f"{bundle.path}: this model has no originality index; use --max-copy off or retrain")
    index = OriginalityIndex.load(bundle.index_path)
    return index, (index.max_copy if max_copy == "auto" else float(max_copy))


def whole_bars(off_ticks: np.ndarray, bar_beats: int = BEATS_PER_BAR) -> int:
    """--events: the clip rounded up to a whole bar (of `bar_beats` beats), so it loops."""
    bar = TICKS_PER_BEAT * bar_beats
    last = int(off_ticks.max()) if off_ticks.size else bar
    return -(-last // bar) * bar


def cut_at_bar(ids: np.ndarray, params, req: GenerateRequest, opts) -> int | None:  # noqa: ANN001
    """The bar a --bars clip stopped in when its event budget ran out first (None: it is whole)."""
    from midigen.data.events import total_steps

    if req.bars is None or opts.max_steps is None:
        return None
    steps = total_steps(ids, params)
    if steps >= opts.max_steps:
        return None
    return int(steps // (req.bar_beats * params.steps_per_beat(req.bpm))) + 1


def midi_bytes(notes, req: GenerateRequest, end_tick: int) -> bytes:  # noqa: ANN001
    import tempfile

    from midigen.data.midi_io import write_midi

    # A track name is Latin-1 in a MIDI file: other letters of --name become '?' there (the file name keeps them).
    track_name = req.name.encode("latin-1", "replace").decode("latin-1")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_midi(Path(tmp) / "clip.mid", *notes, bpm=req.bpm, velocity=req.velocity, end_tick=end_tick,
                          track_name=track_name, meter=req.time_signature)
        return path.read_bytes()
