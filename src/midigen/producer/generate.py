"""`midigen generate`: a trained model -> DAW-ready MIDI files, with a producer's controls.

`generate_batch(bundle, request)` samples the clips a `GenerateRequest` asks for and turns them
into MIDI bytes (`clip.py`) (the MLflow pyfunc, the studies and the training callback call it too, so all
give the same bytes for the same seed); `generate_command` is the CLI around it.
Producer path: imports torch, numpy and mido, never Lightning or Hydra; MLflow only for
registry URIs. Not for: the request's defaults and checks (`request.py`), writing files
(`output.py`), what is printed (`report.py`).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from midigen.data.midi_io import TICKS_PER_BEAT
from midigen.producer.clip import (clip_name, cut_at_bar, least_copied, midi_bytes, originality_guard,
                                   primer_ids, sampling_options, whole_bars)
from midigen.producer.request import CLIP_FIELDS, GENERATE_FIELDS, GenerateRequest, add_request_arguments, request_from_args


def generate_batch(bundle, req: GenerateRequest) -> list[dict]:  # noqa: ANN001
    """Sample `req.num` clips. Returns [{"name", "midi" (bytes), "ids", "notes" (on, off, pitch in
    ticks), "copy" (or None), "end_tick", "cut_at_bar" (None unless the event budget ran out)}].

    Same bundle + request (seed included) = byte-identical files. A request with a form (AA',
    AABA) is built section by section in `form.py`, whose "ids" are the finished clip's tokens."""
    from midigen.data.midi_io import ids_to_ticks
    from midigen.producer.sampling import sample

    if req.form is not None:
        return generate_formed(bundle, req)
    opts, end_tick = sampling_options(bundle, req)
    index, bound = originality_guard(bundle, req.max_copy)
    sequences = sample(bundle.model, bundle.params, opts)
    results = []
    for i, ids in enumerate(sequences):
        notes = ids_to_ticks(ids, bundle.params, req.bpm, end_tick, min_ticks=TICKS_PER_BEAT // 8)
        copy = None
        if index is not None:
            ids, notes, copy = least_copied(bundle, req, opts, i, ids, notes, index, bound, end_tick)
        clip_end = end_tick if end_tick is not None else whole_bars(notes[1], req.bar_beats)
        results.append({"name": clip_name(req, i), "midi": midi_bytes(notes, req, clip_end), "ids": ids,
                        "notes": notes, "copy": copy, "end_tick": clip_end,
                        "cut_at_bar": cut_at_bar(ids, bundle.params, req, opts)})
    return results


def _check_primer_fits(req: GenerateRequest, params, sections: int, section_bars: int) -> None:  # noqa: ANN001
    from midigen.data.events import total_steps
    from midigen.errors import MidigenError

    primer_bars = total_steps(primer_ids(req.primer, params), params) / (req.bar_beats * params.steps_per_beat(req.bpm))
    if primer_bars >= section_bars:
        raise MidigenError(f"--primer {req.primer} ({primer_bars:.3g} bars) is as long as a section of --form "
                           f"{req.form} ({req.bars} bars / {sections} = {section_bars}) or longer: ask "
                           "for more --bars or use a shorter clip")


def generate_formed(bundle, req) -> list[dict]:  # noqa: ANN001
    """`generate_batch` for a request with a form: the same result per file (name, midi, ids,
    notes, copy, end_tick, cut_at_bar), where

    - "ids" are the finished clip as the model's tokens (its notes encoded; in seed mode their
      times rounded to 8 ms steps), not the sampled streams, since repeats are copied;
    - "copy" is the whole clip's copy ratio; the originality resampling (`--max-copy`) applies
      to the first section, which every repeat and variation of it derive from;
    - "cut_at_bar" is the first bar of the clip in which a new section (or its repeat) stopped
      on its event budget (a variation keeps its source's lower notes to its end)."""
    from midigen.data.events import encode_notes
    from midigen.data.midi_io import ids_to_ticks
    from midigen.producer.form import (MIN_NOTE_TICKS, VARIATION_CANDIDATES, _cut_bar, _joined, _shifted,
                                       _ticks_to_steps, _vary, clip_ids, parse_form, section_seed)
    from midigen.producer.sampling import neutral_start, sample

    params = bundle.params
    sections = parse_form(req.form)
    section_bars = req.bars // len(sections)
    section_ticks = section_bars * req.bar_beats * TICKS_PER_BEAT
    first_req = req.but(bars=section_bars, form=None)
    if req.primer:
        _check_primer_fits(req, params, len(sections), section_bars)
    opts, _ = sampling_options(bundle, first_req)
    index, bound = originality_guard(bundle, req.max_copy)
    # A request's context came before the clip, so it comes before the clip so far too: the clip's
    # ids follow it as they did when the first section was sampled (`opts` keeps whatever it says
    # of the context's timing). Without one, the clip so far opens the context, on a bar line.
    lead = np.asarray(opts.context if opts.context is not None else [], dtype=np.int64)

    def to_notes(ids: np.ndarray):  # noqa: ANN202
        return ids_to_ticks(ids, params, req.bpm, section_ticks, min_ticks=MIN_NOTE_TICKS)

    def continuations(k: int, so_far: list[list], num: int) -> list[np.ndarray]:
        """`num` continuations of each file's clip so far (`so_far[i]`, its sections' notes), sampled
        as section k for every file at once: file i's are rows i*num .. i*num+num-1."""
        contexts, towards_contexts = [], []
        own = None
        if opts.towards is not None:  # interpolation: B's stream has heard the clip so far too, after B's own end
            own = np.asarray(opts.towards.context if opts.towards.context is not None else lead, dtype=np.int64)
        for parts in so_far:
            heard = clip_ids(_joined(parts), k * section_ticks, params, req.bpm)
            context = np.concatenate([lead, heard])
            if not len(context):  # nothing was heard (no notes, no rests): follow on from a beat's rest
                context = np.asarray([neutral_start(params)], dtype=np.int64)
            contexts += [context] * num  # one array per file: its continuations share its warm-up
            if own is not None:
                towards_contexts += [np.concatenate([own, heard])] * num
        towards = opts.towards if own is None else replace(opts.towards, context=towards_contexts)
        cont = replace(opts, num=len(contexts), primer=None, context=contexts, start_pitches=None,
                       seed=section_seed(req.seed, k), towards=towards)
        return sample(bundle.model, params, cont)

    made, attempts = [], []  # per file: {section label: (notes, cut bar)}; originality resamplings
    for i, first_ids in enumerate(sample(bundle.model, params, opts)):
        first = to_notes(first_ids)
        tries = 0
        if index is not None:
            first_ids, first, copy = least_copied(bundle, first_req, opts, i, first_ids, first, index, bound,
                                                   section_ticks)
            tries = copy["resampled"]
        made.append({sections[0].label: (first, _cut_bar(first_ids, params, opts, req.bpm))})
        attempts.append(tries)
    # Section by section, every file at once: each new section continues each file's clip so far.
    files = range(len(made))
    so_far: list[list] = [[] for _ in files]
    cut_at_bar: list[int | None] = [None for _ in files]
    for k, section in enumerate(sections):
        if section.label not in made[0]:
            if not section.varied:
                new = continuations(k, so_far, 1)
                for i in files:
                    made[i][section.label] = (to_notes(new[i]), _cut_bar(new[i], params, opts, req.bpm))
            else:
                # A variation keeps its source's lower notes to its end: no budget cut to report.
                n = VARIATION_CANDIDATES
                new = continuations(k, so_far, n)
                for i in files:
                    made[i][section.label] = (_vary(made[i][section.letter][0], new[i * n:(i + 1) * n], to_notes,
                                                    req.voices), None)
        for i in files:
            notes, cut = made[i][section.label]
            if cut is not None and cut_at_bar[i] is None:
                cut_at_bar[i] = k * section_bars + cut + 1
            so_far[i].append(_shifted(notes, k * section_ticks))

    results = []
    for i in files:
        parts = so_far[i]
        clip = _joined(parts)
        end_tick = req.bars * req.bar_beats * TICKS_PER_BEAT
        copy = None
        if index is not None:
            copy = index.check_notes(clip[0], clip[2], TICKS_PER_BEAT)
            copy.update(resampled=attempts[i], max_copy=bound, over=bound is not None and copy["copy_ratio"] > bound)
        ids = encode_notes(_ticks_to_steps(clip[0], params, req.bpm), _ticks_to_steps(clip[1], params, req.bpm),
                           clip[2], params).astype(np.int64)
        results.append({"name": clip_name(req, i), "midi": midi_bytes(clip, req, end_tick), "ids": ids,
                        "notes": clip, "copy": copy, "end_tick": end_tick, "cut_at_bar": cut_at_bar[i]})
    return results


# --- command line ------------------------------------------------------------------------


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    from midigen.producer.registry import MODEL_HELP

    p.add_argument("--model", default=None, help=MODEL_HELP)
    add_request_arguments(p, GENERATE_FIELDS + CLIP_FIELDS)
    add_output_arguments(p)


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """Where and how clips are written (generate, interpolate)."""
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


def generate_command(args: argparse.Namespace) -> int:
    from midigen.producer.bundle import load_bundle
    from midigen.producer.output import audio_settings, check_folder, check_targets, write_clips
    from midigen.producer.registry import default_model_ref, locate_model

    req = request_from_args(args, GENERATE_FIELDS + CLIP_FIELDS)
    audio = audio_settings(args)
    out = check_folder(Path(args.out))  # a bad --out fails before the model loads
    check_targets([out / clip_name(req, i) for i in range(req.num)], args.force)
    source = locate_model(args.model or default_model_ref())
    bundle = load_bundle(source.path)
    return write_clips(generate_batch(bundle, req), args, source, audio, req, bundle)
