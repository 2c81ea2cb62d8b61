"""Training callbacks: MIDI samples every N epochs, fresh windows every epoch, clean interrupts.

`SamplingCallback` writes K MIDI files with the current weights through the producer's
own generator, a piano roll of each, optionally a WAV of each (the producer's built-in
piano), their musical metrics (and copy ratio against the training corpus) and an
`index.html` that shows them together, and logs them to the MLflow run under
`samples/epoch_XXX/`.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from midigen.producer.bundle import Bundle
from midigen.producer.generate import generate_batch
from midigen.producer.request import GenerateRequest

log = logging.getLogger(__name__)

AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}  # suffix: MIME type
SAMPLE_METRICS = ("in_scale", "on_grid", "on_beat", "stuck_ratio", "repetition_half", "pitch_range",
                  "opening_distance", "polyphony", "note_density", "hanging_notes")


class EpochWindows(pl.Callback):
    """Tell the data which epoch it is (new windows, a new shuffle) and reseed the RNGs for it.

    Every random draw of epoch e - windows, shuffle, dropout - is then a function of
    (seed, e, rank), whatever ran before: a run resumed from an epoch's last.ckpt trains the
    next epochs exactly as the uninterrupted run would (Lightning does not save RNG states).
    """

    def __init__(self, seed: int = 0):
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import random

        import torch

        epoch = trainer.current_epoch
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(epoch)
        seed = int(np.random.SeedSequence([self.seed, epoch, trainer.global_rank]).generate_state(1)[0])
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)


class SamplingCallback(pl.Callback):
    def __init__(self, out_dir: str | Path, every_n_epochs: int = 1, request: dict | None = None,
                 index_path: str | Path | None = None, reference_path: str | Path | None = None, seed: int = 0,
                 audio: bool = False,
                 audio_sample_rate: int | None = None, audio_format: str = "wav"):
        """`request`: the fields of the producer's `GenerateRequest` that differ from its defaults
        (conf/callbacks/: num 4, bars 8), checked now; `seed` is the run's. `audio`: a recording
        of each sample beside it (the producer's built-in piano, mono, `audio_sample_rate` Hz,
        None: the producer's default; `audio_format` wav, or mp3/flac/ogg with the soundfile
        package), played by the epoch's index.html. conf/callbacks/ sets these for training runs."""
        from midigen.errors import MidigenError
        from midigen.producer.request import RequestError

        self.out_dir = Path(out_dir)
        self.every = every_n_epochs
        try:
            self.request = GenerateRequest.from_fields({**(request or {}), "seed": seed})
        except RequestError as exc:
            raise MidigenError(f"callbacks.sampling.request.{exc.field}={exc.value!r}: {exc.reason}") from None
        self.index_path = Path(index_path) if index_path else None
        self.reference_path = Path(reference_path) if reference_path else None  # real excerpts: the usable bound
        self.audio = audio
        self.audio_sample_rate = audio_sample_rate
        if audio:
            from midigen.producer.audio import check_format

            audio_format = check_format(audio_format)  # a missing soundfile fails now, not after epoch 1
        self.audio_format = audio_format
        self.history: list[dict] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = epoch + 1 >= (trainer.max_epochs or 0) or trainer.should_stop
        if self.every <= 0 or not trainer.is_global_zero or ((epoch + 1) % self.every and not last):
            return
        self.write_samples(trainer, pl_module, epoch)

    def write_samples(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> dict:
        from midigen.data.midi_io import TICKS_PER_BEAT
        from midigen.evaluation.pianoroll import pianoroll_from_notes
        from midigen.producer.report import judge

        folder = self.out_dir / f"epoch_{epoch:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        was_training = pl_module.training
        bundle = Bundle(pl_module.net, pl_module.params, {}, folder)
        try:
            results = generate_batch(bundle, self.request.but(name=f"epoch{epoch:03d}"))
        finally:
            pl_module.train(was_training)
        index = self._index()
        reference = (json.loads(self.reference_path.read_text())
                     if self.reference_path is not None and self.reference_path.exists() else None)
        verdict = judge(results, self.request, bundle, reference)  # each file: its metrics and whether usable
        rows, reasons = {}, {}
        for r in results:
            on, off, pitch = r["notes"]
            (folder / r["name"]).write_bytes(r["midi"])
            pianoroll_from_notes(on, off, pitch, TICKS_PER_BEAT, folder / r["name"].replace(".mid", ".png"),
                                 title=f"epoch {epoch} {r['name']}")
            if self.audio:
                from midigen.producer.audio import DEFAULT_SAMPLE_RATE, render_midi_file

                # The built-in piano, whatever is installed: the same sound on every machine and run.
                render_midi_file(folder / r["name"], renderer="builtin", fmt=self.audio_format,
                                 sample_rate=self.audio_sample_rate or DEFAULT_SAMPLE_RATE)
            judged = verdict["files"][r["name"]]
            row = {k: judged[k] for k in SAMPLE_METRICS if judged.get(k) is not None}
            row["usable"] = float(judged["usable"])
            reasons[r["name"]] = judged["reasons"]
            if index is not None:
                row["copy_ratio"] = index.check_notes(on, pitch, TICKS_PER_BEAT)["copy_ratio"]
            rows[r["name"]] = row
        keys = [k for k in (*SAMPLE_METRICS, "usable", "copy_ratio") if rows and k in next(iter(rows.values()))]
        mean = {k: float(np.mean([float(row[k]) for row in rows.values()])) for k in keys}
        (folder / "metrics.json").write_text(json.dumps({"files": rows, "mean": mean, "reasons": reasons,
                                                         "worst": verdict["worst"], "basis": verdict["basis"]},
                                                        indent=2, default=float))
        write_samples_page(folder, f"Samples after epoch {epoch}", rows, mean)
        if trainer.logger is not None:
            trainer.logger.log_metrics({f"sample/{k}": v for k, v in mean.items()}, step=trainer.global_step)
            run_id = getattr(trainer.logger, "run_id", None)
            if run_id:
                trainer.logger.experiment.log_artifacts(run_id, str(folder), f"samples/{folder.name}")
        self.history.append({"epoch": epoch, **mean})
        return mean

    def last_on_disk(self) -> dict:
        """The newest epoch's mean sample metrics from disk (`history` stays in a ddp_spawn worker)."""
        newest = sorted(self.out_dir.glob("epoch_*/metrics.json"))
        if not newest:
            return {}
        return {"epoch": int(newest[-1].parent.name.split("_")[1]), **json.loads(newest[-1].read_text())["mean"]}

    def _index(self):  # noqa: ANN202
        if self.index_path is None or not self.index_path.exists():
            return None
        from midigen.evaluation.originality import OriginalityIndex

        return OriginalityIndex.load(self.index_path)


def write_samples_page(folder: Path, title: str, rows: dict[str, dict], mean: dict) -> Path:
    """`folder/index.html`: each sample's piano roll, a player for its recording (where one
    was written: .wav, .mp3, .flac or .ogg) and its metrics, and the batch's mean metrics.

    The pictures and sounds are embedded as data: URIs rather than linked: the MLflow UI
    shows an HTML artifact from a blob: URL, against which no relative link resolves, so
    only a self-contained page plays inside its artifact view (and still does when the folder
    is downloaded or the page is mailed on its own). The page is about 1.4x its recordings and PNGs.
    """
    keys = [k for k in (*SAMPLE_METRICS, "usable", "copy_ratio") if rows and k in next(iter(rows.values()))]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)

    def cells(row: dict) -> str:
        return "".join(f"<td>{float(row[k]):.3g}</td>" for k in keys)

    def embedded(path: Path, mime: str) -> str:
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"

    sections = []
    for name, row in rows.items():
        stem = Path(name).stem
        png = folder / f"{stem}.png"
        parts = [f"<h2>{html.escape(name)}</h2>"]
        if png.is_file():
            parts.append(f'<img src="{embedded(png, "image/png")}" alt="piano roll of {html.escape(name)}">')
        for sound in (folder / f"{stem}.{fmt}" for fmt in AUDIO_TYPES):
            if sound.is_file():
                player = embedded(sound, AUDIO_TYPES[sound.suffix[1:]])
                parts.append(f'<p><audio controls preload="metadata" src="{player}"></audio> '
                             f"{html.escape(sound.name)}</p>")
        parts.append(f"<table><tr>{head}</tr><tr>{cells(row)}</tr></table>")
        sections.append("<section>" + "\n".join(parts) + "</section>")
    summary = f"<table><tr><th></th>{head}</tr><tr><th>mean of {len(rows)}</th>{cells(mean)}</tr></table>"
    body = "\n".join(sections)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; margin: 0.4em 0; }}
