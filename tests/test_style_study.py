"""The style study (experiments/style_study): every phase at smoke sizes, on the 16-file fixture
corpus and the shipped model (which knows chorale and fiddle), and its report.

The fixture's own hash split leaves fiddle without a test file, so the whole-study run gives
each style two test files (`run_study(splits=...)`); the hash split itself is checked by
`test_a_style_without_test_files_is_reported_not_fatal`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time

import numpy as np
import pytest

from conftest import CORPUS, REPO

STUDY_DIR = REPO / "experiments" / "style_study"
MODEL = REPO / "models" / "pretrained"
STYLES = ["chorale", "fiddle"]


def load(name: str):  # noqa: ANN201 - the experiment's script as a module
    if name in sys.modules and getattr(sys.modules[name], "__file__", "").startswith(str(STUDY_DIR)):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, STUDY_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


study = load("study")
report = load("report")
SIZES = study.Sizes(files=4, blend_files=2, pairs=2, steps=5, variations=1, bars=8)


def two_test_files_per_style() -> dict[str, str]:
    from midigen.data.cache import list_corpus

    splits = {}
    for style in STYLES:
        rels = sorted(cf.rel for cf in list_corpus(CORPUS) if cf.style == style)
        splits.update({rel: "test" if i < 2 else "val" if i == 2 else "train" for i, rel in enumerate(rels)})
    return splits


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("style_study")
    started = time.time()
    results = study.run_study(str(MODEL), CORPUS, out, SIZES, cache_dir=out / "cache",
                              splits=two_test_files_per_style(), command="test")
    path = report.write_report(results, out)
    return {"results": results, "out": out, "report": path.read_text(), "seconds": time.time() - started}


def test_the_study_measures_every_style_the_model_knows(quick):
    r = quick["results"]
    # the fixture corpus holds two of the shipped model's styles: those are measured, the rest are named
    assert r["styles"] == STYLES
    assert r["styles_not_measured"] == [s for s in r["model"]["styles"] if s not in STYLES]
    assert r["classifier"]["source"] == ("bundle" if (MODEL / "style_classifier.json").exists() else "fitted")
    assert r["split"]["overridden"] is True
    counts = {s: (row["train"], row["val"], row["test"]) for s, row in r["files"]["styles"].items()}
    assert {s: counts[s] for s in STYLES} == {"chorale": (5, 1, 2), "fiddle": (5, 1, 2)}
    assert all(counts[s] == (0, 0, 0) for s in r["styles_not_measured"])
    assert set(r["timings"]) >= {"classifier", "real_accuracy", "generated", "blends", "nll", "interpolation", "total"}
    assert quick["seconds"] < 60


def test_generated_accuracy_is_read_against_the_real_ceiling(quick):
    r = quick["results"]
    for style in STYLES:
        g = r["generated"][style]
        assert 0.0 <= g["real_accuracy"] <= 1.0
        assert g["files"] + g["silent_or_unreadable"] == SIZES.files
        assert len(list((quick["out"] / "out" / style).glob("*.mid"))) == SIZES.files
        assert 0.0 <= g["accuracy"] <= 1.0 and 0.0 <= g["mean_probability"] <= 1.0
        assert sum(g["classified_as"].values()) == g["files"]
        assert g["accuracy"] == g["classified_as"][style] / g["files"]
        if g["real_accuracy"] > 0:
            assert g["ratio"] == pytest.approx(g["accuracy"] / g["real_accuracy"])
            assert g["met"] is (g["ratio"] >= study.GOAL_RATIO)
    # Chorales (four voices) and fiddle tunes (one line) are far apart: the shipped model's clips
    # of each style must sound far more like it than like the other, or generation or classification is broken.
    for style, other in (STYLES, STYLES[::-1]):
        heard = r["generated"][style]["mean_probabilities"]
        assert heard[style] > 3 * heard[other], (style, heard)


def test_blends_give_a_curve_per_pair_and_say_whether_it_falls(quick):
    (curve,) = quick["results"]["blends"]
    assert (curve["a"], curve["b"]) == ("chorale", "fiddle")
    assert [p["weight_a"] for p in curve["points"]] == list(study.BLEND_WEIGHTS)
    shares = [p["share_a"] for p in curve["points"]]
    assert all(0.0 <= s <= 1.0 for s in shares)
    assert curve["monotone"] is study.falls(shares)
    assert shares[0] > shares[-1]  # all chorale against all fiddle


def test_nll_per_note_of_the_model_and_the_ngram(quick):
    for style in STYLES:
        row = quick["results"]["nll"][style]
        assert row["test_files"] == 2 and row["notes"] > 0
        assert row["model_per_note"] == pytest.approx(row["model_per_event"] * row["events"] / row["notes"])
        # Better than guessing every event uniformly; the 4-gram (from five files) too.
        uniform = math.log(304) * row["events"] / row["notes"]
        assert 0.0 < row["model_per_note"] < uniform
        assert 0.0 < row["ngram_per_note"] < uniform


def test_interpolation_distances_and_rank_correlations(quick):
    moves = quick["results"]["interpolation"]
    assert len(moves["pairs"]) == SIZES.pairs
    assert [(p["style_a"], p["style_b"]) for p in moves["pairs"]] == [("chorale", "fiddle"), ("fiddle", "chorale")]
    for pair in moves["pairs"]:
        assert len(pair["d_a"]) == len(pair["d_b"]) == SIZES.steps
        assert min(pair["d_a"] + pair["d_b"]) >= 0.0
        assert -1.0 <= pair["rho_a"] <= 1.0 and -1.0 <= pair["rho_b"] <= 1.0
        assert len(list((quick["out"] / "out" / "interpolate").glob(f"pair{pair['seed']:02d}_*/*.mid"))) == SIZES.steps
    assert moves["mean_rho_a"] == pytest.approx(np.mean([p["rho_a"] for p in moves["pairs"]]))
    assert moves["met_a"] is (moves["mean_rho_a"] >= study.GOAL_RHO)
    # The first clip continues A in A's style, the last B in B's: each lies nearer its own end.
    assert moves["mean_d_a"][0] < moves["mean_d_b"][0] and moves["mean_d_b"][-1] < moves["mean_d_a"][-1]


def test_report_and_results_hold_the_same_numbers(quick):
    out, text, r = quick["out"], quick["report"], quick["results"]
    assert json.loads((out / "results.json").read_text()) == r
    for heading in ("## Setup", "## Files per style", "## Style fidelity", "## Blends", "## Held-out NLL per note",
                    "## Interpolation", "## For the README"):
        assert heading in text
    assert "**fitted here**" in text or r["classifier"]["source"] == "bundle"
    for style in STYLES:
        g = r["generated"][style]
        assert f"| {style} | {g['real_accuracy']:.3f} | {g['accuracy']:.3f} |" in text
        assert f"{r['nll'][style]['model_per_note']:.3f}" in text
    assert f"{r['interpolation']['mean_rho_a']:.3f}" in text
    assert "## In time, file by file" in text
    for style in STYLES:  # file by file in time: real held-out windows against both openings
        t = r["timing"][style]
        assert t["real_windows"] > 0 and t["model"]["files"] == t["random"]["files"] == SIZES.files
        assert 0.0 <= t["real_usable"] <= 1.0 and 0.0 <= t["model"]["usable"] <= 1.0
        assert f"| {style} | {t['real_on_beat']:.2f} ({t['p5_train']:.2f}) | {t['model']['on_beat']:.2f} |" in text
        assert t["met_usable"] is (t["usable_ratio"] >= study.GOAL_USABLE)
    readme = report.readme_table(r)
    assert readme.splitlines()[0].startswith("| style |") and sum(line.startswith(("| chorale", "| fiddle"))
                                                                  for line in readme.splitlines()) == 4


def test_every_goal_carries_its_interval_and_how_sure_its_verdict_is(quick):
    r, text = quick["results"], quick["report"]
    for style in STYLES:
        t, g = r["timing"][style], r["generated"][style]
        for value, interval in ((t["usable_ratio"], t["usable_ratio_interval"]),
                                (t["on_beat_gap"], t["on_beat_gap_interval"])):
            lo, hi = interval
            assert hi is None or lo <= hi
        assert t["sure_on_beat"] == study.sure(t["on_beat_gap_interval"], -study.GOAL_ON_BEAT, study.GOAL_ON_BEAT)
        assert g["ratio_interval"] is None or g["sure"] == study.sure(g["ratio_interval"], low=study.GOAL_RATIO)
    moves = r["interpolation"]
    assert moves["rho_a_interval"][0] <= moves["mean_rho_a"] <= moves["rho_a_interval"][1]
    assert "How sure each verdict is" in text and r["interval_draws"] == study.INTERVAL_DRAWS


def test_an_interval_resamples_whole_files_and_says_when_a_verdict_could_flip():
    # Two real files, one all on the beat and one all off: excerpts of one file move together, so
    # the real mean's interval spans nearly 0..1, where 20 independent excerpts would pin it near 0.5.
    files = [[1.0] * 10, [0.0] * 10]
    clustered = study.resampled_means(files, 2000, np.random.default_rng(0))
    independent = study.resampled_means([[x] for f in files for x in f], 2000, np.random.default_rng(0))
    assert np.percentile(clustered, 97.5) - np.percentile(clustered, 2.5) > 0.9
    assert np.percentile(independent, 97.5) - np.percentile(independent, 2.5) < 0.5
    # 64 files at 0.6 against 0.5: +20%, surely outside a 10% goal; against itself, surely inside
    same = [[0.5]] * 64
    gap = study.ratio_interval([[0.6]] * 64, same, 0, minus_one=True)
    assert gap == pytest.approx([0.2, 0.2]) and study.sure(gap, -0.1, 0.1) is True
    assert study.sure(study.ratio_interval(same, same, 0, minus_one=True), -0.1, 0.1) is True
    noisy = study.ratio_interval([[1.0]] * 9 + [[0.0]] * 7, [[1.0], [0.0], [1.0], [1.0]], 0)
    assert noisy[0] < 0.8 < (noisy[1] or np.inf) and study.sure(noisy, low=0.8) is False
    # a real side that can resample to 0 (one excerpt heard right in two files): no upper bound
    assert study.ratio_interval([[1.0]] * 8, [[1.0, 0.0], [0.0, 0.0]], 0)[1] is None
    assert study.sure([0.85, None], low=0.8) is True and study.sure([0.75, None], low=0.8) is False
    assert report.met(True, False) == "met, within noise" and report.met(False, True) == "**not met**"
    assert report.span([0.1, None], percent=True) == "+10..%" and report.span([0.5, 1.25]) == "0.50..1.25"


def test_batched_nll_carries_the_state_across_chunks(monkeypatch):
    import torch

    from midigen.producer.bundle import load_bundle

    bundle = load_bundle(MODEL)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, bundle.params.vocab_size, size=n).astype(np.int64) for n in (5, 23, 40)]
    at = [rng.integers(0, 48, size=seq.size).astype(np.int64) for seq in seqs]  # bar positions (a position model)
    weights = torch.zeros(1, len(bundle.styles))
    weights[0, 1] = 1.0
    whole = []
    with torch.no_grad():  # each file in one forward pass, no chunks, no padding
        for seq, where in zip(seqs, at):
            logits, _ = bundle.model(torch.from_numpy(seq)[None], weights, positions=torch.from_numpy(where)[None])
            whole.append(float(torch.nn.functional.cross_entropy(logits[0, :-1], torch.from_numpy(seq[1:]),
                                                                 reduction="sum")))
    monkeypatch.setattr("midigen.train.heldout.NLL_CHUNK", 7)
    total, events = study.model_nll(bundle.model, seqs, weights, batch=2, bar_positions=at)
    assert events == sum(n - 1 for n in (5, 23, 40))
    assert total == pytest.approx(sum(whole), rel=1e-5)


def test_ngram_nll_scores_the_same_events_as_the_model():
    from midigen.train.baselines import NGramModel

    seqs = [np.array([5, 9, 5, 9, 7, 5], dtype=np.int64), np.array([9, 7, 7, 5], dtype=np.int64)]
    ngram = NGramModel.fit(seqs, 3, 12)
    total, events = study.ngram_nll(ngram, seqs)
    expected = 0.0
    for seq in seqs:  # events 2..N, each from its context with BOS before the file's start
        padded = np.concatenate([[ngram.bos] * 2, seq])
        for t in range(1, seq.size):
            expected -= math.log(ngram.prob(padded[None, t:t + 2], [seq[t]])[0])
    assert events == 5 + 3
    assert total == pytest.approx(expected)


def test_every_style_is_in_a_blend_pair():
    assert study.blend_pairs(["a"]) == []
    assert study.blend_pairs(["a", "b"]) == [("a", "b")]
    ring = study.blend_pairs(["a", "b", "c", "d"])
    assert ring == [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")]
    assert len(study.blend_pairs(["a", "b", "c", "d"], all_pairs=True)) == 6
    assert study.falls([1.0, 0.5, 0.2]) and not study.falls([1.0, 0.5, 0.5])


def test_a_style_without_test_files_is_reported_not_fatal(tmp_path):
    from midigen.evaluation.style import fit_from_corpus
    from midigen.producer.bundle import load_bundle

    bundle = load_bundle(MODEL)
    corpus = study.token_corpus(CORPUS, bundle.params, tmp_path / "cache", study.conf_settings())
    table = study.split_table(corpus)  # the hash split: one chorale test file, no fiddle one
    assert not any(split == "test" and rel.startswith("fiddle/") for rel, split in table.items())
    classifier = fit_from_corpus(CORPUS, splits=table, styles=STYLES, bars=8, per_file=2)
    real, per_file = study.real_accuracy(classifier, CORPUS, table, STYLES)
    assert real["fiddle"] is None and per_file["fiddle"] == [] and 0.0 <= real["chorale"] <= 1.0
    # the same excerpts held_out_accuracy scores, kept by file for the ceiling's interval
    from midigen.evaluation.style import held_out_accuracy
    assert real["chorale"] == pytest.approx(held_out_accuracy(classifier, CORPUS, "test", table)["chorale"])
    assert len(per_file["chorale"]) == 1 and len(per_file["chorale"][0]) == 2
    assert study.interpolation_pairs(corpus, CORPUS, STYLES, 2, 0) == []
    assert study.heldout_nll(bundle, corpus, ["fiddle"])["fiddle"] is None


def test_a_missing_model_is_one_clear_error(tmp_path, capsys):
    code = study.main(["--model", str(tmp_path / "nope"), "--corpus", str(CORPUS), "--out", str(tmp_path)])
    assert code == 1
    assert "nope" in capsys.readouterr().err and not (tmp_path / "results.json").exists()
