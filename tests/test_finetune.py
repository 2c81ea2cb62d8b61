"""`midigen finetune DIR --style NAME`: a model learns a producer's folder as a new style.

One fine-tune of the smoke model (a subprocess, about 35 s) is shared by the end-to-end
checks; the refusals run in this process (they stop before any training); the window shares
and the grown network are unit tests.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CORPUS, make_midi, run_midigen, snapshot
from midigen.cli import main
from midigen.errors import MidigenError

STYLE = "riffs"
REGISTER = "riffs-model"
RIFFS = 8
PENTATONIC = [57, 60, 62, 64, 67, 69, 72, 74, 76]  # A minor pentatonic over two octaves
FAST = ["data.seq_len=32", "data.batch_size=8", "trainer.max_epochs=1", "callbacks.sampling.request.num=2",
        "callbacks.sampling.request.bars=2", "callbacks.sampling.audio=false", "trainer.enable_progress_bar=false",
        "finetune.calibration_files=8"]


def make_riffs(folder: Path, count: int = RIFFS) -> Path:
    """`count` riffs of 16 bars of eighth notes from a minor-pentatonic set, the last few in a subfolder."""
    (folder / "more").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = random.Random(i)
        notes = [(rng.choice(PENTATONIC), k / 2, k / 2 + 0.5) for k in range(16 * 8)]
        where = folder / "more" if i >= count - 3 else folder
        make_midi(where / f"riff{i}.mid", notes, bpm=100 + 5 * i)
    return folder


def client(uri: str):  # noqa: ANN201 - an MlflowClient
    from mlflow import MlflowClient

    return MlflowClient(uri)


def registered_names(uri: str) -> set[str]:
    return {m.name for m in client(uri).search_registered_models()}


# --- end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetuned(smoke_run, tmp_path_factory):
    """One `midigen finetune` of the smoke model on 8 riffs, registered as riffs-model."""
    root = tmp_path_factory.mktemp("finetune")
    corpus = root / "corpus"
    shutil.copytree(CORPUS, corpus)
    mine = make_riffs(root / "mine")
    env = {**smoke_run["env"], "MIDIGEN_CACHE": str(root / "model-cache")}
    proc = run_midigen("finetune", str(mine), "--style", STYLE, "--from", "models:/midigen@champion",
                       "--register", REGISTER, "--corpus", str(corpus), f"paths.cache={root / 'cache'}",
                       f"paths.outputs={root / 'out'}", *FAST, env=env, timeout=600)
    bundles = sorted((root / "out").rglob("bundle"))
    return {"proc": proc, "root": root, "corpus": corpus, "env": env, "uri": smoke_run["uri"],
            "bundle": bundles[0] if len(bundles) == 1 else None, "bundles": bundles, "base": smoke_run["bundle"]}


def test_finetune_exits_0_and_imports_the_folder(finetuned):
    proc = finetuned["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert len(finetuned["bundles"]) == 1, finetuned["bundles"]
    imported = sorted(p.name for p in (finetuned["corpus"] / STYLE).glob("*.mid"))
    assert len(imported) == RIFFS, imported  # the subfolder's riffs too
    assert f"on {RIFFS} files of {STYLE}" in proc.stdout, proc.stdout[-3000:]


def test_finetuned_model_is_registered_as_champion(finetuned, smoke_run):
    assert finetuned["proc"].returncode == 0
    mlflow = client(finetuned["uri"])
    version = mlflow.get_model_version_by_alias(REGISTER, "champion")
    assert str(version.version) == "1"
    assert [str(v.version) for v in mlflow.search_model_versions(f"name='{REGISTER}'")] == ["1"]
    base = mlflow.get_model_version("midigen", "1")
    assert version.tags.get("tokenizer") == base.tags.get("tokenizer") is not None
    # The base model is left as it was: still version 1, still the champion of midigen.
    assert str(mlflow.get_model_version_by_alias("midigen", "champion").version) == "1"
    assert [str(v.version) for v in mlflow.search_model_versions("name='midigen'")] == ["1"]


def test_bundle_keeps_the_tokenizer_and_grows_the_styles(finetuned):
    from midigen.producer.bundle import load_bundle

    bundle, base = finetuned["bundle"], finetuned["base"]
    assert bundle is not None
    base_config = json.loads((base / "config.json").read_text())
    config = json.loads((bundle / "config.json").read_text())
    base_styles = base_config["model"]["styles"]
    assert base_styles == ["chorale", "fiddle"]
    assert config["model"]["styles"] == [*base_styles, STYLE]
    for key in ("hidden_size", "num_layers", "embedding_dim", "style_dim", "vocab_size"):
        assert config["model"][key] == base_config["model"][key], key
    assert (bundle / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()
    grown, original = load_bundle(bundle), load_bundle(base)
    rows = grown.model.state_dict()["style_embedding.weight"]
    assert rows.shape[0] == original.model.state_dict()["style_embedding.weight"].shape[0] + 1 == 3


def test_bundle_card_index_classifier_and_reference_know_the_new_style(finetuned):
    from midigen.evaluation.originality import OriginalityIndex
    from midigen.evaluation.style import StyleClassifier

    bundle, base = finetuned["bundle"], finetuned["base"]
    assert bundle is not None
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "## Fine-tuned" in card
    assert "models:/midigen/1" in card
    assert f"`{STYLE}`: {RIFFS} files" in card, card
    # The new style's nucleus mass, chosen among the candidates on generated clips, travels with the model.
    chosen = json.loads((bundle / "config.json").read_text())["sampling"]["top_p"]
    assert set(chosen) == {STYLE} and chosen[STYLE] in (0.9, 0.95, 1.0)
    assert f"| {STYLE} | {chosen[STYLE]:g} |" in card, card
    # ... and so does its style strength, chosen next at that mass (0 is the mass's own clips)
    strengths = json.loads((bundle / "config.json").read_text())["sampling"]["style_strength"]
    assert set(strengths) == {STYLE} and strengths[STYLE] in (0.0, 0.5, 1.0)
    assert f"| {STYLE} | {strengths[STYLE]:g} |" in card.split("leans into each style")[1], card
    assert len(list((bundle.parent / "calibration").rglob("*.mid"))) == (3 + 2) * 8
    # every style leans away from the base's blend, as it did in the base model
    assert json.loads((bundle / "config.json").read_text())["sampling"]["lean_from"] == ["chorale", "fiddle"]

    classifier = StyleClassifier.load(bundle / "style_classifier.json")
    assert classifier.styles == ["chorale", "fiddle", STYLE]

    index = OriginalityIndex.load(bundle / "originality.npz")
    base_index = OriginalityIndex.load(base / "originality.npz")
    assert set(base_index.names) <= set(index.names)  # the base styles' files are still guarded
    new = [n for n in index.names if n.startswith(f"{STYLE}/")]
    assert new, index.names
    assert all((finetuned["corpus"] / n).is_file() for n in new), new
    assert len(new) < RIFFS  # the training files only, not the held-out ones

    reference = json.loads((bundle / "reference.json").read_text())
    assert set(reference["styles"]) == {"chorale", "fiddle", STYLE}


def test_generate_the_new_style_blended_and_an_old_one(finetuned, tmp_path, monkeypatch):
    assert finetuned["proc"].returncode == 0
    for key, value in finetuned["env"].items():  # in this process: the registry and the cache of the run
        monkeypatch.setenv(key, value)
    model = f"models:/{REGISTER}@champion"
    for name, style in (("blend", f"{STYLE}=0.7,chorale=0.3"), ("old", "chorale")):
        assert main(["generate", "--model", model, "--style", style, "--num", "2", "--bars", "2",
                     "--out", str(tmp_path / name), "--seed", "1"]) == 0
        assert len(list((tmp_path / name).glob("*.mid"))) == 2


# --- refusals: one line, exit 2, nothing written ---------------------------------------------


def _empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _broken(tmp: Path) -> Path:
    folder = tmp / "broken"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.mid").write_bytes(b"this is not MIDI")
    (folder / "sub" / "b.midi").write_bytes(b"MThd\x00\x00\x00\x06 nor this")
    return folder


def _riffs(tmp: Path) -> Path:
    return make_riffs(tmp / "mine", 3)


BAD = {
    "empty folder": (_empty, [], "holds no MIDI files"),
    "only broken files": (_broken, [], "none of the 2 MIDI files"),
    "a style the base knows (chorale)": (_riffs, ["--style", "chorale"], "already knows chorale"),
    "a style the base knows (fiddle)": (_riffs, ["--style", "fiddle"], "already knows fiddle"),
    "no such registered model": (_riffs, ["--from", "models:/nope@champion"], "nope"),
    "no such folder": (_riffs, ["--from", "/nonexistent/folder"], "/nonexistent/folder"),
    "a model size": (_riffs, ["model.hidden_size=64"], "keeps the base model's tokenizer and sizes"),
    "a tokenizer": (_riffs, ["tokenizer=beat"], "keeps the base model's tokenizer and sizes"),
    "a negative distillation weight": (_riffs, ["finetune.distill=-1"], "finetune.distill=-1"),
    "a nucleus mass above 1": (_riffs, ["finetune.top_p_candidates=[0.9,1.5]"], "finetune.top_p_candidates"),
    "a style strength above 8": (_riffs, ["finetune.style_strengths=[0,9]"], "finetune.style_strengths"),
}


def refuse(capsys, tmp: Path, corpus: Path, folder: Path, args: list[str], needle: str, uri: str) -> None:
    """Run `midigen finetune` in this process; it must fail in one line and write nothing."""
    if "--style" not in args:
        args = ["--style", STYLE, *args]
    corpus_before, names_before = snapshot(corpus), registered_names(uri)
    folder_before = snapshot(folder)
    status = main(["finetune", str(folder), "--corpus", str(corpus), *args, f"paths.cache={tmp / 'cache'}",
                   f"paths.outputs={tmp / 'out'}", *FAST])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("midigen: error"), err
    assert needle in err, err
    assert "Traceback" not in err
    assert snapshot(corpus) == corpus_before  # no style folder, no manifest row
    assert not (corpus / STYLE).exists()
    assert snapshot(folder) == folder_before
    assert not (tmp / "out").exists() and not (tmp / "cache").exists()
    assert registered_names(uri) == names_before


@pytest.fixture
def smoke_env(smoke_run, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", smoke_run["uri"])
    monkeypatch.setenv("MIDIGEN_CACHE", str(tmp_path / "model-cache"))
    return smoke_run["uri"]


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_request_is_one_line_and_writes_nothing(capsys, tmp_path, corpus_copy, smoke_env, case):
    make_folder, args, needle = BAD[case]
    refuse(capsys, tmp_path, corpus_copy, make_folder(tmp_path), list(args), needle, smoke_env)


def test_a_registry_name_of_another_tokenizer_is_refused(capsys, tmp_path, corpus_copy, smoke_run, smoke_env):
    name = "other-tokenizer"
    mlflow = client(smoke_env)
    run_id = json.loads((smoke_run["run_dir"] / "mlflow_run.json").read_text())["run_id"]
    mlflow.create_registered_model(name)
    try:
        mlflow.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)
        mlflow.set_model_version_tag(name, "1", "tokenizer", "other")
        refuse(capsys, tmp_path, corpus_copy, _riffs(tmp_path), ["--register", name],
               f"registry.name={name}: its version 1 reads another tokenizer", smoke_env)
        assert [str(v.version) for v in mlflow.search_model_versions(f"name='{name}'")] == ["1"]
    finally:
        mlflow.delete_registered_model(name)


# --- units -----------------------------------------------------------------------------------


def test_share_weights():
    from midigen.data.datamodule import EventDataModule, share_weights

    files = [{"style": "a"}, {"style": "a"}, {"style": "b"}]
    lengths = np.array([10.0, 30.0, 60.0])
    shared = share_weights(files, lengths, {"a": 0.7})
    np.testing.assert_allclose(shared, [0.7 * 0.25, 0.7 * 0.75, 0.3])
    np.testing.assert_allclose(share_weights(files, lengths, None), [0.1, 0.3, 0.6])
    # A named style with no files gives nothing: the others share every window, by length.
    np.testing.assert_allclose(share_weights(files, lengths, {"c": 0.5}), [0.1, 0.3, 0.6])
    with pytest.raises(MidigenError, match="style_shares"):
        EventDataModule(root="nowhere", cache_dir="nowhere", tokenizer={"mode": "seed"}, style_shares={"a": 1.5})


def _logits(net, ids: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:  # noqa: ANN001
    positions = torch.zeros_like(ids) if net.positioned else None
    with torch.no_grad():
        return net(ids, style, positions=positions)[0]


def test_grown_model(smoke_run):
    from midigen.producer.bundle import load_bundle
    from midigen.train.finetune import grown_model

    base = load_bundle(smoke_run["bundle"])
    styles = base.styles
    net = grown_model(base, "new")
    net.eval()
    base.model.eval()
    assert list(net.config.styles) == [*styles, "new"]
    assert base.styles == styles  # the base is not changed
    old, new = base.model.state_dict(), net.state_dict()
    assert set(old) == set(new)
    rows = new["style_embedding.weight"]
    assert rows.shape[0] == len(styles) + 1
    torch.testing.assert_close(rows[:-1], old["style_embedding.weight"], rtol=0, atol=0)
    torch.testing.assert_close(rows[-1], old["style_embedding.weight"].mean(0), rtol=0, atol=0)
    for key in old:
        if key != "style_embedding.weight":
            assert torch.equal(old[key], new[key]), key

    ids = torch.randint(1, base.params.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    for i in range(len(styles)):
        label = torch.full((2,), i, dtype=torch.long)
        torch.testing.assert_close(_logits(net, ids, label), _logits(base.model, ids, label), rtol=0, atol=0)
    # The new style starts as the base model's even blend of its styles.
    torch.testing.assert_close(_logits(net, ids, torch.full((2,), len(styles), dtype=torch.long)),
                               _logits(base.model, ids, None), rtol=1e-5, atol=1e-5)


def test_distillation_guards_the_base_styles_only(smoke_run, monkeypatch):
    """finetune.distill: on the windows of styles the base knows, the loss adds the KL divergence
    from the frozen base model (zero while the student is still the base); the new style's
    windows are not distilled, and the teacher is neither saved nor trained."""
    from midigen.producer.bundle import load_bundle
    from midigen.train.finetune import grown_model
    from midigen.train.module import EventLSTMModule

    base = load_bundle(smoke_run["bundle"])
    styles = [*base.styles, "new"]
    config = {**base.model.config.to_dict(), "dropout": 0.0}
    module = EventLSTMModule(model=config, tokenizer=base.params.to_dict(), optim={"_target_": "torch.optim.Adam",
                             "_partial_": True, "lr": 1e-3}, styles=styles, distill=2.0)
    module.net.load_state_dict(grown_model(base, "new", 0.0).state_dict())
    keys, count = set(module.state_dict()), sum(1 for _ in module.parameters())
    module.use_teacher(base.model)
    assert set(module.state_dict()) == keys and sum(1 for _ in module.parameters()) == count
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    module.train()

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, base.params.vocab_size, (4, 24), generator=gen)
    targets = torch.randint(1, base.params.vocab_size, (4, 24), generator=gen)
    old, new = torch.tensor([0, 1, 0, 1]) % len(base.styles), torch.full((4,), len(styles) - 1)
    positions = torch.zeros_like(ids)

    def losses(style: torch.Tensor) -> tuple[float, float]:
        logits, _ = module.net(ids, style, positions=positions if module.net.positioned else None)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return float(module.training_step((ids, targets, style, positions), 0).detach()), float(ce.detach())

    total, ce = losses(old)
    assert total == pytest.approx(ce, abs=1e-5)  # the student is the base: nothing to distil yet
    with torch.no_grad():
        module.net.head.bias.add_(torch.linspace(-2, 2, module.net.head.bias.numel()))
    total, ce = losses(old)
    assert total > ce + 0.1  # moved away from the base on its own styles: the KL divergence pulls back
    total, ce = losses(new)
    assert total == pytest.approx(ce, abs=1e-5)  # the new style is free to move
    assert all(not p.requires_grad for p in base.model.parameters())


def test_the_new_styles_top_p_is_the_default_of_a_request_that_sets_none(smoke_run):
    """A request without --top-p draws each style with the model's setting for it (a fine-tune's
    choice for its new style, 0.95 for the others), a blend with the blend's average; a request
    that sets --top-p gets exactly that."""
    from midigen.producer.bundle import load_bundle
    from midigen.producer.clip import sampling_options
    from midigen.producer.request import DEFAULT_TOP_P, GenerateRequest

    bundle = load_bundle(smoke_run["bundle"])
    first, second = bundle.styles[:2]

    def top_p(style: dict | None, **fields) -> float:  # noqa: ANN003
        return sampling_options(bundle, GenerateRequest(num=1, bars=1, seed=0, style=style, **fields))[0].top_p

    assert top_p({first: 1.0}) == top_p(None) == DEFAULT_TOP_P  # a model without settings
    bundle.meta["sampling"] = {"top_p": {second: 1.0}}
    assert top_p({first: 1.0}) == pytest.approx(DEFAULT_TOP_P)
    assert top_p({second: 1.0}) == pytest.approx(1.0)
    assert top_p({first: 0.5, second: 0.5}) == pytest.approx((DEFAULT_TOP_P + 1.0) / 2)
    others = len(bundle.styles) - 1
    assert top_p(None) == pytest.approx((others * DEFAULT_TOP_P + 1.0) / len(bundle.styles))  # the even blend
    assert top_p({second: 1.0}, top_p=0.5) == 0.5


def test_a_clip_that_quotes_a_training_file_names_it():
    """After a fine-tune the index holds the producer's files: a clip quoting one says which."""
    from midigen.producer.report import COPIED_RUN_NOTES, _file_line

    row = {"n_notes": 40, "on_beat": 0.8, "usable": True,
           "copy": {"copy_ratio": 0.4, "longest_run": COPIED_RUN_NOTES + 4, "source": "riffs/riff0.mid"}}
    assert f"copies {COPIED_RUN_NOTES + 4} melody notes of riffs/riff0.mid" in _file_line(row, None)
    row["copy"]["longest_run"] = COPIED_RUN_NOTES - 1  # a few shared notes are an idiom, not a quote
    assert "riffs/riff0.mid" not in _file_line(row, None)
