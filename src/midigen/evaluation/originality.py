"""Is a generated melody a training song played back? An n-gram index of melody passages.

A file's melody line is its skyline: all non-drum tracks merged, the highest pitch at each
distinct onset (onsets less than 1/16 beat apart count as one, so a rolled chord is one
onset). Each melody note after the first is written as two small integers:

    pitch step    semitones from the previous melody note (so a transposed copy matches)
    rhythm class  the ratio of this onset interval to the previous one, in 5 classes
                  (< 0.4, 0.4-0.8, 0.8-1.25, 1.25-2.5, >= 2.5)

Onset ratios make the representation blind to ticks per beat, tempo and any uniform
stretch of time (a melody rendered at another bpm still matches); durations and velocities
are ignored. The class edges sit between the common musical ratios (1, 4:3, 3:2, 2, 3, 4
and their inverses), so exact rhythms never fall on an edge and ±15% timing jitter stays
in its class.

A passage is n consecutive melody notes (default 8): n-1 pitch steps and n-2 rhythm
classes, hashed to a uint64 (splitmix64-mixed polynomial hash, the same in every process).
`OriginalityIndex` holds the sorted passage hashes of a training corpus, with the file each
came from; checking a file looks its passages up with `np.searchsorted`.

Known limit: generic passages (a scale run in even notes, one repeated pitch) can occur in
any corpus, so a copy ratio of a few percent is normal; `longest_run` tells a quotation
from a coincidence.

This module is on the producer path: numpy and symusic only, no torch/Lightning/Hydra.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from midigen.data.midi_io import MIDI_SUFFIXES, read_midi
from midigen.errors import MidigenError, MidiReadError

INDEX_FILE = "originality.npz"
# Bump when the melody representation or the hash changes: old indexes then fail to load.
VERSION = 1
DEFAULT_N = 8

ONSET_TOLERANCE_BEATS = 1 / 16
RHYTHM_EDGES = np.array([0.4, 0.8, 1.25, 2.5])  # onset-interval ratio -> class 0..4

# The default --max-copy: this quantile of held-out real files' copy ratios (3 in 4 real pieces the
# model never saw copy less), and never below the floor. Real held-out music is bimodal: most
# pieces share a few idioms, some (a hymn tune harmonised twice, a variant of a reel) are copies.
REFERENCE_QUANTILE = 0.75
MIN_MAX_COPY = 0.2

_MISSING = "{model}: no originality index ({file}); retrain or pull a newer model"


# --- melody representation ---------------------------------------------------------------


def skyline(on_ticks, pitches, ticks_per_beat: float) -> tuple[np.ndarray, np.ndarray]:
    """The melody line of some notes: (onsets in ticks, pitches), one note per distinct onset.

    Notes may come in any order and from any number of voices; the highest pitch starting
    at each onset wins. Onsets closer than 1/16 beat to the previous one join its onset.
    """
    on = np.asarray(on_ticks, dtype=np.int64).ravel()
    pitch = np.asarray(pitches, dtype=np.int64).ravel()
    if on.size != pitch.size:
        raise ValueError(f"{on.size} onsets but {pitch.size} pitches")
    if on.size == 0:
        return on, pitch
    order = np.argsort(on, kind="stable")
    on, pitch = on[order], pitch[order]
    tolerance = ONSET_TOLERANCE_BEATS * float(ticks_per_beat)
    first = np.flatnonzero(np.concatenate([[True], np.diff(on) >= tolerance]))
    return on[first], np.maximum.reduceat(pitch, first)


def melody_intervals(on_ticks, pitches, ticks_per_beat: float) -> tuple[np.ndarray, np.ndarray]:
    """The melody as (pitch steps, rhythm classes), of lengths N-1 and N-2 for N melody notes.

    `steps[i]` is pitch[i+1] - pitch[i] in semitones; `rhythm[i]` classes the ratio of
    the onset interval (i+1 -> i+2) to (i -> i+1) with RHYTHM_EDGES.
    """
    on, pitch = skyline(on_ticks, pitches, ticks_per_beat)
    steps = np.diff(pitch)
    ioi = np.diff(on).astype(np.float64)  # > 0: skyline onsets are distinct
    rhythm = np.searchsorted(RHYTHM_EDGES, ioi[1:] / ioi[:-1], side="right")
    return steps, rhythm.astype(np.int64)


def passage_hashes(on_ticks, pitches, ticks_per_beat: float, n: int = DEFAULT_N) -> np.ndarray:
    """uint64 hashes of every n-note melody passage, in order (N-n+1 of them; none if N < n)."""
    _check_n(n)
    steps, rhythm = melody_intervals(on_ticks, pitches, ticks_per_beat)
    count = steps.size + 1 - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view
    symbols = np.concatenate([
        windows(np.clip(steps, -127, 127) + 128, n - 1),  # (P, n-1) in 1..255
        windows(rhythm, n - 2),                            # (P, n-2) in 0..4
    ], axis=1).astype(np.uint64)
    h = np.full(count, 0x9E3779B97F4A7C15, dtype=np.uint64)
    for column in symbols.T:  # uint64 arithmetic wraps mod 2**64 (no warning for arrays)
        h = _mix64(h * np.uint64(0x100000001B3) + column + np.uint64(1))
    return h


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _check_n(n: int) -> None:
    if int(n) != n or n < 3:
        raise MidigenError(f"originality passage length n={n}: use a whole number of notes >= 3 (default 8)")


# --- reading files ------------------------------------------------------------------------


def read_onsets(path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """A MIDI file's note onsets and pitches, non-drum tracks merged: (on_ticks, pitches, ticks_per_beat).

    Read by `midigen.data.midi_io.read_midi`. A file with no non-drum notes gives empty
    arrays. Raises MidiReadError for a file `read_midi` refuses (missing, unparseable, type 2).
    """
    notes = read_midi(path)
    return notes.on, notes.pitch, notes.ticks_per_beat


# --- the index ----------------------------------------------------------------------------


class OriginalityIndex:
    """Sorted n-gram passage hashes of a set of source (training) files.

    Build with `add` (note arrays), `add_file`, `build` or `from_files`; check with
    `check_notes` / `check_file`; persist with `save` / `load` (an .npz of hashes, not files).
    """

    def __init__(self, n: int = DEFAULT_N):
        _check_n(n)
        self.n = int(n)
        self.names: list[str] = []
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._hashes = np.zeros(0, np.uint64)  # sorted
        self._sources = np.zeros(0, np.int32)  # index into names, per hash
        self._starts = np.zeros(0, np.int32)   # melody note where the passage starts in its source
        # What held-out real music scores against this index (`calibrate`); None if never measured.
        self.reference: dict | None = None

    # building

    def add(self, name: str, on_ticks, pitches, ticks_per_beat: float) -> int:
        """Index one source's notes under `name`; returns how many passages it added."""
        hashes = passage_hashes(on_ticks, pitches, ticks_per_beat, self.n)
        source = len(self.names)
        self.names.append(str(name))
        self._pending.append((hashes, np.full(hashes.size, source, np.int32),
                              np.arange(hashes.size, dtype=np.int32)))
        return int(hashes.size)

    def add_file(self, path: str | Path, name: str | None = None) -> int:
        """Index a MIDI file (named by its file name unless `name`); MidiReadError if unreadable."""
        on, pitch, tpb = read_onsets(path)
        return self.add(Path(path).name if name is None else name, on, pitch, tpb)

    @classmethod
    def build(cls, sources: Iterable, n: int = DEFAULT_N) -> OriginalityIndex:
        """An index of `(name, source)` pairs; a source is a MIDI path or (on_ticks, pitches, ticks_per_beat)."""
        index = cls(n)
        for name, source in sources:
            if isinstance(source, (str, os.PathLike)):
                index.add_file(source, name)
            else:
                index.add(name, *source)
        return index

    @classmethod
    def from_files(cls, paths: Iterable, names: Iterable[str] | None = None, n: int = DEFAULT_N) -> OriginalityIndex:
        """An index of MIDI files, named by `names` (default: their file names)."""
        paths = [Path(p) for p in paths]
        names = [p.name for p in paths] if names is None else [str(x) for x in names]
        if len(names) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(names)} names")
        return cls.build(zip(names, paths), n)

    def _freeze(self) -> None:
        """Merge pending passages; keep one entry per (hash, source), its earliest start."""
        if not self._pending:
            return
        new_hashes, new_sources, new_starts = zip(*self._pending)
        hashes = np.concatenate([self._hashes, *new_hashes])
        sources = np.concatenate([self._sources, *new_sources])
        starts = np.concatenate([self._starts, *new_starts])
        self._pending = []
        order = np.lexsort((starts, sources, hashes))
        hashes, sources, starts = hashes[order], sources[order], starts[order]
        keep = np.ones(hashes.size, bool)
        keep[1:] = (hashes[1:] != hashes[:-1]) | (sources[1:] != sources[:-1])
        self._hashes, self._sources, self._starts = hashes[keep], sources[keep], starts[keep]

    @property
    def n_passages(self) -> int:
        """Distinct (passage, source) entries held."""
        self._freeze()
        return int(self._hashes.size)

    # checking

    def check_notes(self, on_ticks, pitches, ticks_per_beat: float) -> dict:
        """How much of a melody is found in the index.

        Returns {"copy_ratio": share (0..1) of its n-note passages found in any source,
        "longest_run": most consecutive melody notes covered by consecutive found passages
        (0 if none), "source": the source name with most found passages in that run (None
        if none), "n_passages": N-n+1 for N melody notes}. Fewer than n notes: ratio 0.0.
        """
        self._freeze()
        hashes = passage_hashes(on_ticks, pitches, ticks_per_beat, self.n)
        result = {"copy_ratio": 0.0, "longest_run": 0, "source": None, "n_passages": int(hashes.size)}
        if hashes.size == 0 or self._hashes.size == 0:
            return result
        lo = np.searchsorted(self._hashes, hashes, side="left")
        hi = np.searchsorted(self._hashes, hashes, side="right")
        found = hi > lo
        result["copy_ratio"] = float(found.mean())
        if not found.any():
            return result
        edges = np.diff(np.concatenate([[0], found.astype(np.int8), [0]]))
        run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        best = int(np.argmax(run_ends - run_starts))  # the first of equally long runs
        first, last = run_starts[best], run_ends[best]
        result["longest_run"] = int(last - first + self.n - 1)
        # every index entry hit by a passage of the run: one per (passage, source)
        counts = hi[first:last] - lo[first:last]
        offsets = np.repeat(lo[first:last] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        hits = self._sources[offsets + np.arange(counts.sum())]
        result["source"] = self.names[int(np.bincount(hits).argmax())]
        return result

    def check_file(self, path: str | Path) -> dict:
        """`check_notes` for a MIDI file's non-drum notes; MidiReadError if unreadable."""
        return self.check_notes(*read_onsets(path))

    def calibrate(self, paths: Iterable, quantile: float = REFERENCE_QUANTILE) -> dict:
        """Measure held-out real files (never indexed) against the index and keep the result.

        Real music shares idioms, so held-out files score above zero; the `quantile` of their
        copy ratios, rounded up to 0.05 and at least MIN_MAX_COPY, becomes `max_copy`: the
        mild bound `midigen generate` applies by default. Unreadable files are left out.
        Returns (and stores as `reference`) {"files", "copy_ratio_mean", "copy_ratio_q",
        "quantile", "max_copy"}.
        """
        ratios = []
        for path in paths:
            try:
                ratios.append(self.check_file(path)["copy_ratio"])
            except MidiReadError:
                continue
        q = float(np.quantile(ratios, quantile)) if ratios else 0.0
        self.reference = {"files": float(len(ratios)), "copy_ratio_mean": float(np.mean(ratios)) if ratios else 0.0,
                          "copy_ratio_q": q, "quantile": float(quantile),
                          "max_copy": max(MIN_MAX_COPY, float(np.ceil(q * 20 - 1e-9) / 20))}
        return self.reference

    @property
    def max_copy(self) -> float | None:
        """The default bound for generated files (see `calibrate`), or None if uncalibrated."""
        return None if self.reference is None else float(self.reference["max_copy"])

    # persistence

    def save(self, path: str | Path) -> Path:
        """Write the index as an .npz (written to a temporary file, then moved into place)."""
        self._freeze()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez(f, hashes=self._hashes, sources=self._sources, starts=self._starts,
                         names=np.array(self.names, dtype=np.str_), n=np.int64(self.n),
                         version=np.int64(VERSION),
                         ref_keys=np.array(list(self.reference or {}), dtype=np.str_),
                         ref_values=np.array(list((self.reference or {}).values()), dtype=np.float64))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> OriginalityIndex:
        """Read an index written by `save`; MidigenError if missing, corrupt or from another version."""
        path = Path(path)
        if not path.is_file():
            raise MidigenError(_MISSING.format(model=path, file=INDEX_FILE))
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("hashes", "sources", "starts", "names", "n", "version")}
                reference = (dict(zip((str(k) for k in data["ref_keys"]), (float(v) for v in data["ref_values"])))
                             if "ref_keys" in data.files and data["ref_keys"].size else None)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise MidigenError(f"{path}: not an originality index ({type(exc).__name__}); "
                               "retrain or pull a newer model") from None
        if int(arrays["version"]) != VERSION:
            raise MidigenError(f"{path}: originality index version {int(arrays['version'])}, this midigen reads "
                               f"version {VERSION}; retrain or pull a newer model")
        index = cls(int(arrays["n"]))
        index.names = [str(x) for x in arrays["names"]]
        index._hashes = arrays["hashes"].astype(np.uint64)
        index._sources = arrays["sources"].astype(np.int32)
        index._starts = arrays["starts"].astype(np.int32)
        index.reference = reference
        return index


