"""MIDI files <-> notes in event steps.

Reading goes through symusic (C++, fast) and honours the file's tempo map: in seed mode
times are taken in seconds and rounded to 8 ms steps as absolute times, so quantisation
error never accumulates (each onset/offset is within half a step of the original).
Writing goes through mido so every byte a DAW sees is ours to choose: one named track
on one channel, 960 ticks per beat, a tempo and a 4/4 time signature, every note closed.
"""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np

from midigen.errors import MidiReadError
from midigen.data.events import EventParams

TICKS_PER_BEAT = 960
DRUM_CHANNEL = 9  # MIDI channel 10, counted from 0


def read_notes(path: str | Path, params: EventParams):
    """A MIDI file's notes, all tracks merged, as integer steps (on, off, pitch).

    Drum tracks are dropped when `params.drop_drums`. Raises MidiReadError for a file
    that cannot be read or parsed, is type 2, or has no (non-drum) notes.
    """
    from symusic import Score

    path = Path(path)
    try:
        with path.open("rb") as fh:
            header = fh.read(14)
    except OSError as exc:
        raise MidiReadError(f"{path.name}: unreadable ({exc.strerror or exc})") from None
    if not header:
        raise MidiReadError(f"{path.name}: not a readable MIDI file (empty: 0 bytes)")
    if header[:4] == b"MThd" and header[8:10] == b"\x00\x02":
        # Type 2 holds independent patterns; merging them as simultaneous tracks would be wrong music.
        raise MidiReadError(f"{path.name}: type-2 MIDI (independent patterns) is not supported; "
                            "export it as type 0 or 1")
    try:
        score = Score(str(path))
    except Exception as exc:  # symusic raises plain RuntimeError/ValueError on bad bytes
        raise MidiReadError(f"{path.name}: not a readable MIDI file ({_first_line(exc)})") from None
    if params.mode == "seed":
        try:
            score = score.to("second")
        except Exception as exc:
            raise MidiReadError(f"{path.name}: unusable tempo map ({_first_line(exc)})") from None
        scale = 1000.0 / params.step_ms
    else:
        scale = params.grid / max(int(score.ticks_per_quarter), 1)
    starts, ends, pitches = [], [], []
    drums_only = False
    for track in score.tracks:
        if params.drop_drums and track.is_drum:
            drums_only = True
            continue
        if track.note_num() == 0:
            continue
        arrays = track.notes.numpy()
        starts.append(arrays["time"])
        ends.append(arrays["time"] + arrays["duration"])
        pitches.append(arrays["pitch"])
    if not starts:
        reason = "drum tracks only" if drums_only else "no notes"
        raise MidiReadError(f"{path.name}: {reason}")
    start = np.concatenate(starts).astype(np.float64)
    end = np.concatenate(ends).astype(np.float64)
    pitch = np.concatenate(pitches).astype(np.int64)
    if not (np.isfinite(start).all() and np.isfinite(end).all()):
        raise MidiReadError(f"{path.name}: note times are not finite")
    on = np.rint(start * scale).astype(np.int64)
    off = np.rint(end * scale).astype(np.int64)
    return on, off, np.clip(pitch, 0, 127)


def steps_to_ticks(steps, params: EventParams, bpm: float) -> np.ndarray:
    """Event steps -> MIDI ticks at TICKS_PER_BEAT (seed steps are ms, converted at `bpm`)."""
    steps = np.asarray(steps, dtype=np.float64)
    if params.mode == "beat":
        return np.rint(steps * TICKS_PER_BEAT / params.grid).astype(np.int64)
    seconds = steps * params.step_ms / 1000.0
    return np.rint(seconds * bpm / 60.0 * TICKS_PER_BEAT).astype(np.int64)


def write_midi(
    path: str | Path,
    on_ticks,
    off_ticks,
    pitches,
    bpm: float = 120.0,
    velocity: int = 64,
    end_tick: int | None = None,
    track_name: str = "midigen",
    channel: int = 0,
) -> Path:
    """Write notes (in ticks at 960 per beat) as a type-0 standard MIDI file.

    Notes starting at or after `end_tick` are dropped and notes sounding past it are cut
    there; the end-of-track lands exactly on `end_tick`, so a clip of whole bars loops.
    Zero-length notes are dropped. At one tick, note-offs are written before note-ons.
    """
    on = np.asarray(on_ticks, dtype=np.int64)
    off = np.asarray(off_ticks, dtype=np.int64)
    pitch = np.asarray(pitches, dtype=np.int64)
    if end_tick is not None:
        keep = on < end_tick
        on, off, pitch = on[keep], np.minimum(off[keep], end_tick), pitch[keep]
    keep = off > on
    on, off, pitch = on[keep], off[keep], pitch[keep]

    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=track_name, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    times = np.concatenate([off, on])
    kinds = np.concatenate([np.zeros(off.size, np.int64), np.ones(on.size, np.int64)])
    both = np.concatenate([pitch, pitch])
    order = np.lexsort((both, kinds, times))
    now = 0
    for t, kind, p in zip(times[order].tolist(), kinds[order].tolist(), both[order].tolist()):
        msg = "note_on" if kind else "note_off"
        vel = velocity if kind else 0
        track.append(mido.Message(msg, note=p, velocity=vel, channel=channel, time=t - now))
        now = t
    last = max(now, end_tick or 0)
    track.append(mido.MetaMessage("end_of_track", time=last - now))
    midi = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    path = Path(path)
    midi.save(str(path))
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def ids_to_ticks(ids, params: EventParams, bpm: float = 120.0, end_tick: int | None = None,
                 min_ticks: int = 1):
    """Token ids -> notes in ticks (on, off, pitch), cut at `end_tick`.

    Notes still sounding at the end close there; notes starting at or after it are
    dropped, and so is any note shorter than `min_ticks` (a stub left by the cut).
    """
    from midigen.data.events import decode_ids

    on, off, pitch = decode_ids(ids, params)
    on_t, off_t = steps_to_ticks(on, params, bpm), steps_to_ticks(off, params, bpm)
    if end_tick is not None:
        keep = on_t < end_tick
        on_t, off_t, pitch = on_t[keep], np.minimum(off_t[keep], end_tick), pitch[keep]
    keep = off_t - on_t >= max(min_ticks, 1)
    return on_t[keep], off_t[keep], pitch[keep]
