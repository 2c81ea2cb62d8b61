"""Corpus folders -> a cached, memory-mapped token corpus, split by file.

A corpus is any folder laid out as `<root>/<style>/**/*.mid`. Each file is tokenized
once into an on-disk cache keyed by the tokenizer's parameters and the file's content
hash; later runs and sweep jobs reuse it and re-tokenize only changed files. Files are
split into train/val/test by a hash of their path, so adding files never reshuffles old
ones. Sequences never cross files. With the beat tokenizer, each token's bar position (steps
since the bar line once it is read, from the file's time signatures) is cached beside it.

Not for: batches and the Lightning DataModule (`midigen.data.datamodule`, training only).
This module needs numpy and the MIDI reader, not torch or Lightning.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midigen.errors import MidigenError, MidiReadError
from midigen.data.events import (
    NOTE_OFF_OFFSET,
    NOTE_ON_OFFSET,
    TOKEN_DTYPE,
    EventParams,
    bar_positions,
    count_tokens,
    encode_notes,
)
from midigen.data.midi_io import BEATS_PER_BAR, MIDI_SUFFIXES, read_midi, read_notes

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# The layout of a corpus folder (tokens.npy, index.json, ...); a new one rebuilds it from the
# per-file caches. 2: bar positions (positions.npy) and each file's meter, in beat mode.
CACHE_FORMAT = 2
POSITION_DTYPE = np.uint16  # steps since the bar line: under 65,536 (a 36/4 bar is 432 steps of 1/12 beat)


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    rel: str  # path relative to the corpus root, with forward slashes
    style: str


def list_corpus(root: str | Path) -> list[CorpusFile]:
    """Every MIDI file under `<root>/<style>/`, sorted by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise MidigenError(f"corpus folder {root} does not exist: build one with `midigen data build` "
                           "or set data.root=PATH to a folder laid out as <root>/<style>/*.mid")
    files = []
    for style_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(style_dir.rglob("*")):
            if path.suffix.lower() in MIDI_SUFFIXES and path.is_file():
                files.append(CorpusFile(path, path.relative_to(root).as_posix(), style_dir.name))
    if not files:
        raise MidigenError(f"corpus folder {root} has no MIDI files under <style>/ subfolders")
    return files


