"""Fine-tuning (`task=finetune`, `midigen finetune`): a model learns a producer's own style.

`finetune.base` (a registry URI, a model folder or the shipped model) is loaded with its
tokenizer and sizes, which the run keeps; its style embedding grows one row for
`finetune.style` (started at the mean of the others: the even blend), and every other weight
starts where the base left it. The new style is a folder of `data.root`
(`midigen data import DIR --style NAME` puts it there). What guards the base styles against
being forgotten is replay: `finetune.replay` of the training windows are drawn from the base
styles' own training files (their share by length), the rest from the new style's, and on
those windows the loss adds `finetune.distill` times the KL divergence from the frozen base
model's next-event distribution (distillation: the base styles keep how the base samples them,
not only what their files say). Validation
and test use the new style's held-out files and `finetune.held_out_per_style` held-out files of
each base style, so the run's val/nll watches both, and the model card reports the base styles'
held-out NLL per note before and after.

What travels with the model is updated: the originality index gains the new style's training
files (a producer is told when a clip copies one of their own), the style classifier is
refitted on the base styles' and the new style's training excerpts, and the real-excerpt
reference (the "usable" bound) gains the new style. After training, the new style's default
nucleus mass is chosen from `finetune.top_p_candidates` on generated clips (`producer.calibrate`:
heard as the style most often by the refitted classifier, no less usable), then its style strength
from `finetune.style_strengths`, and both are stored with the model beside the base's settings
(`Bundle.top_p`, `Bundle.style_strength`), with the base's styles as the blend every style leans
away from (`lean_from`: a base style leans as it did in the base model). The card names the base
model's version and run, the new files and the figures. A user's mistake (no base model, a style the base
knows, a style folder missing, sizes or tokenizer overridden, a registry name holding models
of another tokenizer) is one MidigenError before any MLflow run exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from midigen import tracking
from midigen.data.corpus import safe_name
from midigen.errors import MidigenError
from midigen.evaluation.originality import OriginalityIndex
from midigen.model import EventLSTM
from midigen.producer.bundle import Bundle, load_bundle
from midigen.producer.calibrate import calibrate, card_section, measured, settings
from midigen.producer.request import is_nucleus_mass, is_style_strength
from midigen.producer.registry import ModelSource, is_registry_uri, locate_model
from midigen.train import registration
from midigen.train.callbacks import SamplingCallback
from midigen.train.config import check_settings, config_errors
from midigen.train.heldout import files_nll
from midigen.train.module import EventLSTMModule
from midigen.train.run import Job, Leftovers, event_callbacks, finish_event_run, run_job

log = logging.getLogger(__name__)

# Overrides a fine-tune cannot honour: the base model fixes its tokenizer and its sizes.
KEPT_FROM_BASE = ("tokenizer", "model")


def finetune(cfg: DictConfig) -> dict:
    """Fine-tune, test, log and register one run. Returns its final metrics."""
    return run_job(cfg, finetune_job)


def load_base(ref: str | None) -> tuple[ModelSource, Bundle]:
    """The base model, located (a registry version is downloaded or taken from the cache) and loaded."""
    if not ref:
        raise MidigenError("finetune.base is not set: name the model to start from, e.g. "
                           "finetune.base=models:/midigen@champion or models/pretrained")
    try:
        source = locate_model(str(ref))
    except MidigenError as exc:
        raise MidigenError(f"finetune.base={ref}: {exc}") from None
    if not source.path.exists():
        raise MidigenError(f"finetune.base={ref}: no such model (a registry URI models:/NAME@ALIAS, "
                           "a model folder or a .ckpt)")
    try:
        bundle = load_bundle(source.path)
    except MidigenError as exc:
        raise MidigenError(f"finetune.base={ref}: {exc}") from None
    return source, bundle


def check_request(cfg: DictConfig, base: Bundle, overrides: list[str],
                  names: tuple[str, str] = ("finetune.style=", "finetune.base=")) -> str:
    """The new style's name, once everything a user can get wrong is checked (one line each).
    `names`: how the style and the base are named in messages (the CLI's `--style `, `--from `)."""
    style = cfg.finetune.style
    if not style:
        raise MidigenError("finetune.style is not set: name the style your files are, e.g. finetune.style=trap")
    style = str(style)
    style_name, base_name_ = names
    if safe_name(style) != style or style.startswith((".", "_")):
        raise MidigenError(f"{style_name}{style!r}: use letters, digits, '-' and '_' (a folder name)")
    if not base.styles:
        raise MidigenError(f"{base_name_}{cfg.finetune.base}: an unconditioned model (no styles) cannot learn "
                           "a style; start from a model with styles")
    if style in base.styles:
        raise MidigenError(f"{style_name}{style}: the base model already knows {style} "
                           f"(it knows {', '.join(base.styles)}); choose a new name")
    replay = cfg.finetune.replay
    if not isinstance(replay, (int, float)) or isinstance(replay, bool) or not 0 <= replay < 1:
        raise MidigenError(f"finetune.replay={replay}: a share of training windows in 0..1 (1 would never "
                           "show the new style)")
    scale = cfg.finetune.get("style_lr_scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 < scale <= 1000:
        raise MidigenError(f"finetune.style_lr_scale={scale}: a factor above 0 (1: the style embedding learns "
                           "at optim.lr)")
    distill = cfg.finetune.get("distill", 0.0)
    if not isinstance(distill, (int, float)) or isinstance(distill, bool) or not 0 <= distill <= 100:
        raise MidigenError(f"finetune.distill={distill}: a weight of 0 or more (0: replay alone guards the "
                           "base styles)")
    candidates = cfg.finetune.get("top_p_candidates") or []
    if not isinstance(candidates, (list, tuple, ListConfig)) or not all(is_nucleus_mass(c) for c in candidates):
        raise MidigenError(f"finetune.top_p_candidates={candidates}: a list of nucleus masses in (0, 1], "
                           "e.g. [0.9,0.95,1.0] ([]: the new style is sampled at 0.95)")
    strengths = cfg.finetune.get("style_strengths") or []
    if not isinstance(strengths, (list, tuple, ListConfig)) or not all(is_style_strength(s) for s in strengths):
        raise MidigenError(f"finetune.style_strengths={strengths}: a list of style strengths from 0, "
                           "e.g. [0,0.5,1] ([]: the new style is sampled as trained, strength 0)")
    calibration = cfg.finetune.get("calibration_files", 64)
    if not isinstance(calibration, int) or isinstance(calibration, bool) or not 0 <= calibration <= 128:
        raise MidigenError(f"finetune.calibration_files={calibration}: a number of files from 0 to 128")
    held = cfg.finetune.held_out_per_style
    if not isinstance(held, int) or isinstance(held, bool) or held < 0:
        raise MidigenError(f"finetune.held_out_per_style={held}: a whole number of files, 0 or more")
    check_overrides(overrides)
    return style


def check_overrides(overrides: list[str]) -> None:
    """Refuse an override of the tokenizer or the model's sizes (the base model fixes them)."""
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.split(".", 1)[0] in KEPT_FROM_BASE and key != "model.dropout":
            raise MidigenError(f"{override}: fine-tuning keeps the base model's tokenizer and sizes; "
                               "drop this override, or train from scratch with `midigen train`")


def check_registry_name(cfg: DictConfig, base: Bundle) -> None:
    """Refuse a registry name whose versions read another tokenizer: their scores and the alias
    would compare models that do not read the same events."""
    name = cfg.registry.name
    if not name:
        return
    uri = tracking.tracking_uri(cfg.logger.tracking_uri)
    tracking.ensure_store(uri)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        versions = MlflowClient(uri).search_model_versions(f"name='{name}'")
    except MlflowException:
        return  # no such registered model yet
    key = base.params.key()
    other = [v.version for v in versions if (v.tags or {}).get("tokenizer") not in (None, key)]
    if other:
        raise MidigenError(f"registry.name={name}: its version {other[0]} reads another tokenizer than the base "
                           f"model; register the fine-tuned model under another name (--register NAME)")


def grown_model(base: Bundle, style: str, dropout: float | None = None) -> EventLSTM:
    """The base network with one more style: its new style row is the mean of the base rows (the
    even blend every base style's sampling starts from), every other weight the base's."""
    config = base.model.config.to_dict()
    config["styles"] = [*config["styles"], style]
    if dropout is not None:
        config["dropout"] = float(dropout)
    net = EventLSTM(type(base.model.config).from_dict(config))
    state = {k: v.clone() for k, v in base.model.state_dict().items()}
    rows = state["style_embedding.weight"]  # (S, D)
    state["style_embedding.weight"] = torch.cat([rows, rows.mean(0, keepdim=True)])  # (S + 1, D)
    net.load_state_dict(state)
    return net


def _order(rel: str) -> str:
    return hashlib.sha1(rel.encode("utf-8")).hexdigest()


def select_files(corpus, base_styles: list[str], style: str, held_out_per_style: int) -> list[dict]:  # noqa: ANN001
    """The files a fine-tune reads: all of the new style's, the base styles' training files
    (replayed) and `held_out_per_style` of each base style's val and test files (a fixed
    choice by path hash, the same on every run). Other styles of the corpus are left out."""
    keep = []
    for name in base_styles:
        mine = [f for f in corpus.files if f["style"] == name]
        keep += [f for f in mine if f["split"] == "train"]
        for split in ("val", "test"):
            held = sorted((f for f in mine if f["split"] == split), key=lambda f: _order(f["rel"]))
            keep += held[:held_out_per_style]
    keep += [f for f in corpus.files if f["style"] == style]
    return sorted(keep, key=lambda f: f["offset"])


def _weights(styles: list[str], style: str | None) -> torch.Tensor | None:
    """(1, S) one-hot weights of `style`, or the even blend (None: the model's own default)."""
    if style is None:
        return None
    w = torch.zeros(1, len(styles))
    w[0, styles.index(style)] = 1.0
    return w


def base_style_nll(net: EventLSTM, corpus, styles: list[str], split_files: list[dict]) -> dict:  # noqa: ANN001
    """{style: NLL per note of its held-out files in `split_files`, conditioned on it} and "all"
    (every style's files pooled, per note)."""
    rows, total, notes = {}, 0.0, 0
    for name in styles:
        files = [f for f in split_files if f["style"] == name]
        if not files:
            continue
        row = files_nll(net, corpus, files, _weights(list(net.config.styles), name))
        rows[name] = row["per_note"]
        if row["per_note"] is not None:
            total += row["per_note"] * row["notes"]
            notes += row["notes"]
    rows["all"] = total / notes if notes else None
    return rows


def finetune_corpus(datamodule, base: Bundle, style: str, replay: float, held_out_per_style: int):  # noqa: ANN001, ANN201
    """(the corpus a fine-tune reads, the base styles it holds): `select_files` of the DataModule's
    corpus, its styles in the model's order (the base's, then the new one), and an epoch of the
    new style's training tokens once plus the replayed windows (unless data.samples_per_epoch)."""
    with step(f"reading {datamodule.root} (new files are tokenized once)"):
        corpus = datamodule.load_corpus()
    if style not in corpus.styles:
        raise MidigenError(f"no style folder {style} in {datamodule.root}: add your files with "
                           f"`midigen data import DIR --style {style}` (or `midigen finetune DIR --style {style}`)")
    present = [s for s in base.styles if s in corpus.styles]
    if replay > 0 and not present:
        raise MidigenError(f"finetune.replay={replay}: none of the base model's styles ({', '.join(base.styles)}) "
                           f"is in {datamodule.root}; build them (`midigen data build`) or set finetune.replay=0")
    corpus.files = select_files(corpus, present, style, held_out_per_style)
    corpus.styles = [*base.styles, style]
    new_files = [f for f in corpus.files if f["style"] == style]
    if not any(f["split"] == "train" for f in new_files):
        raise MidigenError(f"style {style} has no training file after the split ({len(new_files)} files): "
                           "import more files")
    if datamodule.samples_per_epoch is None:
        tokens = sum(f["length"] for f in new_files if f["split"] == "train")
        datamodule.samples_per_epoch = max(1, int(tokens / datamodule.seq_len / max(1e-9, 1.0 - replay)))
    return corpus, present


def finetune_job(cfg: DictConfig, run_dir: Path) -> Job:
    """A fine-tune: the base model grown by a style, the producer's files with replayed base
    windows, the index, classifier and reference updated; once tested, the bundle (its card
    naming the base and the figures) and its registered version."""
    started = time.time()
    if cfg.ckpt_path:
        raise MidigenError("ckpt_path: a fine-tune does not resume; run it again (it takes minutes)")
    source, base = load_base(cfg.finetune.base)
    style = check_request(cfg, base, list(HydraConfig.get().overrides.task))
    check_registry_name(cfg, base)
    styles = [*base.styles, style]
    tokenizer = base.params.to_dict()
    replay = float(cfg.finetune.replay)

    index_path, reference_path = run_dir / "originality.npz", run_dir / "reference.json"
    options = OmegaConf.to_container(cfg.callbacks.sampling)  # the samples: the new style alone
    options["request"] = {**(options.get("request") or {}), "style": {style: 1.0}}
    sampling = SamplingCallback(run_dir / "samples", index_path=index_path, reference_path=reference_path,
                                seed=cfg.seed, **options)
    with config_errors("data"):
        datamodule = instantiate(cfg.data, tokenizer=tokenizer, style_shares={style: 1.0 - replay},
                                 _convert_="all")
    corpus, present = finetune_corpus(datamodule, base, style, replay, int(cfg.finetune.held_out_per_style))
    new_files = [f for f in corpus.files if f["style"] == style]

    container = OmegaConf.to_container(cfg, resolve=True)
    container["tokenizer"] = tokenizer
    container["model"] = {**base.model.config.to_dict(), "dropout": float(cfg.model.dropout)}
    with config_errors("model"):
        module = EventLSTMModule(model=container["model"], tokenizer=tokenizer, optim=container["optim"],
                                 scheduler=container.get("scheduler") or None, styles=styles,
                                 lr_scales={"net.style_embedding.weight": float(cfg.finetune.style_lr_scale)},
                                 distill=float(cfg.finetune.get("distill", 0.0)))
    module.net.load_state_dict(grown_model(base, style, cfg.model.dropout).state_dict())
    distill = float(module.hparams.distill) if replay > 0 else 0.0  # nothing replayed: nothing to distil
    if distill > 0:
        module.use_teacher(base.model)  # the replayed windows keep the base model's distributions

    held_out = [f for f in corpus.files if f["split"] in ("val", "test")]
    with step("scoring the base model on the held-out files"):
        before = {"base": base_style_nll(base.model, corpus, present, held_out),
                  "new_blend": files_nll(base.model, corpus, [f for f in held_out if f["style"] == style], None)}
    with step("adding the new files to the originality index and the real-excerpt reference"):
        _update_index(base, corpus, datamodule.root, style, index_path)
        _update_reference(base, corpus, datamodule.root, style, reference_path)
    classifier_path = run_dir / "style_classifier.json"
    with step(f"refitting the style classifier with {style}"):
        classifier_accuracy = registration.fit_style_classifier(
            replace(corpus, styles=[*present, style]), datamodule, container.get("style_classifier"), classifier_path)
    tok_dir = run_dir / "tokenizer"
    registration.save_tokenizer(tokenizer, tok_dir)
    checkpoint, callbacks = event_callbacks(cfg, run_dir, sampling)
    left = Leftovers(run_dir, sampling, index_path, classifier_path, reference_path)
    counts = {split: sum(f["split"] == split for f in new_files) for split in ("train", "val", "test")}
    base_ref = base_name(source)
    print(f"midigen: fine-tuning {source.describe()} on {len(new_files)} files of {style} "
          f"({counts['train']} train / {counts['val']} val / {counts['test']} test), {replay:.0%} of windows "
          f"replayed from {len(present)} base styles; {datamodule.samples_per_epoch} windows an epoch")

    def finish(results: dict, client, run_id: str) -> None:  # noqa: ANN001
        with step("scoring the fine-tuned model on the held-out files"):
            after = base_style_nll(module.net, corpus, present, held_out)
            new_after = files_nll(module.net, corpus, [f for f in held_out if f["style"] == style],
                                  _weights(styles, style))
        module.net.eval()
        candidates = [float(c) for c in cfg.finetune.get("top_p_candidates") or []]
        strengths = [float(s) for s in cfg.finetune.get("style_strengths") or []]
        files = int(cfg.finetune.get("calibration_files", 64))
        chosen = {}
        # Every style leans away from the base's blend (`SamplingOptions.lean_from`), not one that now
        # holds the new style: a base style leans as it did in the base model.
        lean = {"lean_from": lean_from(base)} if base.styles else {}
        if candidates and files and classifier_path.exists():
            with step(f"choosing the nucleus mass (--top-p) and style strength {style} is sampled with"):
                # the run folder holds what a bundle reads: the refitted classifier and the reference
                chosen = calibrate(Bundle(module.net, base.params, {"sampling": lean}, run_dir), [style], candidates,
                                   files, run_dir / "calibration", strengths=strengths)
        sampling = settings(chosen, base.meta.get("sampling"), files) if chosen or base.meta.get("sampling") else None
        if sampling is not None and lean:
            sampling.update(lean)
        figures = {"finetune/new_nll_per_note": new_after["per_note"],
                   "finetune/new_nll_per_note_base": before["new_blend"]["per_note"],
                   "finetune/base_nll_per_note_before": before["base"]["all"],
                   "finetune/base_nll_per_note_after": after["all"],
                   "finetune/minutes": (time.time() - started) / 60,
                   "finetune/peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if before["base"]["all"] and after["all"]:
            figures["finetune/forgetting"] = after["all"] / before["base"]["all"] - 1
        if chosen:
            figures["finetune/top_p"] = chosen[style]["top_p"]
            for p, row in chosen[style]["candidates"].items():
                figures[f"finetune/top_p_fidelity/{p:g}"] = row["fidelity"]
                figures[f"finetune/top_p_usable/{p:g}"] = row["usable"]
            if "style_strength" in chosen[style]:
                figures["finetune/style_strength"] = chosen[style]["style_strength"]
                for s, row in chosen[style]["strengths"].items():
                    figures[f"finetune/strength_fidelity/{s:g}"] = row["fidelity"]
                    figures[f"finetune/strength_usable/{s:g}"] = row["usable"]
        for key, value in figures.items():
            if value is not None:
                results[key] = float(value)
                client.log_metric(run_id, key, float(value))
        card = finetune_card(base_ref, source, style, counts, replay, figures, before["base"], after,
                             Path(datamodule.root) / style, [f["rel"].split("/", 1)[-1] for f in new_files],
                             distill=distill)
        if sampling:
            card += "\n" + card_section(measured(sampling), files)
        tags = {"base_model": base_ref, "base_run_id": source.run_id or base.meta.get("run_id") or "",
                "finetuned_style": style, "finetune_files": str(len(new_files))}
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        finish_event_run(cfg, module, corpus, container, left, results, client, run_id, card, tags,
                         {"sampling": sampling} if sampling else None)

    return Job(name=cfg.logger.experiment_name, datamodule=datamodule, corpus=corpus, module=module,
               checkpoint=checkpoint, callbacks=callbacks, monitor="val/nll", params=container,
               dataset=corpus.summary(), finish=finish, artifacts=[tok_dir / "tokenizer.json"],
               metrics={f"style_classifier/val_acc/{s}": a for s, a in (classifier_accuracy or {}).items()},
               tags={"task": "finetune", "base_model": base_ref, "finetuned_style": style}, resumable=False)


def base_name(source: ModelSource) -> str:
    """How the card and the registry name the base: its registered version, or its folder (inside
    the checkout, relative to it: no machine's path travels with a model)."""
    if source.name and source.version:
        return f"models:/{source.name}/{source.version}"
    try:
        return source.path.resolve().relative_to(tracking.repo_root().resolve()).as_posix()
    except ValueError:
        return source.path.name


@contextmanager
def step(what: str):
    """Print what a fine-tune is doing, then how long it took: a producer waits minutes."""
    print(f"midigen: {what}...", flush=True)
    started = time.time()
    yield
    print(f"midigen: {what}: {time.time() - started:.0f} s", flush=True)


def _update_index(base: Bundle, corpus, root: str, style: str, out: Path) -> None:  # noqa: ANN001
    """The base model's originality index plus the new style's training files (a new one of
    every training file where the base carries none)."""
    train = [f for f in corpus.split("train") if base.index_path is None or f["style"] == style]
    index = OriginalityIndex.load(base.index_path) if base.index_path else OriginalityIndex()
    for f in train:
        index.add_file(Path(root) / f["rel"], f["rel"])
    if index.reference is None:
        index.calibrate([Path(root) / f["rel"] for f in corpus.split("val")])
    index.save(out)


def lean_from(base: Bundle) -> list[str]:
    """The styles whose even blend a fine-tuned model's styles lean away from: the base's own
    (its `lean_from` where it was itself fine-tuned, else all its styles)."""
    return list(((base.meta or {}).get("sampling") or {}).get("lean_from") or base.styles)


def _update_reference(base: Bundle, corpus, root: str, style: str, out: Path) -> None:  # noqa: ANN001
    """The base model's real-excerpt reference with the new style's training windows added."""
    from midigen.evaluation.reference import real_reference

    mine = [f["rel"] for f in corpus.split("train") if f["style"] == style]
    reference = base.reference or real_reference(Path(root), files=[f["rel"] for f in corpus.split("train")])
    reference.setdefault("styles", {})[style] = real_reference(Path(root), files=mine)["styles"][style]
    out.write_text(json.dumps(reference, indent=1))


CARD_FILES = 20  # file names a card lists before "and N more"


def finetune_card(base_ref: str, source: ModelSource, style: str, counts: dict, replay: float, figures: dict,
                  before: dict, after: dict, folder: Path, names: list[str] | None = None, distill: float = 0.0) -> str:
    """The model card's fine-tuning section: the base, the new files, the figures."""
    def f(value, digits: int = 3) -> str:  # noqa: ANN001
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = ["## Fine-tuned", "",
             f"- Base model: `{base_ref}`" + (f" (asked: `{source.ref}`)" if is_registry_uri(source.ref)
                                              and source.ref != base_ref else "")
             + (f", run `{source.run_id}`" if source.run_id else ""),
             f"- New style `{style}`: {sum(counts.values())} files from `{folder.name}/` "
             f"({counts['train']} train / {counts['val']} val / {counts['test']} test); "
             f"generate it with `--style {style}` or blend it: `--style {style}=0.7,<base style>=0.3`",
             *([f"  - files: {', '.join(sorted(names)[:CARD_FILES])}"
                + (f" and {len(names) - CARD_FILES} more" if len(names) > CARD_FILES else "")] if names else []),
             f"- Forgetting guard: {replay:.0%} of training windows replayed from the base styles' training files"
             + (f", held to the base model's next-event distributions (distillation weight {distill:g})" if distill else ""),
             f"- Held-out NLL per note, `{style}`: {f(figures['finetune/new_nll_per_note'])} "
             f"(the base model, even blend: {f(figures['finetune/new_nll_per_note_base'])})",
             f"- Base styles' held-out NLL per note: {f(before.get('all'))} before, {f(after.get('all'))} after"
             + (f" ({figures['finetune/forgetting']:+.1%})" if figures.get("finetune/forgetting") is not None else ""),
             "  - " + ", ".join(f"{s} {f(before[s], 2)} -> {f(after.get(s), 2)}" for s in before if s != "all"),
             f"- Fine-tune: {figures['finetune/minutes']:.1f} min, peak memory "
             f"{figures['finetune/peak_memory_mb']:.0f} MB",
             "- The originality index covers the new files (`--max-copy off` turns the guard off), and the style "
             f"classifier knows `{style}`", ""]
    return "\n".join(lines)


# --- `midigen finetune DIR --style NAME`: the producer's short form ---------------------------


def _quoted(key: str, value: object) -> str:
    """A Hydra override whose value is taken as written (paths, registry URIs)."""
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"{key}='{text}'"


def max_time(minutes: float) -> str:
    """`trainer.max_time` (DD:HH:MM:SS) for a limit in minutes."""
    seconds = int(round(minutes * 60))
    return f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _compose(overrides: list[str]) -> DictConfig:
    """conf/train.yaml with `overrides`, as the Hydra run will compose it; a bad override is one line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from midigen.train.config import CONF_DIR, hydra_error_line

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise MidigenError(hydra_error_line(exc)) from None


def prepare_command(args) -> list[str]:  # noqa: ANN001 - argparse.Namespace
    """`midigen finetune`: check everything, import the folder; the Hydra overrides that run
    `experiment=finetune` on it (`midigen.train.app.run_cli` runs them)."""
    from midigen.data.imports import import_folder
    from midigen.producer.registry import default_model_ref
    folder = Path(args.folder)
    if not folder.is_dir():
        raise MidigenError(f"{folder}: no such folder; name the folder that holds your MIDI files")
    ref = args.base or default_model_ref()
    _, base = load_base(ref)
    if args.minutes is not None and not (0 < args.minutes <= 24 * 60):
        raise MidigenError(f"--minutes {args.minutes}: a time in minutes, above 0")
    register = args.register or f"midigen-{args.style}"
    if safe_name(register) != register:
        raise MidigenError(f"--register {register!r}: use letters, digits, '-' and '_'")
    overrides = ["experiment=finetune", _quoted("finetune.base", ref), _quoted("finetune.style", args.style),
                 _quoted("data.root", Path(args.corpus).resolve()), _quoted("registry.name", register)]
    if args.minutes is not None:
        overrides.append(f"trainer.max_time='{max_time(args.minutes)}'")
    # Everything the run would refuse is refused now, before the import writes anything.
    cfg = _compose([*overrides, *args.overrides])
    check_request(cfg, base, list(args.overrides), names=("--style ", "--from "))
    check_settings(cfg)
    check_registry_name(cfg, base)
    import_folder(folder, args.style, Path(args.corpus))  # refuses a broken or empty folder, writing nothing
    return [*overrides, *args.overrides]
