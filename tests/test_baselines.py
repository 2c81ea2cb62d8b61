"""Unigram and n-gram baselines: proper distributions, the hashing checked against plain counting."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from conftest import CORPUS

from midigen.train.baselines import NGramModel, fit_corpus, heldout_nll, main
from midigen.data.cache import TokenCorpus, build_token_cache
from midigen.data.events import EventParams, decode_ids


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_token_cache(CORPUS, EventParams.seed(), tmp_path_factory.mktemp("cache"))


def _reference_prob(sequences, order, vocab, context, w):
    """Interpolated Kneser-Ney written out with tuples and Counters, one probability at a time."""
    bos = vocab
    grams = {k: Counter() for k in range(1, order + 1)}
    for seq in sequences:
        padded = [bos] * (order - 1) + list(seq)
        for t in range(order - 1, len(padded)):
            for k in range(1, order + 1):
                grams[k][tuple(padded[t - k + 1: t + 1])] += 1
    counts = {order: grams[order]}
    for k in range(1, order):
        counts[k] = Counter(g[1:] for g in grams[k + 1])  # distinct left neighbours
    p = 1.0 / (vocab - 1) if 0 < w < vocab else 0.0
    for k in range(1, order + 1):
        table = counts[k]
        n1 = sum(1 for c in table.values() if c == 1)
        n2 = sum(1 for c in table.values() if c == 2)
        d = min(max(n1 / (n1 + 2 * n2), 0.1), 0.9) if n1 and n2 else 0.5
        h = tuple(context[len(context) - (k - 1):]) if k > 1 else ()
        following = {g[-1]: c for g, c in table.items() if g[:-1] == h}
        total = sum(following.values())
        if total:
            p = (max(following.get(w, 0) - d, 0) + d * len(following) * p) / total
    return p


def test_probabilities_match_plain_kneser_ney_counting():
    rng = np.random.default_rng(0)
    vocab = 9
    sequences = [rng.integers(1, 5, size=n) for n in (30, 17, 25)] + [np.array([5, 6, 7, 8] * 5)]
    model = NGramModel.fit(sequences, order=3, vocab_size=vocab)
    contexts = [(vocab, vocab), (vocab, 1), (1, 2), (5, 6), (8, 5), (2, 7), (3, 3)]
    for context in contexts:
        got = model.distribution(np.array([context]))[0]
        want = [_reference_prob(sequences, 3, vocab, context, w) for w in range(vocab)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_distributions_sum_to_one_over_the_vocabulary(corpus):
    model = fit_corpus(corpus, 4)
    V = corpus.params.vocab_size
    held_out = np.asarray(corpus.tokens[corpus.split("val")[0]["offset"]:][:3], dtype=np.int64)
    contexts = np.array([[V, V, V], held_out, [300, 5, 200], [1, 1, 1]])  # start, seen, unseen, odd
    dist = model.distribution(contexts)
    assert dist.shape == (4, V)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, rtol=1e-9)
    assert (dist[:, 0] == 0).all() and (dist[:, 1:] > 0).all()  # PAD never; every event possible


PATTERN = [61, 257 + 59, 189, 65, 257 + 59, 193, 68, 257 + 29, 196]  # three notes, each on, shift, off


def _repetitive_corpus(tmp_path) -> TokenCorpus:
    pattern = PATTERN
    files, tokens = [], []
    for i, split in enumerate(["train"] * 6 + ["val", "test"]):
        ids = pattern * (20 + i)
        files.append({"rel": f"s/{i}.mid", "style": "s", "split": split, "offset": len(tokens), "length": len(ids)})
        tokens += ids
    return TokenCorpus(np.array(tokens, dtype=np.uint16), files, ["s"], [], EventParams.seed(), tmp_path)


def test_on_a_repetitive_corpus_the_4gram_beats_the_unigram(tmp_path):
    corpus = _repetitive_corpus(tmp_path)
    unigram, ngram = fit_corpus(corpus, 1), fit_corpus(corpus, 4)
    for split in ("val", "test"):
        assert heldout_nll(ngram, corpus, split) < 0.2 < heldout_nll(unigram, corpus, split)
    # Unigram: 9 tokens, 2 of them twice as frequent: a little under ln 9.
    assert heldout_nll(unigram, corpus, "val") == pytest.approx(math.log(9) - 0.1, abs=0.15)


def test_heldout_nll_is_finite_and_below_a_uniform_guess(corpus):
    uniform = math.log(corpus.params.vocab_size - 1)
    unigram, ngram = fit_corpus(corpus, 1), fit_corpus(corpus, 4)
    for split in ("val", "test"):
        u, n = heldout_nll(unigram, corpus, split), heldout_nll(ngram, corpus, split)
        assert np.isfinite([u, n]).all()
        assert n < u < uniform


def test_samples_are_repeatable_events_that_decode(tmp_path, corpus):
    model = fit_corpus(corpus, 4)
    first = model.sample(3, 200, seed=7)
    assert [s.shape for s in first] == [(200,)] * 3
    assert all(np.array_equal(a, b) for a, b in zip(first, model.sample(3, 200, seed=7)))
    assert not np.array_equal(first[0], model.sample(1, 200, seed=8)[0])
    ids = np.concatenate(first)
    assert ids.min() >= 1 and ids.max() < corpus.params.vocab_size
    on, off, pitch = decode_ids(first[0], corpus.params)
    assert on.size > 0
    # On a corpus of one pattern the 4-gram plays the pattern back, nearly every step.
    rep = fit_corpus(_repetitive_corpus(tmp_path), 4).sample(1, 90, seed=0)[0].tolist()
    cycle = PATTERN + PATTERN[:1]
    steps = set(zip(cycle[:-1], cycle[1:]))
    assert rep[0] == PATTERN[0]
    assert sum(step in steps for step in zip(rep[:-1], rep[1:])) >= 85


def test_cli_prints_json_and_writes_samples(tmp_path, capsys):
    code = main(["--root", str(CORPUS), "--cache", str(tmp_path / "cache"), "--order", "3", "--json",
                 "--samples", str(tmp_path / "samples"), "--num", "2", "--events", "100"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["models"]) == {"unigram", "ngram3"}
    assert out["models"]["ngram3"]["val/nll"] < out["models"]["unigram"]["val/nll"]
    assert len(list((tmp_path / "samples").glob("ngram3_*.mid"))) == 2


def test_cli_names_a_missing_corpus(tmp_path, capsys):
    assert main(["--root", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "cache")]) == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_logs_one_mlflow_run_per_model(tmp_path, capsys):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["--root", str(CORPUS), "--cache", str(tmp_path / "cache"), "--order", "3", "--mlflow",
                 "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("seed_study").experiment_id])
    assert {r.data.tags["model"] for r in runs} == {"unigram", "ngram3"}
    assert all({"val/nll", "test/nll"} <= set(r.data.metrics) for r in runs)


def test_beat_token_baselines_are_named_apart_and_scored_per_note(tmp_path, capsys):
    code = main(["--root", str(CORPUS), "--cache", str(tmp_path / "cache"), "--order", "3", "--json",
                 "--tokenizer", "beat"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["models"]) == {"unigram_beat", "ngram3_beat"}  # never mistaken for the seed-token runs
    data, row = out["data"], out["models"]["ngram3_beat"]
    # every event of every val file is predicted, so the total is nll x events, shared by the notes
    assert row["val/nll_per_note"] == pytest.approx(row["val/nll"] * data["val_tokens"] / data["val_notes"])
    assert row["val/nll_per_note"] > row["val/nll"]  # more than one event per note