def split_of(rel: str, val_fraction: float, test_fraction: float) -> str:
    """The split a file belongs to, from a hash of its relative path (stable as files come and go)."""
    u = int(hashlib.sha1(rel.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    if u < val_fraction:
        return "val"
    if u < val_fraction + test_fraction:
        return "test"
    return "train"


def assign_splits(rels: list[str], val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Hash splits, except that a small corpus still gets a non-empty val (and test) split.

    When hashing leaves val or test empty, the train files whose hashes lie closest to
    that split's range move there; with fewer than 3 files the split stays empty.
    """
    splits = {rel: split_of(rel, val_fraction, test_fraction) for rel in rels}
    score = {rel: int(hashlib.sha1(rel.encode("utf-8")).hexdigest()[:8], 16) for rel in rels}
    for wanted, fraction in (("val", val_fraction), ("test", test_fraction)):
        train = sorted((r for r in rels if splits[r] == "train"), key=score.get)
        if fraction > 0 and wanted not in splits.values() and len(train) >= 2:
            splits[train[0]] = wanted
    return splits


@dataclass
class TokenCorpus:
    """All tokenized files of a corpus: one memory-mapped id array and an index of files."""

    tokens: np.ndarray  # (N,) uint16, memory-mapped
    files: list[dict]  # rel, style, split, offset, length; in beat mode meter (see `file_meter`)
    styles: list[str]
    skipped: list[dict]  # rel, reason
    params: EventParams
    cache_dir: Path
    # (N,) uint16, memory-mapped, beat mode only (else None): each token's `bar_positions`, counted
    # from its file's start and time signatures.
    positions: np.ndarray | None = None

    def split(self, name: str) -> list[dict]:
        return [f for f in self.files if f["split"] == name]

    def summary(self) -> dict:
        out = {"files": len(self.files), "skipped": len(self.skipped), "styles": self.styles}
        for name in SPLITS:
            part = self.split(name)
            out[f"{name}_files"] = len(part)
            out[f"{name}_tokens"] = int(sum(f["length"] for f in part))
            out[f"{name}_notes"] = self.notes(name)
        return out

    def notes(self, split: str) -> int:
        """How many notes (NOTE_ON events) the files of `split` hold.

        The same music gives the same count under every tokenizer, so NLL per note compares
        models whose vocabularies differ, where NLL per event cannot."""
        count = 0
        for f in self.split(split):  # file by file: memory stays flat as the corpus grows
            seg = self.tokens[f["offset"]:f["offset"] + f["length"]]
            count += int(np.count_nonzero((seg >= NOTE_ON_OFFSET) & (seg < NOTE_OFF_OFFSET)))
        return count


def _hash_bytes(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def file_meter(path: Path, params: EventParams) -> list[list[int]]:
    """A file's bar lines as `bar_positions` reads them: [[step, bar_steps], ...] from its time
    signatures (a bar lasts numerator * 4 / denominator beats: 3/4 and 6/8 are 3, 2/2 is 4).

    Every signature starts a bar where it stands, as in `midigen.evaluation.metrics.bar_lines`:
    a pickup that the corpus exporter wrote as a short bar of its own (1/4 before 4/4) is one
    short bar and the piece's bars follow from its end; a meter change starts its bars where it
    stands. Before the first signature, or without any, bars are 4/4 from step 0. Beat mode only.
    """
    notes = read_midi(path)
    scale = params.grid / notes.ticks_per_beat
    meter = {0: BEATS_PER_BAR * params.grid}
    for tick, numerator, denominator in sorted(notes.time_signatures, key=lambda s: s[0]):  # the last at a tick counts
        steps = round(numerator * 4 / max(denominator, 1) * params.grid)
        meter[int(np.rint(tick * scale))] = int(min(max(steps, 1), np.iinfo(POSITION_DTYPE).max))
    return [[step, steps] for step, steps in sorted(meter.items())]


def build_token_cache(
    root: str | Path,
    params: EventParams,
    cache_root: str | Path,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_file_tokens: int | None = None,
) -> TokenCorpus:
    """Tokenize a corpus folder into `cache_root/<params>/`, reusing what is cached.

    Per-file ids live in `files/<sha1>.npy` (or `<sha1>.skip` with the reason); the whole
    corpus is one `tokens.npy` in a folder named by the hash of the file listing, with
    `index.json` and a `skipped.csv` report beside it. Unusable files are skipped and
    reported, never fatal; a corpus with no usable file is a MidigenError. A file that
    would be more than `max_file_tokens` ids is skipped before its ids are built (a huge
    delta time is a few bytes of MIDI but millions of TIME_SHIFTs).
    """
    files = list_corpus(root)
    base = Path(cache_root) / params.key()
    per_file = base / "files"
    per_file.mkdir(parents=True, exist_ok=True)
    (base / "tokenizer.json").write_text(json.dumps(params.to_dict(), indent=2))

    entries, skipped, hashes = [], [], []
    for cf in files:
        try:
            digest = _hash_bytes(cf.path)
        except OSError as exc:
            skipped.append({"rel": cf.rel, "reason": f"unreadable: {exc.strerror or exc}"})
            continue
        hashes.append((cf, digest))
    listing = hashlib.sha1(json.dumps(
        [(cf.rel, cf.style, d) for cf, d in hashes] + [s["rel"] for s in skipped]
        + [val_fraction, test_fraction, max_file_tokens, CACHE_FORMAT]).encode()).hexdigest()[:16]
    corpus_dir = base / f"corpus-{listing}"
    index_path = corpus_dir / "index.json"
    beat = params.mode == "beat"
    if index_path.exists():
        index = json.loads(index_path.read_text())
        tokens = np.load(corpus_dir / "tokens.npy", mmap_mode="r")
        positions = np.load(corpus_dir / "positions.npy", mmap_mode="r") if beat else None
        return TokenCorpus(tokens, index["files"], index["styles"], index["skipped"], params, corpus_dir, positions)

    arrays, position_arrays = [], []
    offset = 0
    too_long = f"too long to train on: {{:,}} tokens, more than data.max_file_tokens={max_file_tokens}"
    for cf, digest in hashes:
        npy, skip = per_file / f"{digest}.npy", per_file / f"{digest}.skip"
        meter_json = per_file / f"{digest}.meter.json"
        if skip.exists():
            skipped.append({"rel": cf.rel, "reason": skip.read_text()})
            continue
        if npy.exists():
            ids = np.load(npy)
            if max_file_tokens and ids.size > max_file_tokens:
                skipped.append({"rel": cf.rel, "reason": too_long.format(ids.size)})
                continue
        else:
            try:
                notes = read_notes(cf.path, params)
                n_tokens = count_tokens(*notes, params)
                if max_file_tokens and n_tokens > max_file_tokens:
                    # Not cached as a .skip: the limit is a setting, not a property of the file.
                    skipped.append({"rel": cf.rel, "reason": too_long.format(n_tokens)})
                    continue
                ids = encode_notes(*notes, params)
                if ids.size < 2:
                    raise MidiReadError(f"{cf.path.name}: too few events")
                if beat:
                    _atomic_write_text(meter_json, json.dumps(file_meter(cf.path, params)))
            except MidiReadError as exc:
                reason = str(exc).split(": ", 1)[-1]
                skip.write_text(reason)
                skipped.append({"rel": cf.rel, "reason": reason})
                continue
            except Exception as exc:  # a file that breaks a parser must not stop a run
                reason = f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
                skip.write_text(reason)
                skipped.append({"rel": cf.rel, "reason": reason})
                continue
            _atomic_save(npy, ids)
        entry = {"rel": cf.rel, "style": cf.style, "offset": offset, "length": int(ids.size), "sha1": digest}
        if beat:
            if not meter_json.exists():  # ids cached before meters were (CACHE_FORMAT 1): read the signatures
                _atomic_write_text(meter_json, json.dumps(file_meter(cf.path, params)))
            entry["meter"] = json.loads(meter_json.read_text())
            position_arrays.append(bar_positions(ids, params, entry["meter"]).astype(POSITION_DTYPE))
        arrays.append(ids)
        entries.append(entry)
        offset += int(ids.size)
    if not entries:
        _write_skips(corpus_dir, skipped)
        raise MidigenError(f"no usable MIDI file in {root} ({len(skipped)} skipped; reasons in "
                           f"{corpus_dir / 'skipped.csv'})")
    splits = assign_splits([e["rel"] for e in entries], val_fraction, test_fraction)
    for e in entries:
        e["split"] = splits[e["rel"]]
    styles = sorted({e["style"] for e in entries})
    corpus_dir.mkdir(parents=True, exist_ok=True)
    _atomic_save(corpus_dir / "tokens.npy", np.concatenate(arrays).astype(TOKEN_DTYPE))
    if beat:
        _atomic_save(corpus_dir / "positions.npy", np.concatenate(position_arrays))
    _write_skips(corpus_dir, skipped)
    tmp = index_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"files": entries, "styles": styles, "skipped": skipped,
                               "root": str(Path(root).resolve())}))
    tmp.replace(index_path)
    tokens = np.load(corpus_dir / "tokens.npy", mmap_mode="r")
    positions = np.load(corpus_dir / "positions.npy", mmap_mode="r") if beat else None
    return TokenCorpus(tokens, entries, styles, skipped, params, corpus_dir, positions)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    # Parallel sweep jobs may build the same cache: write aside, then rename.
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, array)
    tmp.replace(path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def _write_skips(corpus_dir: Path, skipped: list[dict]) -> None:
    corpus_dir.mkdir(parents=True, exist_ok=True)
    with (corpus_dir / "skipped.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["rel", "reason"])
        writer.writeheader()
        writer.writerows(skipped)
