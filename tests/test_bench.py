"""`midigen bench`: its rows and JSON at tiny sizes.

No timing is asserted here (timings on a shared machine are noise); what is asserted is
that the bench's baselines do the same work as ours (the sampler's own parity tests are in
test_sampling.py).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from midigen.bench.core import Row, Sizes
from midigen.bench.runner import GROUPS, format_table, run_bench
from midigen.bench.tokenize import seed_midi_parser
from midigen.producer import native
from midigen.data.events import EventParams

from conftest import CORPUS, make_midi

SEED = EventParams.seed()
TINY = Sizes(train_batches=2, hidden=16, layers=1, batch_size=4, seq_len=16, sample_events=12,
                   sample_repeats=1, prefix_files=1, tokenize_files=4, tokenize_repeats=1, cold_start_repeats=1,
                   memory_files=2, memory_windows=8, sgemm_n=64, repeats_for_memory=(1, 2))


def test_seed_parser_baseline_tokenizes_like_ours(tmp_path):
    """The mido baseline does the same work as our tokenizer: on 8 ms-exact times, the same ids."""
    from midigen.data.tokenizer import OoreTokenizer

    # 125 bpm: a beat is 480 ms = 60 steps, so the seed's delta rounding and our absolute one agree.
    notes = [(48, 0, 4), (60, 0, 1), (64, 0, 1), (67, 1, 2.5), (72, 2, 3), (60, 3.5, 4)]
    path = make_midi(tmp_path / "clip.mid", notes, bpm=125)
    ours = OoreTokenizer.from_params(SEED).encode_file(path).tolist()
    assert seed_midi_parser(path) == ours


def test_rows_report_times_better_ours_is():
    faster = Row("t", ours=0.5, baseline=2.0, unit="s", goal=">= 3x", goal_ratio=3.0)
    throughput = Row("x", ours=300.0, baseline=100.0, unit="events/s", goal=">= 0.95x", goal_ratio=0.95,
                           higher_is_better=True)
    assert faster.ratio == 4.0 and faster.met
    assert throughput.ratio == 3.0 and throughput.met
    assert not Row("y", ours=2.0, baseline=1.0, unit="s", goal="", goal_ratio=1.0).met
    assert Row("z", ours=float("nan"), baseline=3.0, unit="s", goal="", goal_ratio=1.0).to_dict()["ratio"] is None


def check_report(report: dict, names: set[str]) -> None:
    assert {"cores", "torch_threads", "cpu", "torch"} <= set(report["machine"])
    json.dumps(report, allow_nan=False)  # plain JSON: no NaN or infinity
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == names
    for r in rows.values():
        assert set(r) >= {"name", "ours", "baseline", "unit", "ratio", "goal", "notes"}
        assert r["ours"] > 0 and r["baseline"] > 0 and r["notes"]
        expected = r["ours"] / r["baseline"] if r["unit"].endswith("/s") else r["baseline"] / r["ours"]
        assert math.isclose(r["ratio"], expected, rel_tol=1e-9)


def test_bench_rows_at_tiny_sizes(tmp_path):
    report = run_bench(TINY, corpus=CORPUS, work=tmp_path, only={"tokenize", "training", "sampling"},
                             log=lambda line: None)
    names = {"tokenize_vs_mido", "tokenize_vs_miditok_midilike", "cache_hit", "training_vs_bare_loop",
             "sampling_vs_prefix_loop", "sampling_vs_stateful_loop", "sampling_seconds",
             "sampling_seconds_shipped_model"}  # models/pretrained is committed
    if native.load():  # where the kernels are built: native vs the Python path
        names.add("sampling_native_vs_python")
    check_report(report, names)
    assert "0 calls to midi_io.read_notes" in {r["name"]: r for r in report["rows"]}["cache_hit"]["notes"]
    lines = format_table(report).splitlines()
    assert all(any(line.startswith(r["name"] + " ") for line in lines) for r in report["rows"])  # a line per row


@pytest.mark.slow
def test_bench_subprocess_rows_at_tiny_sizes(tmp_path):
    report = run_bench(TINY, corpus=CORPUS, work=tmp_path, only={"generate", "memory", "audio"}, log=lambda line: None)
    check_report(report, {"form_batched_vs_one_by_one", "style_strength_cost", "generate_cold_start", "producer_import",
                          "memory_training_epoch_1x",
                          "memory_training_epoch_2x", "memory_generate_64", "audio_render_seconds"})
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["producer_import"]["met"], rows["producer_import"]["notes"]  # no lightning/hydra/mlflow loaded


def test_quick_bench_samples_the_same_workload_as_the_full_one():
    from midigen.bench.core import FULL, QUICK

    for size in ("sample_events", "sample_repeats", "prefix_files", "hidden", "layers"):
        assert getattr(QUICK, size) == getattr(FULL, size), size


def test_bench_groups_are_a_registry_and_unknown_groups_are_refused(tmp_path):
    from midigen.errors import MidigenError

    assert list(GROUPS) == ["tokenize", "training", "sampling", "generate", "memory", "audio", "studio"]
    with pytest.raises(MidigenError, match="no bench group nope"):
        run_bench(TINY, corpus=CORPUS, work=tmp_path, only={"nope"}, log=lambda line: None)
