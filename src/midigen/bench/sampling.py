"""Row group `sampling`: sample() with the producer's controls vs the seed's prefix loop, a stateful loop,
its own Python path, and a 0.1 s budget."""

from __future__ import annotations

import time

from midigen.bench.core import SAMPLE_FILES, Row, Sizes, best_of, seed_size_model
from midigen.data.events import NOTE_ON_OFFSET, EventParams
from midigen.tracking import repo_root


def seed_prefix_loop(model, vocab: int, start: int, events: int, gen) -> list[int]:  # noqa: ANN001
    """The seed's generation: re-feed the whole growing prefix through nn.LSTM for every event."""
    import torch
    import torch.nn.functional as F

    seq = [start]
    with torch.no_grad():
        for _ in range(events):
            x = F.one_hot(torch.tensor([seq]), vocab).float()  # (1, t, V)
            out, _ = model.lstm(x)
            probs = torch.softmax(model.head(out[:, -1]), -1)  # (1, V)
            seq.append(int(torch.multinomial(probs, 1, generator=gen)))
    return seq


def stateful_loop(model, vocab: int, starts, events: int, gen):  # noqa: ANN001
    """A plain stateful loop: one nn.LSTM call per step for the whole batch, carrying (h, c)."""
    import torch
    import torch.nn.functional as F

    tok, state, out = torch.as_tensor(starts), None, []
    with torch.no_grad():
        for _ in range(events):
            h, state = model.lstm(F.one_hot(tok[:, None], vocab).float(), state)  # (B, 1, H)
            probs = torch.softmax(model.head(h[:, -1]), -1)
            tok = torch.multinomial(probs, 1, generator=gen)[:, 0]
            out.append(tok)
    return torch.stack(out, 1)


