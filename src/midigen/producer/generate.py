"""`midigen generate`: a trained model -> DAW-ready MIDI files, with a producer's controls.

Producer path: imports torch, numpy and mido, never Lightning or Hydra; MLflow only for
registry URIs. The MLflow pyfunc model calls `generate_batch` too, so both give the same
bytes for the same seed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from midigen.errors import MidigenError, MidiReadError

NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
SCALES = {
    "major": [0, 2, 4, 5, 7, 9, 11],
    "minor": [0, 2, 3, 5, 7, 8, 10],
    "harmonic_minor": [0, 2, 3, 5, 7, 8, 11],
    "dorian": [0, 2, 3, 5, 7, 9, 10],
    "mixolydian": [0, 2, 4, 5, 7, 9, 10],
    "pentatonic_major": [0, 2, 4, 7, 9],
    "pentatonic_minor": [0, 3, 5, 7, 10],
    "blues": [0, 3, 5, 6, 7, 10],
    "chromatic": list(range(12)),
}
BEATS_PER_BAR = 4


# A file over --max-copy is sampled again at most this many times; the least-copied is kept.
MAX_RESAMPLES = 5


@dataclass
class GenerateRequest:
    """A producer's request. Lengths: `bars` (exact, 4/4 at `bpm`) or `events` (a cap)."""

    num: int = 8
    bars: int | None = 8
    events: int | None = None
    bpm: float = 120.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.95
    style: dict[str, float] | None = None
    key: str | None = None
    scale: str | None = None
    primer: str | None = None
    seed: int = 0
    note_range: tuple[int, int] = (36, 99)
    repetition_penalty: float = 0.3
    max_note_beats: float = 4.0
    velocity: int = 64
    name: str = "midigen"
    # Resample files whose copy ratio exceeds this: a number, "auto" (the bound the model's
    # originality index was calibrated to on held-out real music) or None (no check).
    max_copy: float | str | None = "auto"
    max_events: int = 4000
    kernels: str = "auto"  # sampling kernels: "auto" (native where built), "native", "python"
    # A MIDI file whose end warms the model's state without being written (follow on from it),
    # and a second conditioning the clip is drawn towards: {"context": path or None,
    # "style": {name: weight} or None, "weight": 0..1} (see `sampling.Towards`).
    context: str | None = None
    towards: dict | None = None
    extras: dict = field(default_factory=dict)


def parse_key(key: str | None, scale: str | None) -> list[int] | None:
    """'F# minor' (or key='F#', scale='minor') -> allowed pitch classes; None = no restriction."""
    if key is None and scale is None:
        return None
    text = (key or "C").strip()
    m = re.fullmatch(r"([A-Ga-g])([#b♯♭]?)\s*(.*)", text)
    if not m:
        raise MidigenError(f"--key {key!r} is not a key: use a note name and mode, e.g. 'F# minor' or 'Bb major'")
    tonic = (NOTE_NAMES[m.group(1).upper()] + {"#": 1, "♯": 1, "b": -1, "♭": -1}.get(m.group(2), 0)) % 12
    mode = (scale or m.group(3) or "major").strip().lower().replace(" ", "_")
    mode = {"maj": "major", "min": "minor", "m": "minor", "aeolian": "minor", "ionian": "major"}.get(mode, mode)
    if mode not in SCALES:
        raise MidigenError(f"unknown scale {mode!r}: use one of {', '.join(SCALES)}")
    return [(tonic + step) % 12 for step in SCALES[mode]]


def parse_style(text: str | None) -> dict[str, float] | None:
    """'chorale=0.6,fiddle=0.4' (or 'chorale') -> {'chorale': 0.6, 'fiddle': 0.4}."""
    if not text:
        return None
    weights = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value) if value else 1.0
        except ValueError:
            raise MidigenError(f"--style {text!r}: weights are numbers, e.g. chorale=0.6,fiddle=0.4") from None
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise MidigenError(f"--style {text!r}: weights must be >= 0 and not all zero")
    return weights


def parse_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not m or not (0 <= int(m.group(1)) <= int(m.group(2)) <= 127):
        raise MidigenError(f"--note-range {text!r}: use LOW-HIGH MIDI pitches within 0-127, e.g. 36-99")
    return int(m.group(1)), int(m.group(2))


