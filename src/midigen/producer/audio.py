"""Audio previews of MIDI ideas: a WAV (or FLAC/OGG) to listen to beside each file.

Two renderers. A General MIDI SoundFont through FluidSynth (its Python binding, pyfluidsynth,
or the `fluidsynth` program) when one is installed and a .sf2 is found or named; otherwise a
small built-in piano in plain numpy (harmonic partials, a fast attack, a decay that is quicker
for higher notes, a release at note-off). Every output is mono 16-bit PCM, peak-normalised to
-1 dBFS, so it never clips and each idea plays at the same level.

Not a DAW instrument: the preview is for hearing an idea's notes and rhythm, not for mixing.
Producer path: numpy, mido and the standard library at import time; `fluidsynth` and
`soundfile` are imported only when asked for. No torch, Lightning, Hydra or MLflow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from midigen.data.midi_io import DRUM_CHANNEL
from midigen.errors import MidigenError, MidiReadError, not_valid_midi

DEFAULT_SAMPLE_RATE = 22050  # Hz
FORMATS = ("wav", "mp3", "flac", "ogg")
# soundfile (libsndfile 1.1+) subtype per compressed format; mp3 plays in every browser and DAW
SUBTYPES = {"mp3": "MPEG_LAYER_III", "ogg": "VORBIS", "flac": "PCM_16"}
RENDERERS = ("auto", "builtin", "fluidsynth")
PEAK_LEVEL = 10 ** (-1 / 20)  # -1 dBFS: headroom for a DAC's or a lossy codec's overshoot
RELEASE_SECONDS = 0.2  # a note fades this long after its note-off; audio runs this long past the MIDI's end

# The built-in piano. Times in seconds.
ATTACK_SECONDS = 0.005
DECAY_AT_C4 = 1.6  # time constant of middle C's fundamental (amplitude 1/e after this long held)
DECAY_OCTAVE_FACTOR = 2 ** 0.5  # each octave up decays this many times faster (a piano's treble dies sooner)
PARTIAL_DECAY = 0.6  # partial k decays (1 + PARTIAL_DECAY * (k - 1)) times as fast as the fundamental: it darkens
RELEASE_TAU = RELEASE_SECONDS / 6  # after note-off: -52 dB by the end of the release, no click
PARTIALS = 5
SILENT_AFTER_TAUS = 7.0  # a held note is ~-60 dB after this many time constants: stop computing it

SOUNDFONT_ENV = "MIDIGEN_SOUNDFONT"
SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/soundfonts", "~/.local/share/soundfonts")
# Preferred where a folder holds several: the distributions' General MIDI defaults.
PREFERRED_SOUNDFONTS = ("default-GM.sf2", "default.sf2", "FluidR3_GM.sf2", "TimGM6mb.sf2")


@dataclass(frozen=True)
class AudioResult:
    """One rendered file: where it is, which renderer made it, its length (s) and size (bytes)."""

    path: Path
    renderer: str  # "builtin" or "fluidsynth:<sf2 path>"
    seconds: float
    bytes: int


# --- notes ----------------------------------------------------------------------------------


def read_notes_seconds(midi_path: str | Path):
    """A MIDI file's non-drum notes, all tracks and channels merged, through its tempo map.

    Returns (start, end, pitch, velocity, length): start/end in seconds (float64 arrays),
    MIDI pitch and velocity (int arrays), and the file's length in seconds (its last event,
    end-of-track included). Notes still sounding at the end close there; a pitch struck again
    before its note-off pairs first-in first-out. MidiReadError for an unreadable file.

    Not `midigen.data.midi_io.read_midi` (symusic), on purpose: a preview must sound what a
    DAW would play, so it needs each note's velocity, notes never closed (symusic drops them;
    here they ring to the end) and the end-of-track (symusic does not keep it), and FluidSynth
    plays the same mido messages (`_render_binding`).
    """
    midi = _open_midi(midi_path)
    now = 0.0
    sounding: dict[tuple[int, int], list[tuple[float, int]]] = {}
    notes: list[tuple[float, float, int, int]] = []  # (start, end, pitch, velocity)
    try:
        for msg in midi:  # tracks merged; `time` = seconds since the previous message
            now += msg.time
            if msg.type not in ("note_on", "note_off") or msg.channel == DRUM_CHANNEL:
                continue
            key = (msg.channel, msg.note)
            if msg.type == "note_on" and msg.velocity > 0:
                sounding.setdefault(key, []).append((now, msg.velocity))
            elif sounding.get(key):
                on, vel = sounding[key].pop(0)
                notes.append((on, now, msg.note, vel))
    except (TypeError, ValueError, KeyError, EOFError) as exc:  # type 2 files, broken tempo maps
        raise MidiReadError(f"{Path(midi_path).name}: not a MIDI file midigen can play ({_first_line(exc)})") from None
    notes += [(on, now, note, vel) for (_, note), opened in sounding.items() for on, vel in opened]
    notes.sort(key=lambda n: n[0])
    table = np.asarray(notes, np.float64).reshape(-1, 4)  # (notes, 4)
    return table[:, 0], table[:, 1], table[:, 2].astype(np.int64), table[:, 3].astype(np.int64), now


def _open_midi(midi_path: str | Path) -> mido.MidiFile:
    """The file's raw messages (mido); MidiReadError in `midi_io.read_midi`'s words when it cannot be read."""
    path = Path(midi_path)
    if not path.is_file():
        raise MidiReadError(f"{path}: no such MIDI file")
    try:
        return mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise MidiReadError(not_valid_midi(path.name, exc)) from None


# --- the built-in piano ---------------------------------------------------------------------


def render_notes(start, end, pitch, velocity=None, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 duration: float | None = None) -> np.ndarray:
    """Notes (seconds, MIDI pitch, velocity 1-127; default 100) -> mono float32 samples.

    The result lasts `duration` seconds (default: the last note-off plus RELEASE_SECONDS)
    and is peak-normalised to PEAK_LEVEL (all zeros if nothing sounds). Velocity sets both
    loudness and brightness. Zero-length notes are not heard.

    Vectorised over every sample of every note at once: the notes' samples lie end to end in
    flat float32 arrays (per-note values spread with `np.repeat`), and the partials are summed
    by the recurrence sin((k+1)x) = 2 cos(x) sin(kx) - sin((k-1)x), so one sin and one cos per
    sample make all of them. Only the final mix into the timeline loops, once per note.
    """
    notes, n_out = _piano_notes(start, end, pitch, velocity, sample_rate, duration)
    out = np.zeros(n_out, np.float32)
    if notes is None:
        return out
    phase, envelope, step = _phase_and_envelope(notes, sample_rate)  # (S,) each, S = notes.lengths.sum()
    tone = _sum_partials(phase, step, notes)  # (S,); phase's buffer is reused there
    tone *= envelope
    for begin, offset, length in zip(notes.first.tolist(), notes.offsets.tolist(), notes.lengths.tolist()):
        out[begin:begin + length] += tone[offset:offset + length]  # (n_out,)
    return _normalise(out)


@dataclass(frozen=True)
class _PianoNotes:
    """The notes that sound, one entry per note in each array: what the piano needs of each."""

    freq: np.ndarray  # Hz, float64
    audible: np.ndarray  # how many partials lie below Nyquist (with margin), int64, >= 1
    decay_rate: np.ndarray  # 1/s: the fundamental's amplitude falls by 1/e in 1/decay_rate seconds
    gate: np.ndarray  # seconds held
    loudness: np.ndarray  # amplitude, from velocity
    rolloff: np.ndarray  # partial k sounds at rolloff**(k-1) of the fundamental
    first: np.ndarray  # the note's first sample in the output, int64
    lengths: np.ndarray  # samples computed: its ring and release, cut at the output's end, int64
    offsets: np.ndarray  # where its samples start in the flat (S,) arrays, int64


def _piano_notes(start, end, pitch, velocity, sample_rate: int,
                 duration: float | None) -> tuple[_PianoNotes | None, int]:
    """`render_notes`' arguments -> the notes that sound (None if none does) and the output's length in samples.

    Left out: zero-length notes, notes before 0 s or starting after `duration`, and notes whose
    fundamental lies above Nyquist (it would alias). Velocity is clipped to 1-127.
    """
    start = np.asarray(start, np.float64).ravel()
    end = np.asarray(end, np.float64).ravel()
    pitch = np.asarray(pitch, np.float64).ravel()
    velocity = np.full(start.shape, 100.0) if velocity is None else np.asarray(velocity, np.float64).ravel()
    if duration is None:
        duration = (float(end.max()) if end.size else 0.0) + RELEASE_SECONDS
    n_out = max(1, int(np.ceil(duration * sample_rate - 1e-6)))  # float noise in a length adds no sample
    keep = (end > start) & (start >= 0) & (np.rint(start * sample_rate) < n_out)
    start, end, pitch, velocity = start[keep], end[keep], pitch[keep], np.clip(velocity[keep], 1, 127)
    if start.size == 0:
        return None, n_out

    freq = 440.0 * 2.0 ** ((pitch - 69) / 12)  # Hz
    audible = np.floor(0.45 * sample_rate / freq).astype(np.int64)  # partials below Nyquist, with margin
    if not audible.all():  # a fundamental above Nyquist would alias: leave that note out
        keep = audible > 0
        start, end, pitch, velocity, freq, audible = (a[keep] for a in (start, end, pitch, velocity, freq, audible))
        if start.size == 0:
            return None, n_out
    decay_rate = DECAY_OCTAVE_FACTOR ** ((pitch - 60) / 12) / DECAY_AT_C4  # 1/s
    gate = end - start  # seconds held
    first = np.rint(start * sample_rate).astype(np.int64)
    ring = np.minimum(gate, SILENT_AFTER_TAUS / decay_rate) + RELEASE_SECONDS
    lengths = np.minimum(np.ceil(ring * sample_rate).astype(np.int64), n_out - first)
    loudness = (velocity / 127) ** 1.7
    rolloff = 0.25 + 0.35 * velocity / 127  # a harder strike is brighter
    return _PianoNotes(freq, audible, decay_rate, gate, loudness, rolloff, first, lengths,
                       offsets=np.cumsum(lengths) - lengths), n_out


def _spread(per_note: np.ndarray, notes: _PianoNotes, dtype=np.float32) -> np.ndarray:
    """A per-note value repeated over each of that note's samples: (notes,) -> (S,)."""
    return np.repeat(per_note.astype(dtype), notes.lengths)  # (S,)


