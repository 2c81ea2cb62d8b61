"""What a finished run leaves for producers: the model bundle, its card, the MLflow model and
its registered version.

The bundle (safetensors weights + tokenizer JSON + config + originality index + card) is
what `midigen generate` loads; `log_model` logs it as an MLflow pyfunc model (models from
code, the package as code_paths: nothing is unpickled on load), registers a new version
and moves the alias (`@champion`) when asked to and, with `promote=if_better`, only when
the new version scores better on the same validation data.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path
from types import UnionType
from typing import Union, get_args, get_origin, get_type_hints

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from midigen.data.events import EventParams
from midigen.data.tokenizer import OoreTokenizer
from midigen.evaluation.originality import OriginalityIndex
from midigen.evaluation.style import fit_from_corpus, held_out_accuracy
from midigen.producer.bundle import CARD, INDEX, REFERENCE, STYLE_CLASSIFIER, save_bundle
from midigen.producer.request import GenerateRequest
from midigen.train.config import git_commit

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def save_tokenizer(params: dict, out_dir: Path) -> None:
    OoreTokenizer.from_params(EventParams.from_dict(params)).save(out_dir)

def build_originality_index(corpus, datamodule, index_path: Path) -> None:  # noqa: ANN001
    """The originality index of the training split, saved with the model."""
    root = Path(datamodule.root)
    train = corpus.split("train")
    index = OriginalityIndex.from_files([root / f["rel"] for f in train], names=[f["rel"] for f in train])
    # held-out real music sets the default bound for `midigen generate --max-copy`
    reference = index.calibrate([root / f["rel"] for f in corpus.split("val")])
    log.info("originality: %d training files indexed; held-out copy ratio mean %.3f, default max-copy %.2f",
             len(train), reference["copy_ratio_mean"], reference["max_copy"])
    index.save(index_path)

def fit_style_classifier(corpus, datamodule, options: dict | None, out_path: Path) -> dict | None:  # noqa: ANN001
    """Fit the style classifier on the training split's excerpts and save it to `out_path`.

    Returns {style: accuracy on the validation split's excerpts} (the ceiling a generated
    clip's style fidelity is compared with), or None when there is nothing to tell apart
    (fewer than two styles) or `options` is None."""
    if not options or len(corpus.styles) < 2:
        return None
    splits = {f["rel"]: name for name in ("train", "val", "test") for f in corpus.split(name)}
    root = Path(datamodule.root)
    classifier = fit_from_corpus(root, splits=splits, styles=corpus.styles, bars=int(options.get("bars", 8)),
                                 per_file=int(options.get("per_file", 4)))
    classifier.save(out_path)
    accuracy = held_out_accuracy(classifier, root, split="val", splits=splits)
    log.info("style classifier: validation accuracy %s", ", ".join(f"{s} {a:.3f}" for s, a in accuracy.items()))
    return accuracy


def build_reference(corpus, datamodule, out_path: Path) -> dict:  # noqa: ANN001
    """What real 8-bar excerpts of each style score over the training split (`real_reference`),
    saved with the model: the on-beat bound of a "usable" generated file, per style."""
    from midigen.evaluation.reference import real_reference

    reference = real_reference(Path(datamodule.root), files=[f["rel"] for f in corpus.split("train")])
    out_path.write_text(json.dumps(reference, indent=1))
    log.info("reference: %d training windows in %.1f s; on-beat p5 %s", reference["all"]["windows"],
             reference["seconds"], ", ".join(f"{s} {r['metrics']['on_beat']['p5']:.2f}"
                                              for s, r in reference["styles"].items() if r["metrics"]["on_beat"]))
    return reference


def write_bundle(module, run_dir: Path, container: dict, corpus, results: dict, run_id: str,  # noqa: ANN001
                  sampling, index_path: Path, classifier_path: Path | None = None,
                  reference_path: Path | None = None, card_extra: str = "", meta_extra: dict | None = None) -> Path:
    """The model folder (`midigen.producer.bundle`): weights, tokenizer, config.json (`meta_extra`
    added to it, e.g. a fine-tune's sampling settings), index, classifier, reference and card."""
    bundle_dir = run_dir / "bundle"
    meta = {"run_id": run_id, "commit": git_commit(), "experiment": container["logger"]["experiment_name"],
            "model": module.net.config.to_dict(),
            "data": corpus.summary(), "metrics": {k: v for k, v in results.items() if isinstance(v, float)},
            "samples": last_samples(sampling), **(meta_extra or {})}
    save_bundle(bundle_dir, module.net, run_dir / "tokenizer" / "tokenizer.json", meta)
    if index_path.exists():
        shutil.copyfile(index_path, bundle_dir / INDEX)
    if classifier_path is not None and classifier_path.exists():
        shutil.copyfile(classifier_path, bundle_dir / STYLE_CLASSIFIER)
    if reference_path is not None and reference_path.exists():
        shutil.copyfile(reference_path, bundle_dir / REFERENCE)
    (bundle_dir / CARD).write_text(model_card(meta, container) + (f"\n{card_extra.strip()}\n" if card_extra else ""))
    return bundle_dir


def last_samples(sampling) -> dict:  # noqa: ANN001 - the run's SamplingCallback
    """The mean metrics of the run's last samples ({} where it wrote none): `usable` is the
    share of files usable as they are."""
    return sampling.history[-1] if sampling.history else sampling.last_on_disk()


def version_tags(styles: list[str], results: dict, samples: dict) -> dict:
    """Registry tags a team filters versions by, beside the score's (val_nll, tokenizer, val
    files and tokens): the styles it knows ("none": unconditioned), held-out NLL per note
    (comparable across tokenizers) and the usable share of the last samples."""
    tags = {"styles": ",".join(styles) or "none"}
    if results.get("val/nll_per_note") is not None:
        tags["val_nll_per_note"] = f"{results['val/nll_per_note']:.4f}"
    if samples.get("usable") is not None:
        tags["samples_usable"] = f"{samples['usable']:.3f}"
    return tags


def model_card(meta: dict, container: dict) -> str:
    """The model card (Markdown): styles, tokenizer, training data, held-out NLL, the musical
    metrics of its last samples, and how to generate with it. Written into the bundle
    (`MODEL_CARD.md`) and, on registration, into the registry's descriptions."""
    m, d = meta["metrics"], meta["data"]
    styles = d.get("styles") or []
    lines = [f"# midigen model ({meta['experiment']})", "",
             f"- Styles: {', '.join(styles) if styles else 'none (unconditioned)'}"
             + (" - name one with `--style NAME` or blend them: `--style a=0.5,b=0.5`" if styles else ""),
             f"- MLflow run: `{meta['run_id']}`, commit `{meta['commit']}`",
             f"- Data: {d['files']} files ({d['train_files']} train / {d['val_files']} val / {d['test_files']} test), "
             f"{d['skipped']} skipped",
             f"- Tokenizer: {container['tokenizer']['mode']} mode, vocab {meta['model']['vocab_size']}",
             f"- Model: {container['model']['num_layers']} x {container['model']['hidden_size']} LSTM, "
             f"{container['model']['input']} input",
             f"- Held-out NLL per event: val {m.get('val/best_nll', float('nan')):.4f}, "
             f"test {m.get('test/nll', float('nan')):.4f}; per note: test {m.get('test/nll_per_note', float('nan')):.3f}",
             ""]
    if meta["samples"]:
        lines.append("Musical metrics of the last epoch's samples: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in meta["samples"].items() if k != "epoch"))
        lines.append("")
    return "\n".join(lines) + "\n"


def generate_line(model_uri: str, styles: list[str]) -> str:
    """One `midigen generate` command for a registered model."""
    style = f" --style {styles[0]}" if styles else ""
    return f"midigen generate --model {model_uri}{style} --num 8 --bars 8 --bpm 120 --out ideas/"


def describe(client, name: str, version: str, card: str, styles: list[str], producer_ref: str | None,  # noqa: ANN001
             val_nll: float | None = None) -> None:
    """Put the model card in the version's description and, when producers now get this
    version (`producer_ref`: "@champion" after a promotion, "/latest" in a registry without
    aliases), in the registered model's too: the registry page shows what they get. The
    version's description opens with one plain line, what the registry's version list shows."""
    usage = f"\n## Generate\n\n```\n{generate_line(f'models:/{name}/{version}', styles)}\n```\n"
    summary = (f"{len(styles)} styles ({', '.join(styles)})" if styles else "no styles") + (
        f"; held-out val NLL {val_nll:.4f} nats/event" if val_nll is not None else "")
    client.update_model_version(name, version, description=summary + "\n\n" + card + usage)
    if producer_ref:
        head = (f"Event-token LSTMs that write MIDI starting points. Producers take `models:/{name}{producer_ref}`, "
                f"now version {version}; each version's description is its model card.\n\n")
        usage = f"\n## Generate\n\n```\n{generate_line(f'models:/{name}{producer_ref}', styles)}\n```\n"
        client.update_registered_model(name, description=head + card + usage)


# What a request's field takes as an inference param: its one Python type; anything else (a style's
# weights, a note range, "auto"-or-a-number) is the text the command line takes ("chorale=0.6,fiddle=0.4").
PARAM_TYPES = {int: "long", float: "double", str: "string", bool: "boolean"}


def request_params() -> list[tuple[str, str, object]]:
    """(name, MLflow type, default) of every request field a caller may set, from
    `GenerateRequest`'s fields (the one owner of the defaults) in their order; the primer,
    a clip rather than a setting, is the model's input instead."""
    hints = get_type_hints(GenerateRequest)
    out = []
    for f in fields(GenerateRequest):
        if f.metadata.get("internal") or not f.metadata.get("cli", True) or f.name == "primer":
            continue
        kinds = [t for t in (get_args(hints[f.name]) if get_origin(hints[f.name]) in (Union, UnionType)
                             else (hints[f.name],)) if t is not type(None)]
        kind = PARAM_TYPES.get(kinds[0], "string") if len(kinds) == 1 else "string"
        default = f.default if f.default is None or kind != "string" else str(f.default)
        out.append((f.name, kind, default))
    return out


def signature() -> ModelSignature:
    """The pyfunc's signature, what `mlflow models serve` checks a request against and the
    registry shows: input `primer` (optional: a MIDI clip to continue, as base64 text), every
    other request field an inference param with its type and default (`request_params`), and
    output one row per file, its `name` and `midi` (bytes; base64 in a served response)."""
    return ModelSignature(inputs=Schema([ColSpec("string", "primer", required=False)]),
                          outputs=Schema([ColSpec("string", "name"), ColSpec("binary", "midi")]),
                          params=ParamSchema([ParamSpec(name, kind, default) for name, kind, default in request_params()]))


def input_example(styles: list[str]) -> tuple[dict, dict]:
    """A small request to copy: two 4-bar clips with a fixed seed, in the model's first style."""
    params = {"num": 2, "bars": 4, "seed": 7, **({"style": styles[0]} if styles else {})}
    return {"primer": None}, params


def log_model(run_id: str, bundle_dir: Path, uri: str, registry_name: str | None,
              alias: str | None = None, promote: str = "always", score: dict | None = None,
              tags: dict | None = None) -> dict:
    """Log the bundle as an MLflow pyfunc model (models-from-code + our package as code_paths).

    The model loads anywhere with `mlflow.pyfunc.load_model(uri)`: no pickled objects,
    weights as safetensors. Registered under `registry_name` (a new version per run),
    with `alias` pointed at it when given: always, or with `promote="if_better"` only when
    `score` beats the alias's current holder (see `should_promote`). Returns {"model_uri",
    "version", "promoted", "promotion"}. The version is tagged with its run id, `score` and `tags`
    (`version_tags`).
    """
    mlflow.set_tracking_uri(uri)
    styles = json.loads((bundle_dir / "config.json").read_text())["model"].get("styles") or []
    package_dir = PACKAGE_DIR
    model_code = package_dir / "producer" / "pyfunc.py"
    with tempfile.TemporaryDirectory() as tmp:
        # code_paths copies the package; leave caches out of the artifact.
        code_copy = Path(tmp) / "midigen"
        shutil.copytree(package_dir, code_copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(model_code),
                artifacts={"bundle": str(bundle_dir)},
                code_paths=[str(code_copy)],
                pip_requirements=_requirements(),
                signature=signature(),
                input_example=input_example(styles),
            )
    result = {"model_uri": f"runs:/{run_id}/model", "version": None}
    if registry_name:
        version = mlflow.register_model(info.model_uri, registry_name)
        result["version"] = int(version.version)
        client = MlflowClient(uri)
        client.set_model_version_tag(registry_name, version.version, "run_id", run_id)
        for key, value in {**(score or {}), **(tags or {})}.items():
            client.set_model_version_tag(registry_name, version.version, key, str(value))
        promoted = False
        if alias:
            promoted, why = should_promote(client, registry_name, alias, score or {}, promote)
            if promoted:
                client.set_registered_model_alias(registry_name, alias, version.version)
            result.update(promoted=promoted, promotion=why)
        card_path = bundle_dir / CARD
        if card_path.exists():
            producer_ref = f"@{alias}" if alias and promoted else ("/latest" if not alias else None)
            val_nll = (score or {}).get("val_nll")
            describe(client, registry_name, version.version, card_path.read_text(), styles, producer_ref,
                     float(val_nll) if val_nll is not None else None)
    return result


# Tags that make two versions' validation scores comparable: same tokenizer, same val files.
COMPARABLE = ("tokenizer", "val_files", "val_tokens")


def should_promote(client, name: str, alias: str, score: dict, promote: str) -> tuple[bool, str]:  # noqa: ANN001
    """Whether a new version with `score` ({"val_nll", "tokenizer", "val_files", "val_tokens"})
    takes `alias`, and why, in a line.

    "always": yes. "if_better": yes when nothing holds the alias, when the holder was scored
    on other validation data or another tokenizer (its number means nothing here: the newest
    training wins), or when the new val_nll is lower; otherwise the alias stays.
    """
    if promote == "always":
        return True, f"@{alias} moved to the new version (registry.promote=always)"
    if promote != "if_better":
        raise ValueError(f"registry.promote={promote!r}: use always or if_better")
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return True, f"@{alias} was free"
    tags = holder.tags or {}
    if any(str(tags.get(k)) != str(score.get(k)) for k in COMPARABLE) or "val_nll" not in tags:
        return True, f"@{alias} v{holder.version} was scored on other data; the new version takes it"
    old, new = float(tags["val_nll"]), float(score["val_nll"])
    if new < old:
        return True, f"val/nll {new:.4f} beats @{alias} v{holder.version}'s {old:.4f}"
    return False, (f"val/nll {new:.4f} does not beat @{alias} v{holder.version}'s {old:.4f}; "
                   f"@{alias} stays (registry.promote=always to force)")


def _requirements() -> list[str]:
    from importlib.metadata import version

    pins = []
    for name in ("torch", "numpy", "mido", "safetensors", "symusic", "mlflow"):
        try:
            pins.append(f"{name}=={version(name)}" if name != "torch" else f"torch=={version(name).split('+')[0]}")
        except Exception:
            pins.append(name)
    return pins
