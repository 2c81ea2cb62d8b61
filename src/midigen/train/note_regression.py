"""The dissertation's first approach (section 1.3): regress the next note's (pitch, step, duration).

A baseline kept in this framework so the study can compare it on the same ground: the same
corpus folder, the same held-out files (`data.list_corpus` + `data.assign_splits` over the
same usable files as the token cache), MLflow tracking, MIDI out through `midi_io.write_midi`.
`midigen train experiment=seed_approach1` runs it (conf/experiment/seed_approach1.yaml).

Representation: each file's notes (all tracks merged, drums dropped) read by
`midi_io.read_notes` at the seed tokenizer's 8 ms resolution, sorted by onset then pitch,
each note a vector (pitch 0..127, step s, duration s). The seed used raw pretty_midi start
times, instrument after instrument; `step` is the onset's distance from the previous note's
onset instead (0 for a file's first note), so a window means the same wherever it lies in a
file. No scaling: features enter and leave the network in these units, as in the seed, so
`mse` is in the seed's units (the mean over the three features of squared semitones /
seconds) - its reported 43.4 after 10 epochs and 0.19 after 500 are training losses.

Model (Keras in the seed, here torch): LSTM(256) over 20 notes returning every step's
output (20, 256) -> flatten (5120) -> Dense(3) -> Dense(3) -> Dense(3). The seed names no
activation for the dense layers, and Keras's default is linear, so by default they are
linear (the stack is then one affine map of the LSTM outputs); `dense_activation: relu`
puts a ReLU between them (never after the last). MSE loss, Adam, batch 64.

Generation (the seed's loop): a 20-note primer window; predict a note, append it, drop the
oldest, 50 times. The network is fed its raw predictions, as in the seed; the notes returned
are made playable (pitch rounded into 0..127, step >= 0, duration >= `min_duration`).
Not for: the event-token model (`midigen.model`, `midigen.train.module`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from midigen.errors import MidigenError, MidiReadError
from midigen.data.events import EventParams, count_tokens, resolve_overlaps
from midigen.data.midi_io import TICKS_PER_BEAT, read_notes, write_midi

FEATURES = ("pitch", "step", "duration")  # a note vector's columns; step and duration in seconds


# --- notes --------------------------------------------------------------------------------


def file_notes(path: str | Path, params: EventParams | None = None) -> np.ndarray:
    """One MIDI file's notes as (n, 3) float32 rows (pitch, step s, duration s), in onset order.

    Raises MidiReadError for a file `read_notes` cannot use.
    """
    params = params or EventParams.seed()
    return _note_rows(*read_notes(path, params), params)


def _note_rows(on: np.ndarray, off: np.ndarray, pitch: np.ndarray, params: EventParams) -> np.ndarray:
    order = np.lexsort((pitch, on))
    on, off, pitch = on[order], off[order], pitch[order]
    seconds = params.step_ms / 1000.0
    step = np.diff(on, prepend=on[:1]) * seconds
    duration = (off - on) * seconds
    return np.column_stack([pitch, step, duration]).astype(np.float32)


@dataclass
class NoteCorpus:
    """Every usable file's notes, concatenated: file i is notes[offset : offset + length]."""

    notes: np.ndarray  # (N, 3) float32
    files: list[dict]  # rel, style, split, offset, length
    skipped: list[dict]  # rel, reason

    def split(self, name: str) -> list[dict]:
        return [f for f in self.files if f["split"] == name]

    def summary(self) -> dict:
        out = {"files": len(self.files), "skipped": len(self.skipped)}
        for name in ("train", "val", "test"):
            part = self.split(name)
            out[f"{name}_files"] = len(part)
            out[f"{name}_notes"] = int(sum(f["length"] for f in part))
        return out


