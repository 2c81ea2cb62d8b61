"""MIDI files <-> notes: the one reader of a file's notes, the writer, and the constants of MIDI files.

Reading goes through symusic (C++, fast): `read_midi` owns opening a file, its error
messages and merging its tracks; every caller that wants a file's notes goes through it
(`read_notes` for training, `midigen.evaluation` for metrics, style and originality).
`read_notes` honours the file's tempo map: in seed mode times are taken in seconds and
rounded to 8 ms steps as absolute times, so quantisation error never accumulates (each
onset/offset is within half a step of the original).
Writing goes through mido so every byte a DAW sees is ours to choose: one named track
on one channel, 960 ticks per beat, a tempo and a 4/4 time signature, every note closed.

Not for: the raw messages (hanging note-ons, end-of-track, velocities through the tempo
map), which only mido shows: `midigen.evaluation.metrics.raw_file_facts` and
`midigen.producer.audio.read_notes_seconds` read those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from midigen.errors import MidiReadError, first_line, not_valid_midi
from midigen.data.events import EventParams

TICKS_PER_BEAT = 960  # of every file midigen writes
BEATS_PER_BAR = 4  # midigen writes 4/4; a bar is 4 quarter-note beats
DRUM_CHANNEL = 9  # MIDI channel 10, counted from 0
MIDI_SUFFIXES = (".mid", ".midi", ".smf")  # lower case; compare with `path.suffix.lower()`


def meter_beats(meter: str) -> float:
    """Quarter-note beats in a bar of a time signature written "N/D" (4/4: 4; 3/4 and 6/8: 3;
    9/8: 4.5), as training counts a bar."""
    numerator, denominator = meter.split("/")
    return int(numerator) * 4 / int(denominator)


@dataclass(frozen=True)
class MidiNotes:
    """A MIDI file's notes as `read_midi` gives them: all kept tracks merged, in track order.

    `on`, `off`: note starts and ends, int64 ticks (float64 seconds when read with
    `seconds=True`); `pitch`: int64 MIDI note numbers as stored (not clipped);
    `ticks_per_beat`: the file's ticks per quarter note (at least 1);
    `time_signatures`: [(time, numerator, denominator)], time in the unit of `on`;
    `drum_notes`: notes of drum tracks left out (0 when drums are kept);
    `end`: the time of the file's last event symusic keeps (any track, drums included),
    in the unit of `on` (not the end-of-track: `metrics.raw_file_facts` reads that).
    """

    on: np.ndarray  # (n,)
    off: np.ndarray  # (n,)
    pitch: np.ndarray  # (n,)
    ticks_per_beat: int
    time_signatures: list[tuple]
    drum_notes: int
    end: float

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(on, off, pitch, ticks_per_beat): the arguments `metrics.note_metrics`,
        `style.note_features` and `style.excerpts` take."""
        return self.on, self.off, self.pitch, self.ticks_per_beat


def read_midi(path: str | Path, seconds: bool = False, drums: bool = False, need_notes: bool = False) -> MidiNotes:
    """A MIDI file's notes (see `MidiNotes`), read with symusic; drum tracks left out unless `drums`.

    `seconds`: times in seconds through the file's tempo map instead of ticks. A note
    never closed by a note-off is not a note here (`metrics.raw_file_facts` counts those).
    Raises MidiReadError, one line naming the file, for a missing, unreadable, empty,
    unparseable or type-2 file, an unusable tempo map (`seconds`), and, with `need_notes`,
    a file without (non-drum) notes (see `no_notes_reason`).
    """
    from symusic import Score

    path = Path(path)
    try:
        with path.open("rb") as fh:
            header = fh.read(14)
    except FileNotFoundError:
        raise MidiReadError(f"{path}: no such MIDI file") from None
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
        raise MidiReadError(not_valid_midi(path.name, exc)) from None
    ticks_per_beat = max(int(score.ticks_per_quarter), 1)
    if seconds:
        try:
            score = score.to("second")
        except Exception as exc:
            raise MidiReadError(f"{path.name}: unusable tempo map ({first_line(exc)[:200] or type(exc).__name__})") \
                from None
    on, off, pitch = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    drum_notes = 0
    for track in score.tracks:
        if track.is_drum and not drums:
            drum_notes += track.note_num()
            continue
        if track.note_num() == 0:
            continue
        notes = track.notes.numpy()
        if seconds:  # float32 in symusic; the end is summed in float32, as `read_notes` always did
            on.append(notes["time"].astype(np.float64))
            off.append((notes["time"] + notes["duration"]).astype(np.float64))
        else:  # int32 in symusic: widen before adding
            on.append(notes["time"].astype(np.int64))
            off.append(notes["time"].astype(np.int64) + notes["duration"].astype(np.int64))
        pitch.append(notes["pitch"].astype(np.int64))  # int8 in symusic: widen before any arithmetic
    on, off, pitch = np.concatenate(on), np.concatenate(off), np.concatenate(pitch)
    if seconds and not (np.isfinite(on).all() and np.isfinite(off).all()):
        raise MidiReadError(f"{path.name}: note times are not finite")
    if need_notes and on.size == 0:
        raise MidiReadError(f"{path.name}: {no_notes_reason(drum_notes)}")
    found = score.time_signatures.numpy()
    signatures = list(zip(found["time"].tolist(), found["numerator"].tolist(), found["denominator"].tolist()))
    return MidiNotes(on, off, pitch, ticks_per_beat, signatures, drum_notes, score.end())


def no_notes_reason(drum_notes: int) -> str:
    """Why a file has no notes to use, in words: drums only, or no notes at all."""
    return "drum tracks only (no pitched notes)" if drum_notes else "no notes (empty tracks)"


def read_notes(path: str | Path, params: EventParams):
    """A MIDI file's notes, all tracks merged, as integer steps (on, off, pitch), pitches in 0..127.

    Read by `read_midi`: in seed mode through the tempo map (8 ms steps), in beat mode in
    beats (`params.grid` steps per beat). Drum tracks are dropped when `params.drop_drums`.
    Raises MidiReadError for a file that `read_midi` refuses or that has no (non-drum) notes.
    """
    seed = params.mode == "seed"
    notes = read_midi(path, seconds=seed, drums=not params.drop_drums, need_notes=True)
    scale = 1000.0 / params.step_ms if seed else params.grid / notes.ticks_per_beat
    on = np.rint(notes.on.astype(np.float64) * scale).astype(np.int64)
    off = np.rint(notes.off.astype(np.float64) * scale).astype(np.int64)
    return on, off, np.clip(notes.pitch, 0, 127)


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
    meter: tuple[int, int] = (BEATS_PER_BAR, 4),
) -> Path:
    """Write notes (in ticks at TICKS_PER_BEAT) as a type-0 standard MIDI file.

    Notes starting at or after `end_tick` are dropped and notes sounding past it are cut
    there; the end-of-track lands exactly on `end_tick`, so a clip of whole bars loops.
    Zero-length notes are dropped. At one tick, note-offs are written before note-ons.
    `meter`: the time signature written at tick 0, (numerator, denominator).
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
    track.append(mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1], time=0))
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
