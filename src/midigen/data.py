"""Corpus folders -> a cached, memory-mapped token corpus -> Lightning batches.

A corpus is any folder laid out as `<root>/<style>/**/*.mid`. Each file is tokenized
once into an on-disk cache keyed by the tokenizer's parameters and the file's content
hash; later runs and sweep jobs reuse it and re-tokenize only changed files. Files are
split into train/val/test by a hash of their path, so adding files never reshuffles old
ones. Sequences never cross files.

Sampling schemes: `seed` (the dissertation's: the first 220 events of each file, padded)
and `windows` (random windows from anywhere in each file, every epoch, so the whole
corpus is used), with on-the-fly transposition and time stretch on token ids.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from midigen.errors import MidigenError, MidiReadError
from midigen.events import (
    NOTE_OFF_OFFSET,
    NOTE_ON_OFFSET,
    PAD_ID,
    TOKEN_DTYPE,
    EventParams,
    count_tokens,
    encode_notes,
    pitch_bounds,
    retime,
    transpose,
)
from midigen.midi_io import read_notes

log = logging.getLogger(__name__)

MIDI_SUFFIXES = {".mid", ".midi", ".smf"}
SPLITS = ("train", "val", "test")


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
    files: list[dict]  # rel, style, split, offset, length
    styles: list[str]
    skipped: list[dict]  # rel, reason
    params: EventParams
    cache_dir: Path

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
        + [val_fraction, test_fraction, max_file_tokens]).encode()).hexdigest()[:16]
    corpus_dir = base / f"corpus-{listing}"
    index_path = corpus_dir / "index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text())
        tokens = np.load(corpus_dir / "tokens.npy", mmap_mode="r")
        return TokenCorpus(tokens, index["files"], index["styles"], index["skipped"], params, corpus_dir)

    arrays = []
    offset = 0
    too_long = f"too long to train on: {{:,}} tokens, more than data.max_file_tokens={max_file_tokens}"
    for cf, digest in hashes:
        npy, skip = per_file / f"{digest}.npy", per_file / f"{digest}.skip"
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
        arrays.append(ids)
        entries.append({"rel": cf.rel, "style": cf.style, "offset": offset, "length": int(ids.size),
                        "sha1": digest})
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
    _write_skips(corpus_dir, skipped)
    tmp = index_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"files": entries, "styles": styles, "skipped": skipped,
                               "root": str(Path(root).resolve())}))
    tmp.replace(index_path)
    tokens = np.load(corpus_dir / "tokens.npy", mmap_mode="r")
    return TokenCorpus(tokens, entries, styles, skipped, params, corpus_dir)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    # Parallel sweep jobs may build the same cache: write aside, then rename.
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, array)
    tmp.replace(path)


def _write_skips(corpus_dir: Path, skipped: list[dict]) -> None:
    corpus_dir.mkdir(parents=True, exist_ok=True)
    with (corpus_dir / "skipped.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["rel", "reason"])
        writer.writeheader()
        writer.writerows(skipped)


# --- datasets ----------------------------------------------------------------------------


@dataclass
class Augmentation:
    """Oore et al.'s augmentation on token ids: transpose within +-`transpose` semitones
    (never past 0..127) and stretch time by a factor within 1 +- `stretch`."""

    transpose: int = 0
    stretch: float = 0.0

    @property
    def active(self) -> bool:
        return self.transpose > 0 or self.stretch > 0


class SeedSequences(Dataset):
    """The seed's scheme: the first `seq_len + 1` events of each file, padded with PAD."""

    def __init__(self, corpus: TokenCorpus, files: list[dict], seq_len: int, style_index: dict[str, int]):
        self.corpus, self.files, self.seq_len, self.style_index = corpus, files, seq_len, style_index

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        f = self.files[i]
        n = min(f["length"], self.seq_len + 1)
        window = np.full(self.seq_len + 1, PAD_ID, dtype=np.int64)
        window[:n] = self.corpus.tokens[f["offset"]: f["offset"] + n]
        return _pack(window, self.style_index[f["style"]])