th, td {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; font-size: 0.9em; }}
img {{ max-width: 100%; display: block; }}
audio {{ vertical-align: middle; }}
section {{ margin-bottom: 2em; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
{summary}
{body}
</body></html>
"""
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


class StopReason(pl.Callback):
    """Why fitting ended (epochs done, early stop, time limit), as the MLflow run's tag `stopped`.

    Decided where training ran: under ddp_spawn that is the rank-0 worker, whose trainer
    state (epochs, early stopping) never comes back to the main process.
    """

    def __init__(self):
        self.reason: str | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.reason = why_stopped(trainer)
        run_id = getattr(trainer.logger, "run_id", None)
        if run_id:
            trainer.logger.experiment.set_tag(run_id, "stopped", self.reason)


def why_stopped(trainer: pl.Trainer) -> str:
    """One line on why `trainer.fit` returned (current_epoch counts finished epochs by then)."""
    if trainer.max_epochs and trainer.current_epoch >= trainer.max_epochs:
        return f"completed {trainer.max_epochs} epochs"
    for cb in trainer.callbacks:
        if type(cb).__name__ == "EarlyStopping" and getattr(cb, "stopped_epoch", 0):
            return f"early-stopped at epoch {cb.stopped_epoch} ({cb.monitor} stopped improving)"
        if type(cb).__name__ == "Timer" and cb.time_remaining() is not None and cb.time_remaining() <= 0:
            return f"cut short by trainer.max_time after {trainer.current_epoch} epochs"
    return f"stopped after {trainer.current_epoch} epochs"


class InterruptGuard(pl.Callback):
    """On Ctrl-C or SIGTERM while fitting, save `last.ckpt` so `ckpt_path=last` can resume.

    The checkpoint is taken mid-epoch: resuming from it restarts that epoch's windows.
    """

    def __init__(self, checkpoint_dir: str | Path):
        self.checkpoint_dir = Path(checkpoint_dir)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.trainer.states import TrainerFn
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        stopped = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        if stopped and trainer.state.fn == TrainerFn.FITTING and trainer.is_global_zero:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(str(self.checkpoint_dir / "last.ckpt"))
            log.warning("interrupted: saved %s; resume with ckpt_path=last", self.checkpoint_dir / "last.ckpt")