def validate(req: GenerateRequest) -> None:
    if req.num < 1:
        raise MidigenError(f"--num {req.num}: ask for at least one file")
    if req.temperature <= 0:
        raise MidigenError(f"--temperature {req.temperature}: use a positive number (1.0 = as trained)")
    if not 0 < req.top_p <= 1:
        raise MidigenError(f"--top-p {req.top_p}: use a number in (0, 1]")
    if req.top_k < 0:
        raise MidigenError(f"--top-k {req.top_k}: use 0 (off) or a positive number")
    if req.bars is not None and req.bars < 1:
        raise MidigenError(f"--bars {req.bars}: use at least 1 bar")
    if req.events is not None and req.events < 1:
        raise MidigenError(f"--events {req.events}: use at least 1 event")
    if not 20 <= req.bpm <= 400:
        raise MidigenError(f"--bpm {req.bpm}: use a tempo between 20 and 400")
    if not 1 <= req.velocity <= 127:
        raise MidigenError(f"--velocity {req.velocity}: use 1-127")
    if req.repetition_penalty < 0:
        raise MidigenError("--repetition-penalty must be >= 0 (0 disables it)")


def _style_weights(bundle, style: dict[str, float] | None):  # noqa: ANN001
    import torch

    known = bundle.styles
    if not style:
        return None
    if not known:
        raise MidigenError("this model was trained without styles; leave out --style")
    unknown = sorted(set(style) - set(known))
    if unknown:
        raise MidigenError(f"unknown style {', '.join(unknown)}: this model knows {', '.join(known)}")
    return torch.tensor([style.get(s, 0.0) for s in known], dtype=torch.float32)


def _primer_ids(path: str, params, what: str = "--primer") -> np.ndarray:  # noqa: ANN001
    from midigen.data.events import encode_notes
    from midigen.data.midi_io import read_notes

    if not Path(path).is_file():
        raise MidigenError(f"{what} {path}: no such file")
    try:
        ids = encode_notes(*read_notes(path, params), params)
    except MidiReadError as exc:
        raise MidigenError(f"{what} {exc}: use a MIDI clip with notes") from None
    return ids.astype(np.int64)


CONTEXT_EVENTS = 512  # the end of a context file that warms the state (about 8 bars of dense music)


def _context_ids(path: str, params, what: str = "--context") -> np.ndarray:  # noqa: ANN001
    """The last CONTEXT_EVENTS events of a MIDI file: its end, where every note is closed."""
    return _primer_ids(path, params, what)[-CONTEXT_EVENTS:]


