"""Count-based baselines over event tokens: a unigram and an interpolated Kneser-Ney n-gram.

They set the floor a neural model must clear: `heldout_nll` is the mean NLL per event
(nats) over every event of the held-out files of a `TokenCorpus`, on the same files and
in the same units as the LSTM's `val/nll` / `test/nll`. The one difference: here each
file's first event is predicted too (from a start context of BOS symbols), where the
LSTM's tiled evaluation predicts events 2..N of each file - one event in hundreds.

    python -m midigen.train.baselines --root data/corpus --cache data/cache --order 4 [--json] [--mlflow]

Model: interpolated Kneser-Ney with one absolute discount per order, D = n1 / (n1 + 2 n2)
(kept within 0.1..0.9). The highest order uses raw counts, lower orders continuation
counts (how many distinct tokens precede an n-gram), and the lowest backs off to the
uniform distribution over the real events (ids 1..V-1; PAD is never predicted). Order 1
is the unigram: raw counts, absolutely discounted towards uniform. Every context, seen or
not, gets a distribution that sums to 1 over the vocabulary.

Counting is vectorised: each n-gram is hashed into one int64 key (base V+1 digits, the
extra digit is BOS) and counted with np.unique; lookups are np.searchsorted.
Not for: neural models (`midigen.model`) or musical metrics (`midigen.evaluation.metrics`).
"""

from __future__ import annotations

import argparse
import json
import time
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midigen.errors import MidigenError
from midigen.data.events import PAD_ID

MIN_DISCOUNT, MAX_DISCOUNT = 0.1, 0.9


@dataclass
class _Level:
    """The counts of one order k: k-gram keys and their counts, their contexts' totals and types."""

    keys: np.ndarray  # (G,) int64, sorted
    counts: np.ndarray  # (G,) int64: raw counts (top order) or continuation counts
    context_keys: np.ndarray  # (H,) int64, sorted: key // base
    context_totals: np.ndarray  # (H,) sum of counts over the tokens that follow the context
    context_types: np.ndarray  # (H,) how many distinct tokens follow it
    discount: float


