"""A model bundle: everything needed to generate, with no training code.

A bundle is a folder:

    model.safetensors   weights (never a pickle)
    tokenizer.json      the tokenizer's parameters (miditok's JSON)
    config.json         {"model": ModelConfig, "styles": [...], "run": {...}, "metrics": {...}}
    originality.npz     n-gram index of the training corpus (when built)
    style_classifier.json  the style classifier fitted on the training split (when built)
    reference.json      what real excerpts of each style score: the bound of a "usable" file (when built)
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
REFERENCE = "reference.json"  # what real music of each style scores per 8-bar excerpt (evaluation.reference)


@dataclass
class Bundle:
    model: EventLSTM
    params: EventParams
    meta: dict
    path: Path

    @property
    def styles(self) -> list[str]:
        return list(self.model.config.styles)

    def top_p(self, style=None, as_trained: bool = False) -> float:  # noqa: ANN001 - (S,) weights, or None
        """The nucleus mass for a request that sets none: the model's per-style settings
        (meta["sampling"]["top_p"], measured by `midigen models calibrate` or a fine-tune; DEFAULT_TOP_P
        for every other style), averaged by the request's style weights. `as_trained`: for a clip
        drawn at strength 0 (`--style-strength 0`, an interpolation), the masses chosen for that
        (meta["sampling"]["top_p_as_trained"], where `calibrate --joint` chose each mass with a
        strength; elsewhere the same)."""
        from midigen.producer.request import DEFAULT_TOP_P

        sampling = (self.meta or {}).get("sampling") or {}
        if as_trained and sampling.get("top_p_as_trained"):
            chosen = {**(sampling.get("top_p") or {}), **sampling["top_p_as_trained"]}
            return self._per_style("top_p", DEFAULT_TOP_P, style, chosen)
        return self._per_style("top_p", DEFAULT_TOP_P, style)

    def style_strength(self, style=None) -> float:  # noqa: ANN001 - (S,) style weights, or None (the even blend)
        """How far a request that sets no `--style-strength` leans into its style: the model's
        per-style settings (meta["sampling"]["style_strength"], measured by `midigen models
        calibrate`; DEFAULT_STYLE_STRENGTH for every other style), averaged by the style weights."""
        from midigen.producer.request import DEFAULT_STYLE_STRENGTH

        return self._per_style("style_strength", DEFAULT_STYLE_STRENGTH, style)

    def lean_from(self) -> torch.Tensor | None:
        """The blend a style leans away from (`SamplingOptions.lean_from`): the even blend of the
        styles in meta["sampling"]["lean_from"] as (S,) weights (a fine-tuned model names its
        base's styles there), or None for the even blend of all the model's styles."""
        names = ((self.meta or {}).get("sampling") or {}).get("lean_from")
        if not names:
            return None
        return torch.tensor([1.0 if s in names else 0.0 for s in self.styles], dtype=torch.float32)

    def _per_style(self, key: str, default: float, style, chosen: dict | None = None) -> float:  # noqa: ANN001
        if chosen is None:
            chosen = ((self.meta or {}).get("sampling") or {}).get(key) or {}
        styles = self.styles
        if not chosen or not styles:
            return default
        values = [float(chosen.get(s, default)) for s in styles]
        weights = [1.0] * len(styles) if style is None else [float(w) for w in style]
        total = sum(weights)
        return sum(w * v for w, v in zip(weights, values)) / total if total > 0 else default

    @property
    def index_path(self) -> Path | None:
        p = self.path / INDEX if self.path.is_dir() else None
        return p if p is not None and p.exists() else None

    @property
    def reference(self) -> dict | None:
        """The training corpus's real-excerpt reference (`real_reference`), or None where the bundle has none."""
        p = self.path / REFERENCE if self.path.is_dir() else None
        if p is None or not p.exists():
            return None
        return json.loads(p.read_text())

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
    """Load a bundle folder, an MLflow model folder holding one, or a Lightning checkpoint.

    The folder is checked as a whole before anything is built: each file readable and of the
    right shape (config, tokenizer, weights agreeing on sizes), sizes within MODEL_LIMITS; a
    bad one is one MidigenError naming the file and what is wrong."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        return _load_checkpoint(path)
    folder = find_bundle_dir(path)
    meta = _read_json_object(folder / CONFIG)
    config = _model_config(folder / CONFIG, meta.get("model"))
    params = _tokenizer(folder / TOKENIZER)
    if params.vocab_size != config.vocab_size:
        raise MidigenError(f"{folder}: {TOKENIZER} has {params.vocab_size} events but {CONFIG} a model of "
                           f"{config.vocab_size}: the files come from different models")
    mismatch = config.tokenizer_mismatch(params)
    if mismatch:
        raise MidigenError(f"{folder}: {mismatch}")
    _check_sampling(folder, meta, list(config.styles))
    model = EventLSTM(config)
    model.load_state_dict(_weights(folder / WEIGHTS, model))
    return Bundle(model.eval(), params, meta, folder)


def _check_sampling(folder: Path, meta: dict, styles: list[str]) -> None:
    """The per-style sampling settings `midigen models calibrate` and a fine-tune store
    ({"top_p": {style: mass}, "style_strength": {style: s}, "lean_from": [style]}): known styles,
    masses in (0, 1], strengths from 0 to MAX_STYLE_STRENGTH."""
    from midigen.producer.request import MAX_STYLE_STRENGTH, is_nucleus_mass, is_style_strength

    sampling = meta.get("sampling")
    if not sampling:
        return
    if not isinstance(sampling, dict) or not isinstance(sampling.get("top_p"), dict):
        raise MidigenError(f"{folder / CONFIG}: sampling.top_p must map styles to nucleus masses")
    checks = {"top_p": (is_nucleus_mass, "a mass in (0, 1]"), "top_p_as_trained": (is_nucleus_mass, "a mass in (0, 1]"),
              "style_strength": (is_style_strength, f"a strength from 0 to {MAX_STYLE_STRENGTH:g}")}
    lean_from = sampling.get("lean_from")
    if lean_from is not None and (not isinstance(lean_from, list) or not lean_from
                                  or not all(isinstance(s, str) and s in styles for s in lean_from)):
        raise MidigenError(f"{folder / CONFIG}: sampling.lean_from is {lean_from!r}, not a list of the model's styles")
    for key, (fits, words) in checks.items():
        chosen = sampling.get(key, {})
        if not isinstance(chosen, dict):
            raise MidigenError(f"{folder / CONFIG}: sampling.{key} must map styles to numbers")
        for style, value in chosen.items():
            if style not in styles:
                raise MidigenError(f"{folder / CONFIG}: sampling.{key} names {style!r}, not a style of the model")
            if not fits(value):
                raise MidigenError(f"{folder / CONFIG}: sampling.{key} of {style} is {value!r}, not {words}")


# Sizes a midigen model folder may declare (a larger one is a broken or hostile file, not a model:
# hidden 10^7 would ask for petabytes before anything could fail).
MODEL_LIMITS = {"vocab_size": (2, 100_000), "hidden_size": (1, 8192), "num_layers": (1, 16),
                "embedding_dim": (1, 8192), "style_dim": (1, 1024), "position_dim": (1, 1024),
                "position_grid": (1, 960), "position_bar_beats": (1, 64)}


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise MidigenError(f"{path}: unreadable ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    except ValueError as exc:
        raise MidigenError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise MidigenError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _model_config(path: Path, data: object) -> ModelConfig:
    if not isinstance(data, dict):
        raise MidigenError(f"{path}: no \"model\" settings; not a midigen model folder")
    for key, (low, high) in MODEL_LIMITS.items():
        value = data.get(key)
        if key in ("vocab_size", "hidden_size", "num_layers") and value is None:
            raise MidigenError(f"{path}: model.{key} is missing")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise MidigenError(f"{path}: model.{key}={value!r} is not a size a midigen model has ({low}-{high})")
    styles = data.get("styles", [])
    if not isinstance(styles, list) or not all(isinstance(s, str) for s in styles):
        raise MidigenError(f"{path}: model.styles must be a list of style names")
    try:
        return ModelConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise MidigenError(f"{path}: {str(exc).splitlines()[0]}") from None


def _tokenizer(path: Path) -> EventParams:
    data = _read_json_object(path)
    inner = data.get("config", {}).get("additional_params", {}) if "config" in data else data
    missing = [k for k in ("mode", "max_shift") if k not in (inner if isinstance(inner, dict) else {})]
    if missing:
        raise MidigenError(f"{path}: not a midigen tokenizer (no {', '.join(missing)}); the model folder is broken")
    try:
        params = load_params(path)
    except (TypeError, ValueError) as exc:
        raise MidigenError(f"{path}: {str(exc).splitlines()[0]}") from None
    if not 1 <= params.max_shift <= 10_000 or (params.mode == "beat" and not 1 <= params.grid <= 960):
        raise MidigenError(f"{path}: tokenizer sizes out of range (max_shift {params.max_shift}, grid {params.grid})")
    return params


def _weights(path: Path, model: EventLSTM) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise MidigenError(f"{path}: not readable weights ({str(exc).splitlines()[0][:120]})") from None
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise MidigenError(f"{path}: the weights do not fit {CONFIG}'s model "
                           f"({'missing ' + missing[0] if missing else 'unexpected ' + extra[0]})")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise MidigenError(f"{path}: {key} has shape {tuple(tensor.shape)}, {CONFIG}'s model needs "
                               f"{tuple(expected[key].shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise MidigenError(f"{path}: {key} holds NaN or infinite values")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


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
    config = _model_config(path, hp["model"])
    model = EventLSTM(config)
    state = {k[len("net."):]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("net.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise MidigenError(f"{path}: the weights do not fit its model ({str(exc).splitlines()[0][:160]})") from None
    return Bundle(model.eval(), EventParams.from_dict(hp["tokenizer"]), {"model": config.to_dict()}, path)
