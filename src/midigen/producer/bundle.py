"""A model bundle: everything needed to generate, with no training code.

A bundle is a folder:

    model.safetensors   weights (never a pickle)
    tokenizer.json      the tokenizer's parameters (miditok's JSON)
    config.json         {"model": ModelConfig, "styles": [...], "run": {...}, "metrics": {...}}
    originality.npz     n-gram index of the training corpus (when built)
    style_classifier.json  the style classifier fitted on the training split (when built)
    MODEL_CARD.md       what it was trained on, its figures, the commit

Where a `--model` value comes from (registry URIs, the download cache, the default model)
is `midigen.producer.registry`; this module only reads and writes the folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from midigen.errors import MidigenError
from midigen.data.events import EventParams, load_params
from midigen.model import EventLSTM, ModelConfig

WEIGHTS, TOKENIZER, CONFIG, INDEX, CARD = (
    "model.safetensors", "tokenizer.json", "config.json", "originality.npz", "MODEL_CARD.md")
STYLE_CLASSIFIER = "style_classifier.json"


@dataclass
class Bundle:
    model: EventLSTM
    params: EventParams
    meta: dict
    path: Path

    @property
    def styles(self) -> list[str]:
        return list(self.model.config.styles)

    @property
    def index_path(self) -> Path | None:
        p = self.path / INDEX if self.path.is_dir() else None
        return p if p is not None and p.exists() else None

    @property
    def style_classifier(self):  # noqa: ANN201 - a StyleClassifier, or None where the bundle has none
        """The style classifier fitted on the model's training split (what `--style-of` asks)."""
        p = self.path / STYLE_CLASSIFIER if self.path.is_dir() else None
        if p is None or not p.exists():
            return None
        from midigen.evaluation.style import StyleClassifier

        return StyleClassifier.load(p)


def save_bundle(out_dir: str | Path, model: EventLSTM, tokenizer_json: str | Path, meta: dict | None = None,
                half: bool = False) -> Path:
    """Write a bundle folder. `half` stores fp16 weights (loaded back as fp32)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(out / WEIGHTS))
    if Path(tokenizer_json).resolve() != (out / TOKENIZER).resolve():
        shutil.copyfile(tokenizer_json, out / TOKENIZER)
    config = {"model": model.config.to_dict(), **(meta or {})}
    (out / CONFIG).write_text(json.dumps(config, indent=2, default=str))
    return out


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle folder, an MLflow model folder holding one, or a Lightning checkpoint."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        return _load_checkpoint(path)
    folder = find_bundle_dir(path)
    from safetensors.torch import load_file

    meta = json.loads((folder / CONFIG).read_text())
    config = ModelConfig.from_dict(meta["model"])
    model = EventLSTM(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(folder / WEIGHTS)).items()}
    model.load_state_dict(state)
    return Bundle(model.eval(), load_params(folder / TOKENIZER), meta, folder)


def find_bundle_dir(path: Path) -> Path:
    if not path.exists():
        raise MidigenError(f"model {path} does not exist: pass a model folder, a .ckpt, or "
                           "models:/NAME@ALIAS (see `midigen models pull`)")
    for candidate in (path, path / "artifacts" / "bundle", path / "bundle"):
        if (candidate / CONFIG).exists() and (candidate / WEIGHTS).exists():
            return candidate
    raise MidigenError(f"{path} is not a midigen model folder (no {CONFIG} + {WEIGHTS}); "
                       "pull one with `midigen models pull models:/midigen@champion`")


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint's contents, loaded as data only (`weights_only`).

    A checkpoint that would run code while loading (a pickled object) or is not a
    checkpoint at all is a MidigenError naming the file.
    """
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's text is a paragraph about weights_only; keep the line that says what was wrong.
        noise = ("Weights only load failed", "Please file an issue", "Check the documentation")
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if not line.startswith(noise)), lines[0] if lines else type(exc).__name__)
        raise MidigenError(f"{path}: not a loadable checkpoint ({reason[:200]}); only checkpoints holding "
                           "plain data load, never code") from None


def _load_checkpoint(path: Path) -> Bundle:
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters", {})
    if "model" not in hp or "tokenizer" not in hp:
        raise MidigenError(f"{path}: not a midigen training checkpoint (no model/tokenizer hyper-parameters)")
    config = ModelConfig.from_dict(hp["model"])
    model = EventLSTM(config)
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    model.load_state_dict(state)
    return Bundle(model.eval(), EventParams.from_dict(hp["tokenizer"]), {"model": config.to_dict()}, path)