class WindowSequences(Dataset):
    """Random windows of `seq_len + 1` events from anywhere in each file, fresh every epoch.

    An epoch draws `len(self)` windows (enough to cover the split's tokens once on
    average), files chosen in proportion to their length. Set `.epoch` each epoch; the
    windows are a function of (seed, epoch, index), so runs repeat exactly.
    """

    def __init__(self, corpus: TokenCorpus, files: list[dict], seq_len: int, style_index: dict[str, int],
                 augmentation: Augmentation | None = None, seed: int = 0, samples_per_epoch: int | None = None):
        self.corpus, self.files, self.seq_len, self.style_index = corpus, files, seq_len, style_index
        self.augmentation = augmentation or Augmentation()
        self.seed, self.epoch = seed, 0
        lengths = np.array([f["length"] for f in files], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        total = int(lengths.sum())
        self.samples = samples_per_epoch or max(1, total // seq_len)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        f = self.files[int(rng.choice(len(self.files), p=self.weights))]
        aug = self.augmentation
        factor = 1.0 + rng.uniform(-aug.stretch, aug.stretch) if aug.stretch > 0 else 1.0
        # Take a little more than needed when stretching can shorten the window.
        want = self.seq_len + 1
        take = int(want / min(factor, 1.0)) + 8 if factor != 1.0 else want
        start = int(rng.integers(0, max(1, f["length"] - want + 1)))
        ids = np.asarray(self.corpus.tokens[f["offset"] + start: f["offset"] + min(f["length"], start + take)],
                         dtype=np.int64)
        if factor != 1.0:
            ids = retime(ids, factor, self.corpus.params)
        if aug.transpose > 0:
            bounds = pitch_bounds(ids)
            if bounds is not None:
                low = max(-aug.transpose, -bounds[0])
                high = min(aug.transpose, 127 - bounds[1])
                ids = transpose(ids, int(rng.integers(low, high + 1)))
        window = np.full(want, PAD_ID, dtype=np.int64)
        ids = ids[:want]
        window[: ids.size] = ids
        return _pack(window, self.style_index[f["style"]])


class TiledSequences(Dataset):
    """Every event of every file exactly once, in consecutive windows (held-out evaluation)."""

    def __init__(self, corpus: TokenCorpus, files: list[dict], seq_len: int, style_index: dict[str, int]):
        self.corpus, self.seq_len, self.style_index = corpus, seq_len, style_index
        self.windows = []
        for f in files:
            # Windows overlap by one event: each event is predicted exactly once.
            for start in range(0, max(1, f["length"] - 1), seq_len):
                self.windows.append((f, start))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        f, start = self.windows[i]
        end = min(f["length"], start + self.seq_len + 1)
        window = np.full(self.seq_len + 1, PAD_ID, dtype=np.int64)
        window[: end - start] = self.corpus.tokens[f["offset"] + start: f["offset"] + end]
        return _pack(window, self.style_index[f["style"]])


def _pack(window: np.ndarray, style: int):
    seq = torch.from_numpy(window)
    return seq[:-1], seq[1:], torch.tensor(style)  # inputs (T,), targets (T,), style ()


# --- the Lightning DataModule ------------------------------------------------------------

import pytorch_lightning as pl  # noqa: E402  (training path only)


class EventDataModule(pl.LightningDataModule):
    """Hydra-built DataModule: `data.root`, `data.scheme`, `data.seq_len`, ... (conf/data/)."""

    def __init__(self, root: str, cache_dir: str, tokenizer: dict, scheme: str = "windows", seq_len: int = 256,
                 batch_size: int = 64, eval_batch_size: int | None = None, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, augment: dict | None = None, samples_per_epoch: int | None = None,
                 num_workers: int = 0, seed: int = 0, styles: list[str] | None = None, max_files: int | None = None,
                 max_file_tokens: int | None = None):
        super().__init__()
        if scheme not in ("seed", "windows"):
            raise MidigenError(f"data.scheme={scheme!r} is not a sampling scheme: use 'seed' or 'windows'")
        if seq_len < 2:
            raise MidigenError(f"data.seq_len={seq_len} is too short: use at least 2 events")
        if batch_size < 1:
            raise MidigenError(f"data.batch_size={batch_size} must be at least 1")
        self.root, self.cache_dir = root, cache_dir
        self.params = EventParams.from_dict(dict(tokenizer))
        self.scheme, self.seq_len, self.batch_size = scheme, seq_len, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.augmentation = Augmentation(**dict(augment or {}))
        if self.params.mode == "beat" and self.augmentation.stretch > 0:
            log.warning("data.augment.stretch=%s with beat tokens moves notes off the 1/%d-beat grid; "
                        "beat tokens do not depend on tempo, so 0 is usual", self.augmentation.stretch, self.params.grid)
        self.samples_per_epoch, self.num_workers, self.seed = samples_per_epoch, num_workers, seed
        self.wanted_styles, self.max_files, self.max_file_tokens = styles, max_files, max_file_tokens
        self.corpus: TokenCorpus | None = None

    def prepare_data(self) -> None:
        self.load_corpus()

    def load_corpus(self) -> TokenCorpus:
        if self.corpus is None:
            corpus = build_token_cache(self.root, self.params, self.cache_dir, self.val_fraction, self.test_fraction,
                                       self.max_file_tokens)
            if self.wanted_styles:
                missing = sorted(set(self.wanted_styles) - set(corpus.styles))
                if missing:
                    raise MidigenError(f"data.styles names {missing}, not in the corpus; it has {corpus.styles}")
                corpus.files = [f for f in corpus.files if f["style"] in self.wanted_styles]
                corpus.styles = sorted(self.wanted_styles)
            if self.max_files:
                corpus.files = corpus.files[: self.max_files]
                corpus.styles = sorted({f["style"] for f in corpus.files})
            if not corpus.split("train"):
                raise MidigenError(f"corpus {self.root} has no training files after the split")
            self.corpus = corpus
            if corpus.skipped:
                log.warning("skipped %d unusable MIDI files (reasons in %s)", len(corpus.skipped),
                            corpus.cache_dir / "skipped.csv")
        return self.corpus

    @property
    def styles(self) -> list[str]:
        return self.load_corpus().styles

    @property
    def style_index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.styles)}

    def setup(self, stage: str | None = None) -> None:
        corpus = self.load_corpus()
        train = corpus.split("train")
        if self.scheme == "seed":
            self.train_set = SeedSequences(corpus, train, self.seq_len, self.style_index)
        else:
            self.train_set = WindowSequences(corpus, train, self.seq_len, self.style_index, self.augmentation,
                                             self.seed, self.samples_per_epoch)
        self.val_set = TiledSequences(corpus, corpus.split("val"), self.seq_len, self.style_index)
        self.test_set = TiledSequences(corpus, corpus.split("test"), self.seq_len, self.style_index)

    def set_epoch(self, epoch: int) -> None:
        """New windows and a new shuffle for `epoch`, each a function of (seed, epoch) alone."""
        if isinstance(getattr(self, "train_set", None), WindowSequences):
            self.train_set.epoch = epoch
        if getattr(self, "_shuffle", None) is not None:
            self._shuffle.manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))

    def _loader(self, dataset, shuffle: bool, batch_size: int, generator: torch.Generator | None = None) -> DataLoader:
        generator = generator or torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          generator=generator, persistent_workers=False, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        self._shuffle = torch.Generator().manual_seed(self.seed)  # reseeded by set_epoch
        return self._loader(self.train_set, self.scheme == "seed", self.batch_size, self._shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size)