def bench_sampling(sizes: Sizes) -> list[Row]:
    """sample() with the producer's controls vs the seed's prefix loop and a plain stateful loop."""
    import torch

    from midigen.producer import native
    from midigen.model import _StepWeights, resolve_precision
    from midigen.producer.sampling import SamplingOptions, sample

    params = EventParams.seed()
    V, E = params.vocab_size, sizes.sample_events
    model = seed_size_model(V, sizes.hidden, sizes.layers)
    starts = [NOTE_ON_OFFSET + 60 + i for i in range(SAMPLE_FILES)]
    producer = SamplingOptions(num=SAMPLE_FILES, max_events=E, top_p=0.95, repetition_penalty=0.3,
                               max_note_steps=250, start="random",
                               start_pitches=[s - NOTE_ON_OFFSET for s in starts])
    plain = SamplingOptions(num=SAMPLE_FILES, max_events=E, start="random", start_pitches=producer.start_pitches)
    fp32 = SamplingOptions(**{**producer.__dict__, "precision": "fp32"})
    side = max(1, sizes.sample_repeats - 2)  # repeats of the figures that only go in the notes
    ours, ours_median = best_of(lambda: sample(model, params, producer), sizes.sample_repeats)
    ours_plain, _ = best_of(lambda: sample(model, params, plain), side)
    ours_fp32, _ = best_of(lambda: sample(model, params, fp32), side)
    # The first call on a model also prepares its step weights (cached per model after that).
    first_call, _ = best_of(lambda: (_StepWeights._cache.clear(), sample(model, params, producer)), side)
    reference = SamplingOptions(**{**producer.__dict__, "kernels": "python"})
    ours_python, python_median = best_of(lambda: sample(model, params, reference), sizes.sample_repeats)
    kernels = "native kernels" if native.load() else "Python path (native kernels not built)"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a step's matmuls are small: one thread may beat several on a busy machine
    try:
        ours_one_thread, _ = best_of(lambda: sample(model, params, producer), side)
    finally:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    stateful, _ = best_of(lambda: stateful_loop(model, V, starts, E, gen), max(1, sizes.sample_repeats // 2 + 1))
    files = max(1, min(sizes.prefix_files, SAMPLE_FILES))
    start = time.perf_counter()
    for f in range(files):
        seed_prefix_loop(model, V, starts[f], E, gen)
    prefix = (time.perf_counter() - start) * SAMPLE_FILES / files

    precision = resolve_precision(producer.precision)
    shape = f"{SAMPLE_FILES} files x {E} events, {sizes.layers}x{sizes.hidden} one-hot LSTM"
    ours_note = (f"ours = sample() with the producer's controls (grammar masks, top-p 0.95, anti-stuck 0.3, "
                 f"note cap), {kernels}, {precision} step matmuls, best of {sizes.sample_repeats}; plain sampling "
                 f"{ours_plain:.3f} s, fp32 {ours_fp32:.3f} s, first call on a model (prepares its step "
                 f"weights) {first_call:.3f} s, Python path {ours_python:.3f} s")
    scaled = f", timed on {files} file(s) and scaled to {SAMPLE_FILES}" if files < SAMPLE_FILES else ""
    return [
        Row("sampling_vs_prefix_loop", ours, prefix, "s", ">= 30x", 30.0,
            notes=f"{shape}; baseline = the seed's loop, one file at a time, whole prefix re-fed{scaled}; {ours_note}"),
        Row("sampling_vs_stateful_loop", ours, stateful, "s", ">= 3x", 3.0,
            notes=f"{shape}; baseline = batch {SAMPLE_FILES}, one nn.LSTM call per step carrying (h, c), "
                  f"softmax + multinomial; {ours_note}"),
        Row("sampling_seconds", ours, 0.1, "s", "< 0.1 s", 1.0,
            notes=f"{shape}; baseline column = the 0.1 s budget; median {ours_median:.3f} s; with "
                  f"{threads} torch threads (1 thread: {ours_one_thread:.3f} s); {ours_note}"),
    ] + _native_row(ours, ours_median, ours_python, python_median, sizes, shape) \
        + _sampling_shipped_model(sizes, producer)


def _native_row(ours: float, ours_median: float, python: float, python_median: float, sizes: Sizes,
                shape: str) -> list[Row]:
    from midigen.producer import native

    if not native.load():  # nothing to compare: both figures would be the Python path's
        return []
    return [Row("sampling_native_vs_python", ours, python, "s", ">= 1.3x", 1.3,
                notes=f"{shape}, producer's controls; ours = the native kernels (fused LSTM cell per layer, one "
                      f"call per step for controls + nucleus filter + draw), baseline = the same sample() on its "
                      f"Python reference path (torch ops + numpy); best of {sizes.sample_repeats} each, medians "
                      f"{ours_median:.3f} vs {python_median:.3f} s")]


def _sampling_shipped_model(sizes: Sizes, producer) -> list[Row]:  # noqa: ANN001
    """The same request on the model producers get (models/pretrained, the default experiment's)."""
    from midigen.producer.bundle import load_bundle
    from midigen.producer.sampling import sample

    path = repo_root() / "models" / "pretrained"
    if not (path / "config.json").exists():
        return []
    bundle = load_bundle(path)
    steps = int(round(2.0 * bundle.params.steps_per_beat(120.0)))  # the producer's 2-beat note cap
    opts = type(producer)(**{**producer.__dict__, "max_note_steps": steps})
    ours, median = best_of(lambda: sample(bundle.model, bundle.params, opts), sizes.sample_repeats)
    cfg = bundle.model.config
    return [Row("sampling_seconds_shipped_model", ours, 0.1, "s", "< 0.1 s", 1.0,
                notes=f"{SAMPLE_FILES} files x {sizes.sample_events} events with the shipped default model "
                      f"(models/pretrained: {cfg.num_layers}x{cfg.hidden_size} {cfg.input} LSTM, {bundle.params.mode} "
                      f"tokens), the same controls; best of {sizes.sample_repeats}, median {median:.3f} s; "
                      "baseline column = the 0.1 s budget")]