def _lookup(table: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[i] where table[i] == query, else 0 (table sorted)."""
    if table.size == 0:
        return np.zeros(queries.shape, dtype=values.dtype)
    pos = np.minimum(np.searchsorted(table, queries), table.size - 1)
    return np.where(table[pos] == queries, values[pos], 0)


class NGramModel:
    """Interpolated Kneser-Ney over token ids 0..vocab_size-1 (PAD = 0 gets probability 0).

    Build with `NGramModel.fit(sequences, order, vocab_size)`; each sequence is one file's
    ids and n-grams never cross sequences. A context is the previous `order - 1` ids,
    BOS (= vocab_size) where the file has not started yet.
    """

    def __init__(self, order: int, vocab_size: int, levels: list[_Level]):
        self.order, self.vocab_size, self.levels = order, vocab_size, levels
        self.bos = vocab_size
        self.base = vocab_size + 1

    @property
    def name(self) -> str:
        return "unigram" if self.order == 1 else f"ngram{self.order}"

    @classmethod
    def fit(cls, sequences, order: int, vocab_size: int) -> NGramModel:
        base = vocab_size + 1
        if order < 1:
            raise MidigenError(f"n-gram order {order} must be at least 1")
        if order * math.log(base) >= 63 * math.log(2):
            raise MidigenError(f"n-gram order {order} is too high for a vocabulary of {vocab_size}: "
                               f"keys would not fit in 64 bits; use at most {int(63 * math.log(2) / math.log(base))}")
        padded, targets = _pad(sequences, order, vocab_size)
        if targets.size == 0:
            raise MidigenError("no tokens to count: the training split is empty")
        # Types of every order k = 1..order, from the k-grams that end at each target.
        types = [np.unique(_keys_at(padded, targets, k, base), return_counts=True) for k in range(1, order + 1)]
        levels = []
        for k in range(1, order + 1):
            if k == order:
                keys, counts = types[k - 1]
            else:
                # Continuation count: how many distinct tokens precede the k-gram.
                keys, counts = np.unique(types[k][0] % base**k, return_counts=True)
            counts = counts.astype(np.int64)
            contexts = keys // base  # monotonic in keys, so already grouped
            context_keys, first, context_types = np.unique(contexts, return_index=True, return_counts=True)
            totals = np.add.reduceat(counts, first) if counts.size else counts
            n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
            discount = n1 / (n1 + 2 * n2) if n1 and n2 else 0.5
            levels.append(_Level(keys, counts, context_keys, totals, context_types.astype(np.int64),
                                 float(np.clip(discount, MIN_DISCOUNT, MAX_DISCOUNT))))
        return cls(order, vocab_size, levels)

    def _prob_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """rows (M, order): context ids then the predicted id -> P(id | context), (M,)."""
        rows = np.asarray(rows, dtype=np.int64)
        target = rows[:, -1]
        uniform = 1.0 / (self.vocab_size - 1)
        p = np.where((target > PAD_ID) & (target < self.vocab_size), uniform, 0.0)
        last = rows.shape[1] - 1
        for k, level in enumerate(self.levels, start=1):
            keys = _keys_at(rows.ravel(), np.arange(last, rows.size, rows.shape[1]), k, self.base)
            totals = _lookup(level.context_keys, level.context_totals, keys // self.base)
            types = _lookup(level.context_keys, level.context_types, keys // self.base)
            counts = _lookup(level.keys, level.counts, keys)
            d = level.discount
            seen = totals > 0
            p = np.where(seen, (np.maximum(counts - d, 0.0) + d * types * p) / np.maximum(totals, 1), p)
        return p

    def prob(self, contexts, targets) -> np.ndarray:
        """contexts (M, order-1) ids, targets (M,) ids -> probabilities (M,)."""
        contexts = np.asarray(contexts, dtype=np.int64).reshape(len(targets), self.order - 1)
        return self._prob_of_rows(np.column_stack([contexts, np.asarray(targets, dtype=np.int64)]))

    def distribution(self, contexts) -> np.ndarray:
        """contexts (M, order-1) ids -> next-id distributions (M, vocab_size), each summing to 1."""
        contexts = np.asarray(contexts, dtype=np.int64).reshape(-1, self.order - 1)
        M, V = contexts.shape[0], self.vocab_size
        rows = np.column_stack([np.repeat(contexts, V, axis=0), np.tile(np.arange(V), M)])  # (M*V, order)
        return self._prob_of_rows(rows).reshape(M, V)

    def nll(self, sequences) -> tuple[float, int]:
        """(total NLL in nats, number of events) of every event of `sequences`, each file from BOS."""
        padded, targets = _pad(sequences, self.order, self.vocab_size)
        if targets.size == 0:
            return 0.0, 0
        rows = padded[targets[:, None] + np.arange(-(self.order - 1), 1)]  # (N, order)
        p = self._prob_of_rows(rows)
        return float(-np.log(p).sum()), int(targets.size)

    def sample(self, num: int, events: int, seed: int = 0, temperature: float = 1.0) -> list[np.ndarray]:
        """`num` sequences of `events` ids each, every one from the start context; repeatable by `seed`."""
        if temperature <= 0:
            raise MidigenError(f"temperature {temperature} must be above 0")
        rng = np.random.default_rng(seed)
        context = np.full((num, self.order - 1), self.bos, dtype=np.int64)
        out = np.empty((num, events), dtype=np.int64)
        for t in range(events):
            p = self.distribution(context)  # (num, V)
            if temperature != 1.0:
                p = np.where(p > 0, p ** (1.0 / temperature), 0.0)
                p /= p.sum(axis=1, keepdims=True)
            cdf = np.cumsum(p, axis=1)
            u = rng.random(num)[:, None] * cdf[:, -1:]
            out[:, t] = np.minimum((cdf <= u).sum(axis=1), self.vocab_size - 1)
            if self.order > 1:
                context = np.column_stack([context[:, 1:], out[:, t]])
        return list(out)


def _pad(sequences, order: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All sequences, each after `order - 1` BOS symbols, as one array; and where the real ids are."""
    pieces = []
    for seq in sequences:
        pieces.append(np.full(max(order - 1, 0), vocab_size, dtype=np.int64))
        pieces.append(np.asarray(seq, dtype=np.int64))
    if not pieces:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    padded = np.concatenate(pieces)
    return padded, np.flatnonzero(padded != vocab_size)


def _keys_at(padded: np.ndarray, ends: np.ndarray, k: int, base: int) -> np.ndarray:
    """Keys of the k-grams ending at `ends`, the last id the lowest digit: key // base is the key
    of the (k-1)-gram before that id, and key % base**(k-1) the key of the k-gram's last k-1 ids."""
    keys = np.zeros(ends.shape, dtype=np.int64)
    for j in range(k - 1, -1, -1):
        keys = keys * base + padded[ends - j]
    return keys


# --- corpus-level entry points -----------------------------------------------------------


def split_sequences(corpus, split: str) -> list[np.ndarray]:  # noqa: ANN001 (a TokenCorpus)
    """The token ids of every file of `split` ("train", "val", "test"), one array per file."""
    return [np.asarray(corpus.tokens[f["offset"]: f["offset"] + f["length"]], dtype=np.int64)
            for f in corpus.split(split)]


def fit_corpus(corpus, order: int) -> NGramModel:  # noqa: ANN001
    """An n-gram of `order` (1 = unigram) counted on the corpus's train split."""
    return NGramModel.fit(split_sequences(corpus, "train"), order, corpus.params.vocab_size)


def heldout_nll(model: NGramModel, corpus, split: str = "val") -> float:  # noqa: ANN001
    """Mean NLL per event (nats) over all events of the `split` files, each file from BOS."""
    sequences = split_sequences(corpus, split)
    if not sequences:
        raise MidigenError(f"the corpus has no {split} files to evaluate on")
    total, count = model.nll(sequences)
    return total / count


def evaluate(corpus, orders: list[int]) -> dict:  # noqa: ANN001
    """{model name: {"val/nll", "test/nll", ...}} for each order, plus the data summary."""
    results = {}
    for order in orders:
        model = fit_corpus(corpus, order)
        row = {"order": order, "discounts": [lv.discount for lv in model.levels]}
        summary = corpus.summary()
        for split in ("val", "test"):
            if corpus.split(split):
                nll = heldout_nll(model, corpus, split)
                row[f"{split}/nll"] = nll
                row[f"{split}/ppl"] = math.exp(nll)
                if summary[f"{split}_notes"]:  # every event is predicted here, the first of each file too
                    row[f"{split}/nll_per_note"] = nll * summary[f"{split}_tokens"] / summary[f"{split}_notes"]
        results[run_name(model.name, corpus.params)] = row
    return results


def run_name(model_name: str, params) -> str:  # noqa: ANN001
    """`ngram4` over the seed's vocabulary, `ngram4_beat` over the beat tokenizer's."""
    return model_name if params.mode == "seed" else f"{model_name}_{params.mode}"


def _log_to_mlflow(results: dict, corpus, args: argparse.Namespace) -> dict:  # noqa: ANN001
    from mlflow import MlflowClient

    from midigen import tracking
    from midigen.train.config import git_commit

    uri = tracking.tracking_uri(args.tracking_uri)
    tracking.ensure_store(uri)
    experiment_id = tracking.ensure_experiment(args.experiment, uri)
    client = MlflowClient(uri)
    summary = corpus.summary()
    run_ids = {}
    for name, row in results.items():
        run = client.create_run(experiment_id, run_name=name,
                                tags={"model": name, "task": "baseline", "commit": git_commit(),
                                      "tokenizer": corpus.params.mode})
        run_id = run.info.run_id
        params = {"order": row["order"], "tokenizer": corpus.params.key(), "data.root": str(Path(args.root).resolve()),
                  "data.val_fraction": args.val_fraction, "data.test_fraction": args.test_fraction,
                  "discounts": ",".join(f"{d:.4f}" for d in row["discounts"])}
        for key, value in params.items():
            client.log_param(run_id, key, value)
        for key, value in row.items():
            if "/" in key or key == "train_minutes":
                client.log_metric(run_id, key, value)
        for key, value in summary.items():
            if isinstance(value, int):
                client.log_metric(run_id, f"data/{key}", value)
        client.set_terminated(run_id, "FINISHED")
        run_ids[name] = run_id
    return run_ids


def write_samples(model: NGramModel, params, out_dir: Path, num: int, events: int, seed: int,  # noqa: ANN001
                  bpm: float = 120.0) -> list[Path]:
    """`num` MIDI files of `events` sampled events each, as `<model name>_NN.mid` in `out_dir`."""
    from midigen.data.midi_io import ids_to_ticks, write_midi

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ids in enumerate(model.sample(num, events, seed)):
        on, off, pitch = ids_to_ticks(ids, params, bpm=bpm)
        paths.append(write_midi(out_dir / f"{model.name}_{i:02d}.mid", on, off, pitch, bpm=bpm))
    return paths


def conf_defaults() -> dict:
    """What the baselines share with training, read from conf/ (the one place they are set): the
    corpus and cache folders (conf/paths), the split and file-size limit (conf/data), and the
    tokenizers by name (conf/tokenizer/<name>.yaml)."""
    from omegaconf import OmegaConf

    from midigen.train.config import CONF_DIR  # also registers ${midigen_root:}, which conf/paths uses

    paths = OmegaConf.load(CONF_DIR / "paths" / "default.yaml")
    data = OmegaConf.load(CONF_DIR / "data" / "default.yaml")
    return {"root": paths.corpus, "cache": paths.cache, "val_fraction": data.val_fraction,
            "test_fraction": data.test_fraction, "max_file_tokens": data.max_file_tokens,
            "tokenizers": {p.stem: OmegaConf.to_container(OmegaConf.load(p))
                           for p in sorted((CONF_DIR / "tokenizer").glob("*.yaml"))}}


def main(argv: list[str] | None = None) -> int:
    conf = conf_defaults()
    p = argparse.ArgumentParser(prog="midigen baselines",
                                description="Unigram and n-gram baselines: held-out NLL per event and per note (nats). "
                                            "Data defaults are conf/'s, as for `midigen train`.")
    p.add_argument("--root", default=conf["root"], help="corpus folder laid out as <root>/<style>/*.mid "
                                                       "(default: paths.corpus)")
    p.add_argument("--cache", default=conf["cache"], help="token cache folder, shared with training "
                                                         "(default: paths.cache)")
    p.add_argument("--order", type=int, default=4, help="n-gram order (the unigram is always reported too)")
    p.add_argument("--tokenizer", choices=sorted(conf["tokenizers"]), default="seed",
                   help="a tokenizer of conf/tokenizer/")
    p.add_argument("--val-fraction", type=float, default=conf["val_fraction"], help="as data.val_fraction (same split)")
    p.add_argument("--test-fraction", type=float, default=conf["test_fraction"],
                   help="as data.test_fraction (same split)")
    p.add_argument("--max-file-tokens", type=int, default=conf["max_file_tokens"],
                   help="as data.max_file_tokens (same files)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--mlflow", action="store_true", help="log one MLflow run per model (tag model=...)")
    p.add_argument("--experiment", default="seed_study", help="MLflow experiment for --mlflow")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else <repo>/mlflow.db")
    p.add_argument("--samples", type=Path, default=None, help="write MIDI samples of the n-gram here")
    p.add_argument("--num", type=int, default=8, help="how many samples (--samples)")
    p.add_argument("--events", type=int, default=1000, help="events per sample (--samples)")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)

    from midigen.data.cache import build_token_cache
    from midigen.data.events import EventParams

    try:
        params = EventParams.from_dict(conf["tokenizers"][args.tokenizer])
        corpus = build_token_cache(args.root, params, args.cache, args.val_fraction, args.test_fraction,
                                   args.max_file_tokens)
        orders = sorted({1, args.order})
        started = time.time()
        results = evaluate(corpus, orders)
        for row in results.values():  # fitting and scoring every order, as wall time
            row["train_minutes"] = (time.time() - started) / 60
        out = {"models": results, "data": corpus.summary()}
        if args.samples is not None:
            model = fit_corpus(corpus, args.order)
            out["samples"] = [str(p) for p in write_samples(model, params, args.samples, args.num, args.events,
                                                              args.seed)]
        if args.mlflow:
            out["mlflow_runs"] = _log_to_mlflow(results, corpus, args)
    except MidigenError as exc:
        print(f"midigen: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    d = out["data"]
    print(f"{d['files']} files: {d['train_files']} train ({d['train_tokens']:,} events), "
          f"{d['val_files']} val ({d['val_tokens']:,}), {d['test_files']} test ({d['test_tokens']:,})")
    columns = (("val/nll", 8), ("test/nll", 9), ("val/ppl", 8), ("test/ppl", 9), ("test/nll_per_note", 18))
    print(f"{'model':<12} " + " ".join(f"{k:>{w}}" for k, w in columns))
    for name, row in results.items():
        print(f"{name:<12} " + " ".join(f"{row.get(k, float('nan')):>{w}.4f}" for k, w in columns))
    for path in out.get("samples", []):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
