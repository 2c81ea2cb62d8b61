"""Piano-roll pictures of MIDI ideas, drawn the way a DAW shows them.

Time runs left to right in beats, with a line at every 4/4 bar (numbered from 1) and a
fainter one at every beat; pitch runs bottom to top, one row per semitone, black-key rows
shaded and every C labelled (60 = C4). A 1000 x 400 pixel PNG, typically 20-100 KB.

Drawn with matplotlib's Agg canvas on a private Figure, so it works without a display and
never changes the plotting backend of a program that imports it. Producer path: no torch,
Lightning, Hydra or MLflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from midigen.data.midi_io import BEATS_PER_BAR, meter_beats

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
BLACK_KEYS = {1, 3, 6, 8, 10}  # pitch classes
MIN_ROWS = 24  # at least two octaves shown, so a short idea is not blown up
SIZE_INCHES, DPI = (10, 4), 100

NOTE_COLOUR, NOTE_EDGE = "#3a7bd5", "#1b3f73"
BLACK_ROW, BAR_LINE, BEAT_LINE = "#ececec", "#555555", "#d0d0d0"


def pianoroll_from_notes(on_ticks, off_ticks, pitches, ticks_per_beat: float, png_path: str | Path,
                         title: str | None = None, end_tick: int | None = None,
                         meter: tuple[int, int] = (BEATS_PER_BAR, 4)) -> Path:
    """Draw notes (ticks at `ticks_per_beat`, MIDI pitches) as a piano roll PNG at `png_path`.

    The picture runs from tick 0 to `end_tick` (default: the last note-off), rounded up to
    a whole bar of `meter` (numerator, denominator; a bar of whole beats is drawn with its beat
    lines). Notes of zero length are drawn as thin slivers. Returns the PNG's path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    on = np.asarray(on_ticks, dtype=np.float64).ravel() / ticks_per_beat   # beats
    off = np.asarray(off_ticks, dtype=np.float64).ravel() / ticks_per_beat  # beats
    pitch = np.asarray(pitches, dtype=np.int64).ravel()
    end = max(float(end_tick or 0) / ticks_per_beat, float(off.max()) if off.size else 0.0, 1e-9)
    bar = meter_beats(f"{meter[0]}/{meter[1]}") if meter[0] > 0 and meter[1] > 0 else BEATS_PER_BAR  # in beats
    bars = max(1, int(np.ceil(end / bar - 1e-9)))
    span = bars * bar
    low, high = _pitch_rows(pitch)

    figure = Figure(figsize=SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for row in range(low, high + 1):
        if row % 12 in BLACK_KEYS:
            ax.axhspan(row - 0.5, row + 0.5, color=BLACK_ROW, lw=0, zorder=0)
    if bars <= 32:  # beat lines would grey out a long piece
        beats = [b for b in range(int(span) + 1) if b % bar]
        ax.vlines(beats, low - 0.5, high + 0.5, colors=BEAT_LINE, lw=0.5, zorder=1)
    ax.vlines(np.arange(bars + 1) * bar, low - 0.5, high + 0.5, colors=BAR_LINE, lw=0.8, zorder=1)

    length = np.maximum(off - on, span / 2000)  # a zero-length note stays visible
    boxes = np.stack([  # (notes, 4 corners, xy)
        np.stack([on, pitch - 0.4], axis=1), np.stack([on + length, pitch - 0.4], axis=1),
        np.stack([on + length, pitch + 0.4], axis=1), np.stack([on, pitch + 0.4], axis=1),
    ], axis=1)
    ax.add_collection(PolyCollection(boxes, facecolors=NOTE_COLOUR, edgecolors=NOTE_EDGE, linewidths=0.4, zorder=2))

    ax.set_xlim(0, span)
    ax.set_ylim(low - 0.5, high + 0.5)
    step = max(1, int(np.ceil(bars / 32)))  # at most ~32 bar numbers
    ax.set_xticks(np.arange(0, bars, step) * bar)
    ax.set_xticklabels([str(n + 1) for n in range(0, bars, step)])
    ax.set_xlabel(f"bar ({meter[0]}/{meter[1]})")
    cs = [p for p in range(low, high + 1) if p % 12 == 0]
    ax.set_yticks(cs)
    ax.set_yticklabels([note_name(p) for p in cs])
    ax.tick_params(length=0, labelsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=DPI)
    return png_path


def save_pianoroll(midi_path: str | Path, png_path: str | Path, title: str | None = None) -> Path:
    """Draw a MIDI file's non-drum notes (all tracks merged) as a piano roll PNG.

    The picture runs to the file's end-of-track, in bars of its first time signature (4/4
    without one). `title` defaults to the file name.
    MidiReadError for a file that cannot be read. Returns the PNG's path.
    """
    from midigen.data.midi_io import read_midi
    from midigen.evaluation.metrics import raw_file_facts

    notes = read_midi(midi_path)
    end_tick = raw_file_facts(midi_path)["end_tick"]
    title = Path(midi_path).name if title is None else title
    first = min(notes.time_signatures, key=lambda s: s[0], default=None)  # bars of the opening meter
    meter = (int(first[1]), int(first[2])) if first and first[1] > 0 and first[2] > 0 else (BEATS_PER_BAR, 4)
    return pianoroll_from_notes(*notes.as_tuple(), png_path, title=title, end_tick=end_tick, meter=meter)


def note_name(pitch: int) -> str:
    """A MIDI pitch's name with its octave, 60 = C4."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def _pitch_rows(pitch: np.ndarray) -> tuple[int, int]:
    """The lowest and highest pitch row shown: the notes plus a semitone, at least MIN_ROWS."""
    if pitch.size == 0:
        return 60 - MIN_ROWS // 2, 60 + MIN_ROWS // 2 - 1
    low, high = int(pitch.min()) - 1, int(pitch.max()) + 1
    missing = MIN_ROWS - (high - low + 1)
    if missing > 0:
        low, high = low - missing // 2, high + missing - missing // 2
    return max(low, 0), min(high, 127)
