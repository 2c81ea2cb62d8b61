"""A model bundle: everything needed to generate, with no training code.

A bundle is a folder:

    model.safetensors   weights (never a pickle)
    tokenizer.json      the tokenizer's parameters (miditok's JSON)
    config.json         {"model": ModelConfig, "styles": [...], "run": {...}, "metrics": {...}}
    originality.npz     n-gram index of the training corpus (when built)
    style_classifier.json  the style classifier fitted on the training split (when built)
    MODEL_CARD.md       what it was trained on, its figures, the commit

`resolve_model` turns what a producer types after `--model` into a local bundle (or
checkpoint): a bundle folder, a pulled MLflow model folder, a Lightning checkpoint,
or `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/NAME/latest`, `runs:/ID/model`
(downloaded once into the cache; only these import mlflow).
"""

from __future__ import annotations

import json
import os
import re
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


# --- registry URIs -----------------------------------------------------------------------

_URI = re.compile(r"^(models|runs):/")


def is_registry_uri(ref: str) -> bool:
    return bool(_URI.match(ref))


def cache_dir() -> Path:
    return Path(os.environ.get("MIDIGEN_CACHE", Path.home() / ".cache" / "midigen")) / "models"


def resolve_model(ref: str) -> Path:
    """A `--model` value -> a local path `load_bundle` takes (downloading registry models once)."""
    if not is_registry_uri(ref):
        return Path(ref).expanduser()
    return _download(ref)


def _download(ref: str, dest_parent: Path | None = None) -> Path:
    from midigen.tracking import check_reachable, tracking_uri

    uri = tracking_uri()
    check_reachable(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    try:
        key, source = _pin(ref, client)
    except MlflowException as exc:
        raise MidigenError(f"{ref}: not found in the registry at {uri} ({_mlflow_reason(exc)})") from None
    dest = (dest_parent or cache_dir()) / key
    if (dest / "artifacts" / "bundle" / CONFIG).exists() or (dest / CONFIG).exists():
        return dest
    tmp = dest.with_name(dest.name + f".part{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp))
    except MlflowException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MidigenError(f"{ref}: could not download ({_mlflow_reason(exc)})") from None
    # download_artifacts puts the model folder inside dst_path under its own name
    inner = [p for p in tmp.iterdir() if p.is_dir()]
    root = inner[0] if len(inner) == 1 and not (tmp / "MLmodel").exists() else tmp
    if dest.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return dest
    root.rename(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _pin(ref: str, client) -> tuple[str, str]:  # noqa: ANN001
    """(cache key, immutable source URI) for a registry/run URI; aliases resolve to versions."""
    if ref.startswith("runs:/"):
        run_id = ref[len("runs:/"):].split("/")[0]
        client.get_run(run_id)  # raises if unknown
        return f"run-{run_id}", ref
    body = ref[len("models:/"):]
    if "@" in body:
        name, alias = body.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
    else:
        name, _, version = body.partition("/")
        if version in ("", "latest"):
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise MidigenError(f"{ref}: no versions registered under {name!r}; train one with `make train`")
            mv = max(versions, key=lambda v: int(v.version))
        else:
            mv = client.get_model_version(name, version)
    return f"{_safe(name)}-{mv.version}", f"models:/{name}/{mv.version}"


def pull_model(ref: str, out: Path) -> Path:
    """Download a registered model into `out/<name>-<version>` for offline generation."""
    if not is_registry_uri(ref):
        raise MidigenError(f"{ref}: pull takes models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/model")
    path = _download(ref, Path(out).expanduser())
    load_bundle(path)  # fail now, not at generation time, if it is not a midigen model
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _mlflow_reason(exc: Exception) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return msg.strip().splitlines()[0][:200]