# --- reports ------------------------------------------------------------------------------


def find_index(model: str | Path) -> Path:
    """The originality index of `model`: an index .npz itself, or a model folder holding
    originality.npz at its top or one or two folders down (e.g. artifacts/bundle/)."""
    model = Path(model).expanduser()
    if model.is_file():
        return model
    if model.is_dir():
        for pattern in (INDEX_FILE, f"*/{INDEX_FILE}", f"*/*/{INDEX_FILE}"):
            found = sorted(model.glob(pattern))
            if found:
                return found[0]
    raise MidigenError(_MISSING.format(model=model, file=INDEX_FILE))


def copy_report(paths, model: str | Path) -> dict:
    """Check MIDI files against a model's training corpus.

    `paths`: MIDI files and/or folders (each folder's MIDI_SUFFIXES files, not recursive).
    `model`: an index .npz or a model folder (see `find_index`). Returns
    {"files": {file name: check_notes result}, "folder": {"copy_ratio_mean",
    "copy_ratio_max", "longest_run_max", "n_files"}}; the folder figures count every file,
    including ones too short to check (ratio 0).
    """
    index = OriginalityIndex.load(find_index(model))
    files = {}
    for path in _midi_files(paths):
        name = path.name if path.name not in files else str(path)
        files[name] = index.check_file(path)
    ratios = [f["copy_ratio"] for f in files.values()]
    folder = {"copy_ratio_mean": float(np.mean(ratios)), "copy_ratio_max": float(max(ratios)),
              "longest_run_max": int(max(f["longest_run"] for f in files.values())), "n_files": len(files)}
    return {"files": files, "folder": folder}


def _midi_files(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p).expanduser() for p in paths]
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise MidigenError(f"{path}: no such MIDI file or folder")
    if not files:
        raise MidigenError(f"{', '.join(map(str, paths)) or 'no paths'}: no MIDI files ({', '.join(MIDI_SUFFIXES)}) "
                           "to check")
    return files