def _phase_and_envelope(notes: _PianoNotes, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample of every note, float32 (S,) each: the fundamental's phase in radians [0, 2 pi),
    the amplitude envelope (attack, decay, release after note-off, loudness), and `step`, the
    ratio of partial k+1 to partial k (rolloff, and the higher partials' faster decay).
    """
    local = np.arange(int(notes.lengths.sum()), dtype=np.int32)  # (S,) sample index within its note
    local -= np.repeat(notes.offsets.astype(np.int32), notes.lengths)
    t = local.astype(np.float32)
    # Phase in cycles stays below ~3000 (high notes decay sooner), within float32's precision.
    phase = t * _spread(notes.freq / sample_rate, notes)
    phase -= np.floor(phase)
    phase *= np.float32(2 * np.pi)  # (S,) radians in [0, 2 pi)
    t /= np.float32(sample_rate)  # (S,) seconds since the onset
    decay = t * _spread(notes.decay_rate, notes)  # (S,) time constants elapsed
    held_past = t - _spread(notes.gate, notes)
    np.maximum(held_past, 0.0, out=held_past)  # seconds since note-off, 0 while held
    held_past /= np.float32(RELEASE_TAU)
    held_past += decay
    envelope = np.exp(-held_past)
    t /= np.float32(ATTACK_SECONDS)
    np.minimum(t, 1.0, out=t)
    envelope *= t
    envelope *= _spread(notes.loudness, notes)
    decay *= np.float32(-PARTIAL_DECAY)
    step = np.exp(decay)  # (S,) partial k+1 / partial k
    step *= _spread(notes.rolloff, notes)
    return phase, envelope, step


def _sum_partials(phase: np.ndarray, step: np.ndarray, notes: _PianoNotes) -> np.ndarray:
    """sin(x) + step sin(2x) + step**2 sin(3x) + ... up to PARTIALS, each note only up to its
    `audible` partial: (S,) float32, before the envelope. Overwrites `phase` (its buffer is reused).
    """
    sin_k = np.sin(phase)  # sin(k x), from k = 1
    twice_cos = np.cos(phase)
    twice_cos *= 2
    sin_before = phase  # reused: sin((k-1) x), from k = 1
    sin_before[:] = 0.0
    tone, weight, scratch = sin_k.copy(), step.copy(), np.empty_like(sin_k)
    audible = notes.audible
    top = _spread(audible, notes, np.int16) if audible.min() < PARTIALS else None
    for k in range(2, PARTIALS + 1):
        np.multiply(twice_cos, sin_k, out=scratch)
        np.subtract(scratch, sin_before, out=sin_before)  # now sin(k x)
        sin_k, sin_before = sin_before, sin_k
        if k > 2:
            weight *= step  # step**(k-1)
        np.multiply(sin_k, weight, out=scratch)
        if top is not None and audible.min() < k:
            scratch *= top >= k
        tone += scratch
    return tone


def _normalise(samples: np.ndarray) -> np.ndarray:
    """Scale to a PEAK_LEVEL peak; float32."""
    samples = np.asarray(samples, np.float32)
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    return samples * np.float32(PEAK_LEVEL / peak) if peak > 0 else samples


# --- renderers ------------------------------------------------------------------------------


def find_soundfont() -> Path | None:
    """The first General MIDI .sf2 in SOUNDFONT_DIRS (preferred names first), or None."""
    for folder in SOUNDFONT_DIRS:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        def rank(path: Path) -> tuple[int, str]:
            name = path.name
            return (PREFERRED_SOUNDFONTS.index(name) if name in PREFERRED_SOUNDFONTS else len(PREFERRED_SOUNDFONTS),
                    name)

        found = sorted((p for p in folder.glob("*.sf2") if p.is_file()), key=rank)
        if found:
            return found[0].resolve()
    return None


def _fluidsynth() -> str | None:
    """How FluidSynth can be driven here: "binding" (pyfluidsynth), "program", or None."""
    try:
        import fluidsynth  # optional; importing it loads libfluidsynth
    except Exception:  # noqa: BLE001 - a missing or broken libfluidsynth raises OSError, not ImportError
        fluidsynth = None
    if hasattr(fluidsynth, "Synth"):  # not some other module of that name
        return "binding"
    return "program" if shutil.which("fluidsynth") else None


def available_renderer(soundfont: str | Path | None = None, renderer: str = "auto") -> str:
    """The renderer `render_midi_file` will use: "fluidsynth:<sf2 path>" or "builtin".

    `renderer` "auto" takes FluidSynth with a SoundFont when both are here (the one named, else
    $MIDIGEN_SOUNDFONT, else the first found in SOUNDFONT_DIRS) and the built-in piano
    otherwise; "builtin" and "fluidsynth" insist. A SoundFont that is named but missing, or
    named without FluidSynth, is a MidigenError that says what to do.
    """
    if renderer not in RENDERERS:
        raise MidigenError(f"audio renderer {renderer!r}: use one of {', '.join(RENDERERS)}")
    named, where = (soundfont, "--soundfont") if soundfont else (os.environ.get(SOUNDFONT_ENV), f"${SOUNDFONT_ENV}")
    if renderer == "builtin":
        if soundfont:
            raise MidigenError(f"--soundfont {soundfont} needs FluidSynth: leave it out for the built-in piano")
        return "builtin"
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise MidigenError(f"{where} {named}: no such SoundFont; name a General MIDI .sf2 file, or leave it "
                               "out for the built-in piano")
        if _fluidsynth() is None:
            raise MidigenError(f"{where} {named} needs FluidSynth, which is not installed: install it "
                               "(apt install fluidsynth, or pip install pyfluidsynth) or leave the SoundFont out "
                               "for the built-in piano")
        return f"fluidsynth:{path.resolve()}"
    found = find_soundfont()
    if renderer == "fluidsynth":
        if _fluidsynth() is None:
            raise MidigenError("FluidSynth is not installed: install it (apt install fluidsynth, or pip install "
                               "pyfluidsynth) or use the built-in piano")
        if found is None:
            raise MidigenError(f"no SoundFont found in {', '.join(SOUNDFONT_DIRS)}: name one with --soundfont "
                               f"(or ${SOUNDFONT_ENV}), e.g. apt install fluid-soundfont-gm")
    if found is not None and _fluidsynth() is not None:
        return f"fluidsynth:{found}"
    return "builtin"


def check_format(fmt: str) -> str:
    """A supported output format ("wav", "mp3", "flac", "ogg"), or a one-line MidigenError."""
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in FORMATS:
        raise MidigenError(f"audio format {fmt!r}: use wav, mp3, flac or ogg")
    if fmt != "wav":
        try:
            import soundfile
        except Exception:  # noqa: BLE001 - a missing libsndfile raises OSError
            raise MidigenError(f"audio format {fmt!r} needs the soundfile package: pip install soundfile, "
                               "or use wav") from None
        if fmt.upper() not in soundfile.available_formats():
            raise MidigenError(f"audio format {fmt!r}: this libsndfile ({soundfile.__libsndfile_version__}) cannot "
                               "write it; upgrade soundfile, or use wav")
    return fmt


def render_midi_file(midi_path: str | Path, out_path: str | Path | None = None, renderer: str = "auto",
                     soundfont: str | Path | None = None, fmt: str = "wav",
                     sample_rate: int = DEFAULT_SAMPLE_RATE) -> AudioResult:
    """Render a MIDI file to audio at `out_path` (default: beside it, same stem, `fmt` suffix).

    `renderer`: "auto", "builtin", "fluidsynth" (see `available_renderer`) or a string that
    function returned ("fluidsynth:<sf2 path>"), so a batch resolves it once. The audio lasts
    the MIDI's length plus RELEASE_SECONDS. Overwrites `out_path`.
    """
    fmt = check_format(fmt)
    if not renderer.startswith("fluidsynth:"):
        renderer = available_renderer(soundfont, renderer)
    out_path = Path(out_path) if out_path is not None else Path(midi_path).with_suffix(f".{fmt}")
    if renderer == "builtin":
        start, end, pitch, velocity, length = read_notes_seconds(midi_path)
        samples = render_notes(start, end, pitch, velocity, sample_rate, duration=length + RELEASE_SECONDS)
    else:
        samples = _render_fluidsynth(midi_path, Path(renderer.split(":", 1)[1]), sample_rate)
    size = write_audio(samples, out_path, sample_rate, fmt)
    return AudioResult(out_path, renderer, samples.size / sample_rate, size)


def write_audio(samples: np.ndarray, path: str | Path, sample_rate: int, fmt: str = "wav") -> int:
    """Write mono samples in [-1, 1] as 16-bit PCM (`wav` through the stdlib); returns bytes written."""
    pcm = np.rint(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "wav":
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(int(sample_rate))
            out.writeframes(pcm.tobytes())
    else:
        import soundfile  # checked by check_format

        # A preview, not a master: mp3 at compression 0.8 is ~16 kbit/s for this mono piano
        # (32 KB for 8 bars at 120 bpm), a fifth of the same clip at libsndfile's default.
        lossy = {"compression_level": 0.8} if fmt in ("mp3", "ogg") else {}
        soundfile.write(str(path), pcm, int(sample_rate), format=fmt.upper(), subtype=SUBTYPES[fmt], **lossy)
    return path.stat().st_size


def _render_fluidsynth(midi_path: str | Path, sf2: Path, sample_rate: int) -> np.ndarray:
    """A MIDI file through FluidSynth and a SoundFont -> mono float32, peak-normalised.

    Cut to the MIDI's length plus RELEASE_SECONDS, like the built-in piano, with the sound
    still ringing (reverb, long releases) faded out over that tail.
    """
    how = _fluidsynth()
    if how == "binding":
        stereo = _render_binding(midi_path, sf2, sample_rate)
    elif how == "program":
        stereo = _render_program(midi_path, sf2, sample_rate)
    else:
        raise MidigenError("FluidSynth is not installed: install it or use the built-in piano")
    mono = stereo.reshape(-1, 2).astype(np.float64).mean(axis=1) / 32768.0
    length = _open_midi(midi_path).length  # seconds
    size = int(np.ceil((length + RELEASE_SECONDS) * sample_rate - 1e-6))
    mono = np.pad(mono[:size], (0, max(0, size - mono.size)))
    tail = mono[int(length * sample_rate):]  # a view: faded in place
    tail *= 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, tail.size))
    return _normalise(mono)


def _render_binding(midi_path: str | Path, sf2: Path, sample_rate: int) -> np.ndarray:
    """Play the file's messages into pyfluidsynth; interleaved stereo int16."""
    import fluidsynth

    midi = _open_midi(midi_path)
    synth = fluidsynth.Synth(samplerate=float(sample_rate))
    try:
        font = synth.sfload(str(sf2))
        if font == -1:
            raise MidigenError(f"{sf2}: FluidSynth cannot load this SoundFont; name another .sf2 file")
        for channel in range(16):
            synth.program_select(channel, font, 128 if channel == DRUM_CHANNEL else 0, 0)
        chunks, written, now = [], 0, 0.0
        for msg in midi:
            now += msg.time
            due = round(now * sample_rate)
            if due > written:
                chunks.append(np.asarray(synth.get_samples(due - written), np.int16))
                written = due
            if msg.type == "note_on":
                synth.noteon(msg.channel, msg.note, msg.velocity)
            elif msg.type == "note_off":
                synth.noteoff(msg.channel, msg.note)
            elif msg.type == "program_change":
                synth.program_change(msg.channel, msg.program)
            elif msg.type == "control_change":
                synth.cc(msg.channel, msg.control, msg.value)
            elif msg.type == "pitchwheel":
                synth.pitch_bend(msg.channel, msg.pitch)
        chunks.append(np.asarray(synth.get_samples(round(RELEASE_SECONDS * sample_rate)), np.int16))
    finally:
        synth.delete()
    return np.concatenate(chunks)


def _render_program(midi_path: str | Path, sf2: Path, sample_rate: int) -> np.ndarray:
    """The `fluidsynth` program's fast file renderer; interleaved stereo int16.

    Raw s16 rather than WAV: a FluidSynth built without libsndfile can only write raw.
    """
    _open_midi(midi_path)  # a bad file is the user's one-line error, not FluidSynth's
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "render.raw"
        command = [shutil.which("fluidsynth") or "fluidsynth", "-n", "-i", "-r", str(int(sample_rate)),
                   "-T", "raw", "-O", "s16", "-F", str(raw), str(sf2), str(midi_path)]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MidigenError(f"fluidsynth could not render {midi_path}: {_first_line(exc)}") from None
        if proc.returncode != 0 or not raw.is_file():
            raise MidigenError(f"fluidsynth could not render {midi_path} with {sf2}: "
                               f"{_first_line(proc.stderr or proc.stdout or 'no output')}")
        data = np.frombuffer(raw.read_bytes(), dtype="=i2")
    return data[: data.size - data.size % 2]


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
