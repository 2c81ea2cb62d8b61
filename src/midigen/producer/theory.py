"""Keys and scales in a producer's words: 'F# minor' -> the pitch classes a clip may use."""

from __future__ import annotations

import re

from midigen.errors import MidigenError

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
MODE_ALIASES = {"maj": "major", "min": "minor", "m": "minor", "aeolian": "minor", "ionian": "major"}


def parse_key(key: str | None, scale: str | None) -> list[int] | None:
    """'F# minor' (or key='F#', scale='minor') -> allowed pitch classes (0 = C); None = no restriction."""
    if key is None and scale is None:
        return None
    text = (key or "C").strip()
    m = re.fullmatch(r"([A-Ga-g])([#b♯♭]?)\s*(.*)", text)
    if not m:
        raise MidigenError(f"--key {key!r} is not a key: use a note name and mode, e.g. 'F# minor' or 'Bb major'")
    tonic = (NOTE_NAMES[m.group(1).upper()] + {"#": 1, "♯": 1, "b": -1, "♭": -1}.get(m.group(2), 0)) % 12
    mode = (scale or m.group(3) or "major").strip().lower().replace(" ", "_")
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in SCALES:
        raise MidigenError(f"unknown scale {mode!r}: use one of {', '.join(SCALES)}")
    return [(tonic + step) % 12 for step in SCALES[mode]]