def load_note_corpus(root: str | Path, val_fraction: float = 0.1, test_fraction: float = 0.1,
                     max_file_tokens: int | None = None, styles: list[str] | None = None,
                     max_files: int | None = None) -> NoteCorpus:
    """The notes of a `<root>/<style>/*.mid` corpus, split exactly as the token cache splits it.

    A file the token cache would skip (unreadable, no notes, more than `max_file_tokens`
    seed-vocabulary events) is skipped here too, before splitting, so `assign_splits` sees
    the same files and puts each in the same split. `styles` and `max_files` then filter,
    as `EventDataModule` does.
    """
    from midigen.data.cache import assign_splits, list_corpus

    params = EventParams.seed()
    per_file, skipped = [], []
    for cf in list_corpus(root):
        try:
            on_off_pitch = read_notes(cf.path, params)
            notes = _note_rows(*on_off_pitch, params)
            if max_file_tokens and count_tokens(*on_off_pitch, params) > max_file_tokens:
                skipped.append({"rel": cf.rel, "reason": f"more than data.max_file_tokens={max_file_tokens} events"})
                continue
        except MidiReadError as exc:
            skipped.append({"rel": cf.rel, "reason": str(exc).split(": ", 1)[-1]})
            continue
        except Exception as exc:  # a file that breaks a parser must not stop a run
            skipped.append({"rel": cf.rel, "reason": f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"})
            continue
        per_file.append((cf, notes))
    if not per_file:
        raise MidigenError(f"no usable MIDI file in {root} ({len(skipped)} skipped)")
    splits = assign_splits([cf.rel for cf, _ in per_file], val_fraction, test_fraction)
    if styles:
        missing = sorted(set(styles) - {cf.style for cf, _ in per_file})
        if missing:
            raise MidigenError(f"data.styles names {missing}, not in the corpus {root}")
        per_file = [(cf, n) for cf, n in per_file if cf.style in styles]
    if max_files:
        per_file = per_file[:max_files]
    files, offset = [], 0
    for cf, notes in per_file:
        files.append({"rel": cf.rel, "style": cf.style, "split": splits[cf.rel], "offset": offset,
                      "length": int(notes.shape[0])})
        offset += int(notes.shape[0])
    return NoteCorpus(np.concatenate([n for _, n in per_file]), files, skipped)


def window_starts(files: list[dict], window: int) -> np.ndarray:
    """Where every window of `window` notes plus its target begins, never crossing a file."""
    starts = [f["offset"] + np.arange(f["length"] - window) for f in files if f["length"] > window]
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


class NoteWindows(Dataset):
    """(notes (window, 3), next note (3,)) pairs: every window of every file, stride 1."""

    def __init__(self, corpus: NoteCorpus, files: list[dict], window: int):
        self.notes = torch.from_numpy(corpus.notes)
        self.window = window
        self.starts = window_starts(files, window)

    def __len__(self) -> int:
        return int(self.starts.size)

    def __getitem__(self, i: int):
        s = int(self.starts[i])
        return self.notes[s: s + self.window], self.notes[s + self.window]  # (W, 3), (3,)


# --- the network --------------------------------------------------------------------------


@dataclass
class NoteModelConfig:
    """Hyper-parameters of `NoteLSTM` (`note_model:` in conf/experiment/seed_approach1.yaml)."""

    window: int = 20
    hidden: int = 256
    dense: list[int] = field(default_factory=lambda: [3, 3, 3])
    dense_activation: str | None = None  # None: linear (Keras's default); "relu"

    def __post_init__(self) -> None:
        self.dense = list(self.dense)
        if not self.dense or self.dense[-1] != len(FEATURES):
            raise MidigenError(f"note_model.dense={self.dense}: the last layer must have {len(FEATURES)} units "
                               f"(one per feature: {', '.join(FEATURES)})")
        if self.dense_activation not in (None, "relu"):
            raise MidigenError(f"note_model.dense_activation={self.dense_activation!r}: use null (linear) or relu")
        if self.window < 1 or self.hidden < 1:
            raise MidigenError("note_model.window and note_model.hidden must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NoteModelConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class NoteLSTM(nn.Module):
    """(B, window, 3) notes -> (B, 3) the next note: LSTM, flatten, dense stack."""

    def __init__(self, config: NoteModelConfig):
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(len(FEATURES), config.hidden, batch_first=True)
        layers: list[nn.Module] = []
        width = config.window * config.hidden
        for i, units in enumerate(config.dense):
            layers.append(nn.Linear(width, units))
            if config.dense_activation == "relu" and i < len(config.dense) - 1:
                layers.append(nn.ReLU())
            width = units
        self.dense = nn.Sequential(*layers)

    def forward(self, notes: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(notes)  # (B, W, H): every step's output (return_sequences)
        return self.dense(out.flatten(1))  # (B, W*H) -> (B, 3)


@torch.no_grad()
def generate_notes(net: NoteLSTM, primer: np.ndarray, num_notes: int = 50,
                   min_duration: float = 0.008) -> np.ndarray:
    """The seed's loop: `num_notes` notes (num_notes, 3) continuing `primer` (window, 3).

    Raw predictions are fed back; the returned rows are playable: integer pitch in 0..127,
    step >= 0 and duration >= `min_duration` seconds.
    """
    window = net.config.window
    primer = np.asarray(primer, dtype=np.float32)
    if primer.shape != (window, len(FEATURES)):
        raise MidigenError(f"a primer must be {window} notes of {len(FEATURES)} features, not {primer.shape}")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    seq = torch.from_numpy(primer).to(device).unsqueeze(0)  # (1, W, 3)
    out = []
    for _ in range(num_notes):
        note = net(seq)  # (1, 3)
        out.append(note[0].cpu().numpy())
        seq = torch.cat([seq[:, 1:], note.unsqueeze(1)], dim=1)  # drop the oldest, append the prediction
    net.train(was_training)
    notes = np.asarray(out, dtype=np.float64).reshape(num_notes, len(FEATURES))
    notes[:, 0] = np.clip(np.rint(notes[:, 0]), 0, 127)
    notes[:, 1] = np.maximum(notes[:, 1], 0.0)
    notes[:, 2] = np.maximum(notes[:, 2], min_duration)
    return notes


def notes_to_ticks(notes: np.ndarray, bpm: float = 120.0):
    """(n, 3) note rows -> (on, off, pitch) in ticks at 960 per beat, first onset at 0, for `write_midi`.

    A pitch cannot sound twice at once in MIDI: repeats of one pitch at one onset become
    one note and an overlapped note ends where the next of its pitch begins
    (`events.resolve_overlaps`), so fewer notes than rows may come back.
    """
    notes = np.asarray(notes, dtype=np.float64)
    start = np.cumsum(notes[:, 1]) - (notes[0, 1] if len(notes) else 0.0)
    ticks_per_second = bpm / 60.0 * TICKS_PER_BEAT
    on = np.rint(start * ticks_per_second).astype(np.int64)
    off = np.maximum(np.rint((start + notes[:, 2]) * ticks_per_second).astype(np.int64), on + 1)
    return resolve_overlaps(on, off, notes[:, 0].astype(np.int64))


def write_notes(path: str | Path, notes: np.ndarray, bpm: float = 120.0) -> Path:
    """Write note rows as a MIDI file (times kept in seconds; `bpm` only sets the grid)."""
    return write_midi(path, *notes_to_ticks(notes, bpm), bpm=bpm)


# --- training (Lightning; the producer functions above do not need it) ----------------------

import pytorch_lightning as pl  # noqa: E402  (training path only)

from midigen.train.module import StagedSteps  # noqa: E402


class NoteWindowDataModule(pl.LightningDataModule):
    """Windows of `window` notes -> the next note, over the train / val / test files."""

    def __init__(self, root: str, window: int = 20, batch_size: int = 64, eval_batch_size: int | None = None,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, max_file_tokens: int | None = None,
                 styles: list[str] | None = None, max_files: int | None = None, num_workers: int = 0,
                 seed: int = 0):
        super().__init__()
        if batch_size < 1:
            raise MidigenError(f"data.batch_size={batch_size} must be at least 1")
        self.root, self.window, self.batch_size = root, window, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_fraction, self.test_fraction, self.max_file_tokens = val_fraction, test_fraction, max_file_tokens
        self.styles, self.max_files, self.num_workers, self.seed = styles, max_files, num_workers, seed
        self.corpus: NoteCorpus | None = None

    def load_corpus(self) -> NoteCorpus:
        if self.corpus is None:
            self.corpus = load_note_corpus(self.root, self.val_fraction, self.test_fraction, self.max_file_tokens,
                                           self.styles, self.max_files)
            if not window_starts(self.corpus.split("train"), self.window).size:
                raise MidigenError(f"corpus {self.root} has no training file longer than {self.window} notes")
        return self.corpus

    def setup(self, stage: str | None = None) -> None:
        corpus = self.load_corpus()
        self.train_set, self.val_set, self.test_set = (NoteWindows(corpus, corpus.split(s), self.window)
                                                       for s in ("train", "val", "test"))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.eval_batch_size, num_workers=self.num_workers)


class NoteRegressionModule(StagedSteps):
    """MSE on the next note; logs `{train,val,test}/mse` and each feature's share (`val/mse_pitch`, ...)."""

    def __init__(self, model: dict, optim: dict):
        super().__init__()
        self.save_hyperparameters(logger=False)  # note_regression_job hands run_job the params it reads
        self.net = NoteLSTM(NoteModelConfig.from_dict(model))

    def forward(self, notes: torch.Tensor) -> torch.Tensor:
        return self.net(notes)

    def _step(self, batch, stage: str) -> torch.Tensor:
        notes, target = batch  # (B, W, 3), (B, 3)
        squared = (self.net(notes) - target) ** 2  # (B, 3)
        loss = squared.mean()  # Keras's MSE: over the batch and the three features
        on_step = stage == "train"
        self.log(f"{stage}/mse", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=notes.shape[0])
        for i, name in enumerate(FEATURES):
            self.log(f"{stage}/mse_{name}", squared[:, i].mean(), on_step=False, on_epoch=True,
                     batch_size=notes.shape[0])
        return loss

    def configure_optimizers(self):
        from hydra.utils import instantiate

        return instantiate(self.hparams.optim)(self.parameters())


def primers(corpus: NoteCorpus, window: int, num: int, seed: int) -> list[np.ndarray]:
    """`num` primer windows drawn from the val files (the train files when val is too short)."""
    rng = np.random.default_rng(seed)
    starts = window_starts(corpus.split("val"), window)
    if not starts.size:
        starts = window_starts(corpus.split("train"), window)
    picks = rng.choice(starts, size=num, replace=starts.size < num)
    return [corpus.notes[s: s + window] for s in picks.tolist()]


def train_note_regression(cfg) -> dict:  # noqa: ANN001 (a Hydra DictConfig)
    """`midigen train experiment=seed_approach1`: one run of `note_regression_job` through
    `midigen.train.run.run_job`, the lifecycle every task shares. Returns its final metrics.

    Reads `note_model`, `note_samples`, `data` (root, batch sizes, split fractions, styles,
    max_files, max_file_tokens), `optim`, `trainer`, `callbacks.checkpoint.monitor` and
    `callbacks.early_stopping`, `logger`. Writes the best checkpoint and 8 MIDI files under
    `samples/final/` of the run folder and logs them to the run.
    """
    from midigen.train.run import run_job

    return run_job(cfg, note_regression_job)


def note_regression_job(cfg, run_dir: Path):  # noqa: ANN001, ANN201 (a DictConfig -> a run.Job)
    """The first approach as a `run.Job`: note windows, `NoteRegressionModule`, the best-MSE
    checkpoint; once tested, the seed's 50-note continuations of val primers as MIDI."""
    from omegaconf import OmegaConf
    from pytorch_lightning.callbacks import ModelCheckpoint

    from midigen.train.callbacks import StopReason
    from midigen.train.run import Job

    if cfg.get("ckpt_path"):
        raise MidigenError("ckpt_path: resuming is not supported for task=note_regression; start a new run")
    container = OmegaConf.to_container(cfg, resolve=True)
    data, samples_cfg = container["data"], container["note_samples"]
    model_config = NoteModelConfig.from_dict(container["note_model"])
    datamodule = NoteWindowDataModule(
        root=data["root"], window=model_config.window, batch_size=data["batch_size"],
        eval_batch_size=data.get("eval_batch_size"), val_fraction=data["val_fraction"],
        test_fraction=data["test_fraction"], max_file_tokens=data.get("max_file_tokens"), styles=data.get("styles"),
        max_files=data.get("max_files"), num_workers=data.get("num_workers", 0), seed=cfg.seed)
    corpus = datamodule.load_corpus()  # bad data fails here, before the run exists
    module = NoteRegressionModule(model=model_config.to_dict(), optim=container["optim"])
    monitor = cfg.callbacks.checkpoint.monitor
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor=monitor, mode="min", save_top_k=1,
                                 save_last=False, filename="epoch{epoch:03d}-mse{val/mse:.4f}",
                                 auto_insert_metric_name=False)
    # Only what this task reads: the event model's settings would mislead in the run's params.
    used = {k: container[k] for k in ("task", "seed", "note_model", "note_samples", "optim", "trainer")}
    used["data"] = {k: data.get(k) for k in ("root", "batch_size", "eval_batch_size", "val_fraction",
                                              "test_fraction", "max_file_tokens", "styles", "max_files")}

    def finish(results: dict, client, run_id: str) -> None:  # noqa: ANN001
        folder = run_dir / "samples" / "final"
        folder.mkdir(parents=True, exist_ok=True)
        module.net.cpu()
        written = {}
        for i, primer in enumerate(primers(corpus, model_config.window, samples_cfg["num_files"], cfg.seed)):
            notes = generate_notes(module.net, primer, samples_cfg["num_notes"], samples_cfg["min_duration"])
            path = write_notes(folder / f"approach1_{i:02d}.mid", notes, bpm=samples_cfg["bpm"])
            written[path.name] = notes.tolist()
        (folder / "notes.json").write_text(json.dumps({"features": FEATURES, "files": written}))
        client.log_artifacts(run_id, str(folder), "samples/final")
        print(f"midigen: run {run_id} ({cfg.logger.experiment_name}) seed approach 1; "
              f"val/mse {results.get('val/best_mse')}, test/mse {results.get('test/mse')}")
        print(f"midigen: samples in {folder}")

    return Job(name="seed_approach1", datamodule=datamodule, corpus=corpus, module=module, checkpoint=checkpoint,
               callbacks=[checkpoint, StopReason()],  # StopReason: why fitting ended, the run's `stopped` tag
               monitor=monitor, params=used, dataset={**corpus.summary(), "skipped_files": corpus.skipped},
               finish=finish, tags={"task": "note_regression", "model": "seed_approach1"}, resumable=False)
