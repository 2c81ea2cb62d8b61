"""The token corpus -> Lightning batches: sequence datasets, augmentation, the DataModule.

Sampling schemes: `seed` (the dissertation's: the first 220 events of each file, padded)
and `windows` (random windows from anywhere in each file, every epoch, so the whole
corpus is used), with on-the-fly transposition and time stretch on token ids.
A batch is (inputs (B, T), targets (B, T), style (B,), positions (B, T)): positions are the
inputs' bar positions (`midigen.data.events.bar_positions`) counted from their file's start and
time signatures, never from the window's (zeros in seed mode, which has no beats).
Training path only (imports torch and Lightning); the cache itself is `midigen.data.cache`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from midigen.data.cache import TokenCorpus, build_token_cache
from midigen.data.events import PAD_ID, EventParams, bar_positions, pitch_bounds, retime, total_steps, transpose
from midigen.errors import MidigenError

log = logging.getLogger(__name__)


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
        return _pack(window, self.style_index[f["style"]], _cached_positions(self.corpus, f, 0, self.seq_len + 1))


class WindowSequences(Dataset):
    """Random windows of `seq_len + 1` events from anywhere in each file, fresh every epoch.

    An epoch draws `len(self)` windows (enough to cover the split's tokens once on
    average), files chosen in proportion to their length. Set `.epoch` each epoch; the
    windows are a function of (seed, epoch, index), so runs repeat exactly.
    """

    def __init__(self, corpus: TokenCorpus, files: list[dict], seq_len: int, style_index: dict[str, int],
                 augmentation: Augmentation | None = None, seed: int = 0, samples_per_epoch: int | None = None,
                 style_shares: dict[str, float] | None = None):
        self.corpus, self.files, self.seq_len, self.style_index = corpus, files, seq_len, style_index
        self.augmentation = augmentation or Augmentation()
        self.seed, self.epoch = seed, 0
        lengths = np.array([f["length"] for f in files], dtype=np.float64)
        self.weights = share_weights(files, lengths, style_shares)
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
            positions = _stretched_positions(self.corpus, f, start, ids)
        else:
            positions = _cached_positions(self.corpus, f, start, want)
        if aug.transpose > 0:  # positions stay: a transposition moves no note in time
            bounds = pitch_bounds(ids)
            if bounds is not None:
                low = max(-aug.transpose, -bounds[0])
                high = min(aug.transpose, 127 - bounds[1])
                ids = transpose(ids, int(rng.integers(low, high + 1)))
        window = np.full(want, PAD_ID, dtype=np.int64)
        ids = ids[:want]
        window[: ids.size] = ids
        return _pack(window, self.style_index[f["style"]], positions[:want])


def share_weights(files: list[dict], lengths: np.ndarray, style_shares: dict[str, float] | None) -> np.ndarray:
    """Each file's chance of giving a window: in proportion to its length, except that the
    styles named in `style_shares` give that share of all windows between their files (by
    length) and the other styles share what is left (a fine-tune's new style against the
    base styles' replayed windows). A named style without files gives nothing, and when
    every file is of a named style the shares are scaled to add up to one."""
    if not style_shares:
        return lengths / lengths.sum()
    styles = np.array([f["style"] for f in files])
    weights = np.zeros_like(lengths)
    rest = ~np.isin(styles, list(style_shares))
    groups = [(styles == s, float(share)) for s, share in style_shares.items()]
    groups.append((rest, max(0.0, 1.0 - sum(float(v) for v in style_shares.values()))))
    for mask, share in groups:
        if mask.any() and lengths[mask].sum() > 0:
            weights[mask] = share * lengths[mask] / lengths[mask].sum()
    if weights.sum() <= 0:
        raise MidigenError(f"data.style_shares={dict(style_shares)} leaves no training file a share")
    return weights / weights.sum()


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
        return _pack(window, self.style_index[f["style"]], _cached_positions(self.corpus, f, start, end - start))


def _cached_positions(corpus: TokenCorpus, f: dict, start: int, n: int) -> np.ndarray:
    """The bar positions of a file's tokens start..start+n (fewer at its end), as cached; zeros in seed mode."""
    n = max(0, min(n, f["length"] - start))
    if corpus.positions is None:
        return np.zeros(n, dtype=np.int64)
    return np.asarray(corpus.positions[f["offset"] + start: f["offset"] + start + n], dtype=np.int64)


def _stretched_positions(corpus: TokenCorpus, f: dict, start: int, ids: np.ndarray) -> np.ndarray:
    """Bar positions of a time-stretched window, from its own (stretched) shifts.

    The window opens where the file has it in its bar, and its shifts count on from there in
    bars of the length in force there, as the sampler counts a clip's time: after a stretch,
    the cached positions no longer match the shifts a model reads. Zeros in seed mode."""
    if corpus.positions is None:
        return np.zeros(len(ids), dtype=np.int64)
    before = int(corpus.positions[f["offset"] + start - 1]) if start > 0 else 0
    elapsed = total_steps(corpus.tokens[f["offset"]: f["offset"] + start], corpus.params)
    lines = [step for step, _ in f["meter"]]
    bar = f["meter"][max(int(np.searchsorted(lines, elapsed, side="right")) - 1, 0)][1]
    return bar_positions(ids, corpus.params, bar, start=before)


def _pack(window: np.ndarray, style: int, positions: np.ndarray):
    """inputs (T,), targets (T,), style (), the inputs' bar positions (T,), from a window of T + 1 events."""
    seq = torch.from_numpy(window)
    pos = np.zeros(len(window), dtype=np.int64)
    pos[: len(positions)] = positions
    return seq[:-1], seq[1:], torch.tensor(style), torch.from_numpy(pos[:-1])


# --- the Lightning DataModule ------------------------------------------------------------



class EventDataModule(pl.LightningDataModule):
    """Hydra-built DataModule: `data.root`, `data.scheme`, `data.seq_len`, ... (conf/data/)."""

    def __init__(self, root: str, cache_dir: str, tokenizer: dict, scheme: str = "windows", seq_len: int = 128,
                 batch_size: int = 32, eval_batch_size: int | None = None, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, augment: dict | None = None, samples_per_epoch: int | None = None,
                 num_workers: int = 0, seed: int = 0, styles: list[str] | None = None, max_files: int | None = None,
                 max_file_tokens: int | None = None, style_shares: dict[str, float] | None = None):
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
        shares = dict(style_shares or {})
        bad = {k: v for k, v in shares.items() if not (isinstance(v, (int, float)) and 0 <= v <= 1)}
        if bad or sum(shares.values()) > 1 + 1e-9:
            raise MidigenError(f"data.style_shares={shares}: give each named style a share of windows in 0..1, "
                               "adding up to at most 1")
        self.style_shares = shares or None
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
                                             self.seed, self.samples_per_epoch, self.style_shares)
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