def generate_batch(bundle, req: GenerateRequest) -> list[dict]:  # noqa: ANN001
    """Sample `req.num` clips. Returns [{"name", "midi" (bytes), "ids", "notes", "copy"}].

    Same bundle + request (seed included) = byte-identical files.
    """
    import io

    import torch

    from midigen.data.events import total_steps
    from midigen.data.midi_io import TICKS_PER_BEAT, ids_to_ticks, write_midi
    from midigen.producer.sampling import SamplingOptions, Towards, sample

    validate(req)
    params = bundle.params
    scale = parse_key(req.key, req.scale)
    style = _style_weights(bundle, req.style)
    primer = _primer_ids(req.primer, params) if req.primer else None
    if primer is not None and req.context:
        raise MidigenError("--primer and --context exclude each other: a primer is kept in the clip, a context is not")
    context = _context_ids(req.context, params) if req.context else None
    towards = None
    if req.towards is not None:
        weight = float(req.towards.get("weight", 0.5))
        if not 0.0 <= weight <= 1.0:
            raise MidigenError(f"blend weight {weight}: use a number between 0 and 1")
        towards = Towards(context=_context_ids(req.towards["context"], params) if req.towards.get("context") else None,
                          style=_style_weights(bundle, req.towards.get("style")), weight=weight,
                          mix=req.towards.get("mix", "geometric"))
    spb = params.steps_per_beat(req.bpm)  # steps per beat

    if req.bars is not None and req.events is None:
        end_tick = req.bars * BEATS_PER_BAR * TICKS_PER_BEAT
        max_steps = int(np.ceil(req.bars * BEATS_PER_BAR * spb))
        max_events = req.max_events
    else:
        end_tick, max_steps, max_events = None, None, req.events or 220
    if primer is not None and max_steps is not None and total_steps(primer, params) >= max_steps:
        raise MidigenError(f"--primer {req.primer} is as long as the requested {req.bars} bars or longer: "
                           "ask for more --bars or use a shorter clip")

    low, high = req.note_range
    rng = np.random.default_rng(req.seed)
    span = np.arange(low, high + 1)
    starts = (rng.choice(span, size=req.num, replace=req.num > span.size)).tolist()
    if scale is not None:  # start in key too
        in_key = span[np.isin(span % 12, scale)]
        starts = rng.choice(in_key, size=req.num, replace=req.num > in_key.size).tolist()

    opts = SamplingOptions(
        num=req.num, max_events=max_events, max_steps=max_steps, temperature=req.temperature,
        top_k=req.top_k, top_p=req.top_p, scale=scale, repetition_penalty=req.repetition_penalty,
        max_note_steps=int(round(req.max_note_beats * spb)) if req.max_note_beats else None,
        start_pitches=starts, primer=primer, style=style, seed=req.seed, kernels=req.kernels, context=context,
        towards=towards)
    index, bound = _originality_guard(bundle, req.max_copy)
    sequences = sample(bundle.model, params, opts)
    results = []
    for i, ids in enumerate(sequences):
        on, off, pitch = ids_to_ticks(ids, params, req.bpm, end_tick, min_ticks=TICKS_PER_BEAT // 8)
        copy = None
        if index is not None:
            copy = index.check_notes(on, pitch, TICKS_PER_BEAT)
            attempts = 0
            while bound is not None and copy["copy_ratio"] > bound and attempts < MAX_RESAMPLES:
                attempts += 1
                retry = SamplingOptions(**{**opts.__dict__, "num": 1, "start_pitches": [starts[i]],
                                           "seed": req.seed * 1000 + i * 10 + attempts})
                ids_b = sample(bundle.model, params, retry)[0]
                notes_b = ids_to_ticks(ids_b, params, req.bpm, end_tick, min_ticks=TICKS_PER_BEAT // 8)
                copy_b = index.check_notes(notes_b[0], notes_b[2], TICKS_PER_BEAT)
                if copy_b["copy_ratio"] < copy["copy_ratio"]:  # keep the least-copied attempt
                    ids, (on, off, pitch), copy = ids_b, notes_b, copy_b
            copy.update(resampled=attempts, max_copy=bound,
                        over=bound is not None and copy["copy_ratio"] > bound)
        if end_tick is None:  # --events: round the clip up to a whole bar so it loops
            last = int(off.max()) if off.size else TICKS_PER_BEAT * BEATS_PER_BAR
            bar = TICKS_PER_BEAT * BEATS_PER_BAR
            clip_end = -(-last // bar) * bar
        else:
            clip_end = end_tick
        buf = io.BytesIO()
        with tempfile.TemporaryDirectory() as tmp:
            path = write_midi(Path(tmp) / "clip.mid", on, off, pitch, bpm=req.bpm, velocity=req.velocity,
                              end_tick=clip_end, track_name=req.name)
            buf.write(path.read_bytes())
        results.append({"name": f"{safe_name(req.name)}_s{req.seed}_{i + 1:02d}.mid", "midi": buf.getvalue(),
                        "ids": ids, "notes": (on, off, pitch), "copy": copy})
    return results


def _originality_guard(bundle, max_copy):  # noqa: ANN001, ANN202
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


def parse_max_copy(text: str | None) -> float | str | None:
    """--max-copy: 'auto', 'off', or a share between 0 and 1."""
    if text is None or text.strip().lower() == "auto":
        return "auto"
    if text.strip().lower() in ("off", "none", "no"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise MidigenError(f"--max-copy {text!r}: use a share between 0 and 1 (e.g. 0.3), 'auto' or 'off'")
    return value


def safe_name(name: str) -> str:
    """A file-name stem that cannot leave --out (no separators, no dots-only names)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return stem or "midigen"


# --- command line ------------------------------------------------------------------------


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, a pulled model folder or a "
                        ".ckpt (default: models:/midigen@champion, else the newest version, else the shipped "
                        "pretrained model)")
    p.add_argument("--num", type=int, default=8, help="files to write (default 8)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--bars", type=int, default=None, help="length in 4/4 bars, exact (default 8)")
    length.add_argument("--events", type=int, default=None, help="length in events instead of bars")
    p.add_argument("--style", default=None, help="style weights, e.g. chorale=0.6,fiddle=0.4")
    p.add_argument("--primer", default=None, help="a MIDI clip to continue; kept verbatim at the start")
    p.add_argument("--note-range", default="36-99", help="start pitches LOW-HIGH (default 36-99)")
    add_clip_arguments(p)


def add_clip_arguments(p: argparse.ArgumentParser) -> None:
    """The options every command that writes clips shares (generate, interpolate)."""
    p.add_argument("--bpm", type=float, default=120.0, help="tempo written to the file (default 120)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest events (0 = off)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (1 = off)")
    p.add_argument("--key", default=None, help="restrict NOTE_ONs to a key, e.g. 'F# minor'")
    p.add_argument("--scale", default=None, help=f"scale of --key: {', '.join(SCALES)}")
    p.add_argument("--seed", type=int, default=0,
                   help="same seed + model + options = identical files (on one machine and kernel build)")
    p.add_argument("--repetition-penalty", type=float, default=0.3,
                   help="anti-stuck: logit penalty per recent repeat of a pitch (0 = off; default 0.3)")
    p.add_argument("--max-note-beats", type=float, default=4.0, help="end any note held this long (default 4)")
    p.add_argument("--velocity", type=int, default=64)
    p.add_argument("--max-copy", default="auto",
                   help="resample (up to 5x) files whose copy ratio against the training corpus exceeds this share; "
                        "'auto' (default): the bound held-out real music sets, stored with the model; 'off'")
    p.add_argument("--name", default="midigen", help="file name prefix and track name")
    p.add_argument("--out", default="ideas", help="output folder (default ideas/)")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.add_argument("--preview", action="store_true", help="write a piano-roll PNG beside each file")
    p.add_argument("--audio", nargs="?", const="wav", default=None, metavar="FORMAT",
                   help="write an audio preview beside each file: wav (the default when FORMAT is left out), "
                        "mp3, flac or ogg. FluidSynth with a General MIDI SoundFont when installed, else a "
                        "built-in piano")
    p.add_argument("--soundfont", default=None, metavar="SF2",
                   help="the SoundFont for --audio (implies --audio wav); needs FluidSynth. Default: "
                        "$MIDIGEN_SOUNDFONT, else one found in /usr/share/sounds/sf2, /usr/share/soundfonts or "
                        "~/.local/share/soundfonts")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of lines")
    p.add_argument("--kernels", choices=["auto", "native", "python"], default="auto",
                   help="sampling kernels: native (compiled by `midigen kernels build`), python, or auto "
                        "(native where built; the default)")


def clip_request(args: argparse.Namespace, **fields) -> GenerateRequest:
    """A GenerateRequest from the options `add_clip_arguments` defines, plus `fields`."""
    return GenerateRequest(
        bpm=args.bpm, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, key=args.key,
        scale=args.scale, seed=args.seed, repetition_penalty=args.repetition_penalty,
        max_note_beats=args.max_note_beats, velocity=args.velocity, name=args.name,
        max_copy=parse_max_copy(args.max_copy), kernels=args.kernels, **fields)


def audio_settings(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(format, renderer) for --audio/--soundfont, or (None, None). Checked before any sampling:
    a bad format or a missing SoundFont fails in a second, not after minutes of work."""
    if args.audio is None and args.soundfont is None:
        return None, None
    from midigen.producer.audio import available_renderer, check_format

    return check_format(args.audio or "wav"), available_renderer(args.soundfont)


def generate_command(args: argparse.Namespace) -> int:
    from midigen.producer.bundle import load_bundle
    from midigen.producer.registry import default_model_ref, locate_model

    req = clip_request(args, num=args.num, bars=args.bars if args.bars is not None else (None if args.events else 8),
                       events=args.events, style=parse_style(args.style), primer=args.primer,
                       note_range=parse_range(args.note_range))
    validate(req)
    audio = audio_settings(args)
    source = locate_model(args.model or default_model_ref())
    bundle = load_bundle(source.path)
    return write_clips(generate_batch(bundle, req), args, source, audio)


def write_clips(results: list[dict], args: argparse.Namespace, source, audio: tuple[str | None, str | None],  # noqa: ANN001
                report: dict | None = None) -> int:
    """Write generated clips into --out (with --preview PNGs and --audio recordings beside them)
    and say what was written: a line per file, or with --json one object (`report` adds to it).

    Everything is written aside first and moved in at the end: an error leaves no partial set
    of files behind; files that exist are refused without --force."""
    import json

    audio_format, renderer = audio
    out = Path(args.out)
    targets = [out / r["name"] for r in results]
    extras = [".png"] if args.preview else []
    extras += [f".{audio_format}"] if audio_format else []
    written = targets + [t.with_suffix(suffix) for t in targets for suffix in extras]
    clashes = [t for t in written if t.exists()]
    if clashes and not args.force:
        raise MidigenError(f"{clashes[0]} exists ({len(clashes)} files would be overwritten): use --force or "
                           "another --out/--seed")
    out.mkdir(parents=True, exist_ok=True)
    audio_files = []
    with tempfile.TemporaryDirectory(dir=out) as staging:
        for r in results:
            midi_path = Path(staging) / r["name"]
            midi_path.write_bytes(r["midi"])
            if args.preview:
                from midigen.evaluation.pianoroll import pianoroll_from_notes

                on, off, pitch = r["notes"]
                pianoroll_from_notes(on, off, pitch, 960, midi_path.with_suffix(".png"), title=r["name"])
            if audio_format:
                from midigen.producer.audio import render_midi_file

                render_midi_file(midi_path, renderer=renderer, fmt=audio_format)
                audio_files.append(out / midi_path.with_suffix(f".{audio_format}").name)
        for path in Path(staging).iterdir():
            shutil.move(str(path), out / path.name)
    summary = _summarise(results)
    if args.json:
        copies = {str(t): r["copy"] for t, r in zip(targets, results) if r["copy"]}
        payload = {"model": source.ref, "model_source": source.to_dict(), "files": [str(t) for t in targets], "metrics": summary, "copy": copies, **(report or {})}
        if audio_format:
            payload["audio"] = {"renderer": renderer, "format": audio_format, "files": [str(a) for a in audio_files]}
        print(json.dumps(payload, default=float))
        return 0
    print(f"model: {source.describe()}")
    for t, r in zip(targets, results):
        on, _, pitch = r["notes"]
        copy = r["copy"]
        extra = f"  copy {copy['copy_ratio']:.2f}" if copy else ""
        if copy and copy.get("resampled"):
            extra += f" (resampled {copy['resampled']}x"
            extra += f", still above --max-copy {copy['max_copy']:.2f})" if copy["over"] else ")"
        if "weight" in r:
            extra += f"  weight of B {r['weight']:.2f}"
        if audio_format:
            extra += f"  + {t.with_suffix('.' + audio_format).name}"
        print(f"wrote {t}  {len(on)} notes{extra}")
    if audio_format:
        how = ("the built-in piano (--soundfont FILE.sf2 with FluidSynth installed for General MIDI sounds)"
               if renderer == "builtin" else f"FluidSynth with {renderer.split(':', 1)[1]}")
        print(f"audio: {len(audio_files)} {audio_format} files, renderer {renderer.split(':', 1)[0]}: {how}")
    print("batch: " + "  ".join(f"{k} {v:.3g}" for k, v in summary.items()), file=sys.stdout)
    return 0


def _summarise(results: list[dict]) -> dict:
    from midigen.evaluation.metrics import note_metrics

    rows = [note_metrics(*r["notes"], 960) for r in results]
    keys = ["in_scale", "on_grid", "stuck_ratio", "pitch_range", "polyphony", "note_density"]
    return {k: float(np.mean([row[k] for row in rows])) for k in keys if rows and k in rows[0]}
