"""The native sampling kernels (`midigen kernels build`) against the Python reference path.

What users rely on: `kernels="native"` computes what nn.LSTM computes and applies the same
producer controls (temperature, top-k, top-p, key, pitch range, voices, anti-stuck penalty,
note-length cap, grammar, length cap, how a clip opens) to the same logits as
`kernels="python"`, so a seed gives the same ids either way; prepared weights follow in-place
edits of the model; and a missing build is one clear line that says what to run. No timing is
asserted.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from midigen.producer import native

if native.compiler() is None:
    pytest.skip("no C++ compiler: the native sampling kernels cannot be built here", allow_module_level=True)
native.build()  # a no-op where built; a failure to build fails this module (it is not a reason to skip)

from midigen.cli import main as cli_main  # noqa: E402
from midigen.data.events import (NOTE_OFF_OFFSET, NOTE_ON_OFFSET, NUM_PITCHES, PAD_ID, TIME_SHIFT_OFFSET,  # noqa: E402
                            EventParams)
from midigen.model import EventLSTM, ModelConfig, StepLSTM, _StepWeights, forget_prepared  # noqa: E402
from midigen.producer.sampling import (NEG_INF, SamplingOptions, _draw, _top_k, _top_p,  # noqa: E402
                              _Tracker, _weights, sample)

from conftest import run_midigen  # noqa: E402

SEED = EventParams.seed()
V = SEED.vocab_size
MAJOR = [0, 2, 4, 5, 7, 9, 11]
PRODUCER = dict(num=4, max_events=60, top_p=0.9, repetition_penalty=0.5, max_note_steps=40, scale=MAJOR)
NOTES = slice(0, TIME_SHIFT_OFFSET)
ON, OFF = slice(NOTE_ON_OFFSET, NOTE_OFF_OFFSET), slice(NOTE_OFF_OFFSET, TIME_SHIFT_OFFSET)


def small_model(input_kind: str = "onehot", styles: tuple[str, ...] = (), seed: int = 0, layers: int = 3) -> EventLSTM:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=V, hidden_size=24, num_layers=layers, input=input_kind,
                         embedding_dim=12, styles=list(styles), style_dim=4)
    model = EventLSTM(config).eval()
    with torch.no_grad():  # peakier than the init's near-uniform outputs, like a trained model
        model.head.weight.mul_(10)
    return model


def same_ids(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# --- a) the fused LSTM cell ---------------------------------------------------------------


@pytest.mark.parametrize("input_kind,styles,layers", [("onehot", (), 3), ("embedding", ("chorale", "fiddle"), 3),
                                                      ("onehot", (), 1), ("embedding", ("chorale", "fiddle"), 2)],
                         ids=["onehot", "embedding+styles", "onehot-1-layer", "embedding+styles-2-layers"])
def test_native_step_lstm_in_fp32_equals_nn_lstm(input_kind, styles, layers):
    model = small_model(input_kind, styles, layers=layers)
    ids = torch.randint(1, V, (3, 25), generator=torch.Generator().manual_seed(1))
    style = torch.tensor([0.3, 0.7]) if styles else None
    batch_style = style.expand(3, -1) if styles else None
    with torch.no_grad():
        reference, (h, c) = model(ids, batch_style)  # (B, T, V)
        stepper = StepLSTM(model, style, batch=3, precision="fp32", native=True)
        stepped = torch.stack([stepper.step(ids[:, t].contiguous()).clone() for t in range(ids.shape[1])], 1)
        assert torch.allclose(stepped, reference, atol=1e-5, rtol=0)
        # Starting from nn.LSTM's state (how a primer is fed) continues the same sequence.
        resumed = StepLSTM(model, style, batch=3, precision="fp32", native=True)
        resumed.set_state(h, c)
        nxt = torch.randint(1, V, (3, 2), generator=torch.Generator().manual_seed(2))
        expected, _ = model(torch.cat([ids, nxt], 1), batch_style)
        for t in range(nxt.shape[1]):
            step = resumed.step(nxt[:, t].contiguous())
            assert torch.allclose(step, expected[:, ids.shape[1] + t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("input_kind,styles", [("onehot", ()), ("embedding", ("chorale", "fiddle"))],
                         ids=["onehot", "embedding+styles"])
def test_native_step_lstm_in_bf16_stays_close_to_fp32(input_kind, styles):
    model = small_model(input_kind, styles)
    ids = torch.randint(1, V, (4, 20), generator=torch.Generator().manual_seed(3))
    style = torch.tensor([0.5, 0.5]) if styles else None
    with torch.no_grad():
        reference, _ = model(ids, style.expand(4, -1) if styles else None)
        stepper = StepLSTM(model, style, batch=4, precision="bf16", native=True)
        stepped = torch.stack([stepper.step(ids[:, t].contiguous()).clone() for t in range(ids.shape[1])], 1)
    assert (torch.softmax(stepped, -1) - torch.softmax(reference, -1)).abs().max() < 1e-2


def test_native_step_takes_ids_as_the_python_step_does():
    model = small_model()
    ids = torch.randint(1, V, (3, 4), generator=torch.Generator().manual_seed(4))
    python = StepLSTM(model, None, batch=3, precision="fp32")
    fused = StepLSTM(model, None, batch=3, precision="fp32", native=True)
    for t in range(ids.shape[1]):
        assert torch.allclose(fused.step(ids[:, t]), python.step(ids[:, t]), atol=1e-5, rtol=0)


# --- b) the fused controls + filter + draw + state update, step by step ---------------------


def reference_step(tracker: _Tracker, logits: np.ndarray, opts: SamplingOptions, inv_t: np.float32,
                   uniform: np.ndarray, done: np.ndarray) -> np.ndarray:
    """One step of `_loop_python`'s body (controls, filters, draw, state update), in place."""
    if inv_t != 1:
        logits *= inv_t
    np.copyto(logits[:, NOTES], NEG_INF, where=tracker.blocked)
    if tracker.grid is not None:
        off_grid = tracker.off_grid()
        np.copyto(logits[:, TIME_SHIFT_OFFSET:], NEG_INF, where=off_grid[:, 1:])
        logits[off_grid[:, 0], ON] = NEG_INF
    if tracker.voices is not None:
        logits[tracker.full(), ON] = NEG_INF
    if tracker.penalty > 0:
        logits[:, ON] -= tracker.penalties()
    if tracker.max_note is not None:
        overdue = tracker.overdue()
        if overdue.any():
            rows = overdue.any(1)
            logits[rows] = NEG_INF
            logits[rows, OFF] = np.where(overdue[rows], 0.0, NEG_INF)
    weights = _weights(logits)
    _top_k(weights, opts.top_k)
    _top_p(weights, opts.top_p)
    tok = _draw(weights, uniform)
    tok[done] = PAD_ID
    tracker.update(tok)
    if opts.max_steps is not None:
        done |= tracker.elapsed >= opts.max_steps
    return tok


TRACKED = ("blocked", "counts", "recent", "deadline", "elapsed")

CHOOSE_SEED = 20240611

CHOOSE_CASES = {
    # the producer's controls, with each filter on and off; max_steps ends files part-way through
    **{f"producer-k{k}-p{p}": dict(temperature=0.8, top_k=k, top_p=p, repetition_penalty=0.5, max_note_steps=20,
                                   scale=MAJOR, max_steps=600)
       for k in (0, 40) for p in (1.0, 0.9)},
    # every control off (temperature 1 skips the scaling; no key, no penalty, no caps)
    "plain": dict(),
    # a short anti-stuck ring (wraps often), a tight nucleus, a hard note cap, a pentatonic key
    "tight": dict(temperature=1.3, top_k=5, top_p=0.5, repetition_penalty=2.0, repetition_window=3,
                  max_note_steps=1, scale=[0, 2, 4, 7, 9], max_steps=600),
    # a pitch range inside the key, and a cap on the notes sounding at once (a single line, then two)
    **{f"range-voices{v}": dict(temperature=0.9, top_p=0.9, repetition_penalty=0.5, max_note_steps=20, scale=MAJOR,
                                note_range=(55, 72), voices=v, max_steps=600)
       for v in (1, 2)},
    # the 16th and 8th-triplet grid (beat steps), counted from a phase off the beat, and 16ths alone
    "grid-16-8t": dict(temperature=0.9, top_p=0.9, repetition_penalty=0.5, max_note_steps=20, scale=MAJOR,
                       max_steps=150, grid=(4, 3)),
    "grid-16-voices1": dict(top_k=40, voices=1, grid=(4,), max_steps=150),
}
BEAT = EventParams.beat()
GRID_PHASES = np.array([5, 0, 7, 3, 11, 2])  # where each file's step 0 lies in its beat (contexts that ended there)


@pytest.mark.parametrize("case", list(CHOOSE_CASES))
def test_choose_matches_the_python_reference_step_by_step(case):
    B, steps = 6, 300
    opts = SamplingOptions(num=B, max_events=steps, **CHOOSE_CASES[case])
    params = SEED if opts.grid is None else BEAT
    V = params.vocab_size
    rng = np.random.default_rng(CHOOSE_SEED)
    inv_t = np.float32(1.0 / float(opts.temperature))
    ref, nat = _Tracker(B, params, opts), _Tracker(B, params, opts)
    grid = None
    if opts.grid is not None:
        ref.grid_phase, nat.grid_phase = GRID_PHASES.copy(), GRID_PHASES.copy()
        grid = torch.from_numpy(nat.grid)
        beat_lines = np.zeros(params.grid, dtype=bool)  # where a grid line lies in a beat, from the subdivisions
        for d in opts.grid:
            beat_lines[np.arange(d) * params.grid // d] = True
    start = NOTE_ON_OFFSET + np.array([60, 62, 64, 65, 67, 69])  # a sounding start note per file, in key
    ref.update(start)
    nat.update(start)
    ref_done, nat_done = np.zeros(B, dtype=bool), np.zeros(B, dtype=bool)
    ref_out, nat_out = np.full((B, steps), PAD_ID, dtype=np.int64), np.full((B, steps), PAD_ID, dtype=np.int64)
    ids = torch.zeros(B, dtype=torch.int64)
    cursor = torch.tensor([nat.cursor], dtype=torch.int64)
    max_note = -1 if nat.max_note is None else int(nat.max_note)
    max_steps = -1 if opts.max_steps is None else int(opts.max_steps)
    voices = -1 if opts.voices is None else int(opts.voices)
    state = [torch.from_numpy(a) for a in (nat.blocked, nat.counts, nat.recent, nat.deadline, nat.elapsed,
                                           nat.out_of_key, nat_done, nat_out)]
    blocked, counts, recent, deadline, elapsed, out_of_key, done_t, out_t = state
    # N(0, 3) logits, tilted towards short time shifts and NOTE_OFFs so that notes also end
    # before the cap and the length cap comes part-way through
    tilt = np.zeros(V, dtype=np.float32)
    tilt[TIME_SHIFT_OFFSET:TIME_SHIFT_OFFSET + 16] = 1.5
    tilt[TIME_SHIFT_OFFSET + 16:] = -4.0
    tilt[OFF] = 2.0
    saw = dict(overdue=0, done=0, on=0, off=0, shift=0, full=0, off_grid=0)
    for t in range(steps):
        logits = (rng.standard_normal((B, V)) * 3).astype(np.float32) + tilt
        uniform = rng.random(B)
        # what the native path may draw, from its own state before the step
        sounding = ~nat.blocked[:, OFF]  # NOTE_OFF allowed <=> the pitch sounds
        overdue = nat.overdue() if nat.max_note is not None else np.zeros((B, NUM_PITCHES), dtype=bool)
        was_done = nat_done.copy()
        at = nat.elapsed + (GRID_PHASES if grid is not None else 0)  # where each file is in its beat
        if grid is not None:
            saw["off_grid"] += int((~beat_lines[at % params.grid]).sum())

        ref_logits = logits.copy()
        ref_tok = reference_step(ref, ref_logits, opts, inv_t, uniform, ref_done)
        ref_out[:, t] = ref_tok
        nat_logits = torch.from_numpy(logits.copy())
        torch.ops.midigen.choose_(nat_logits, float(inv_t), blocked, float(nat.penalty), counts, recent, cursor,
                                  max_note, deadline, elapsed, out_of_key, voices, int(opts.top_k), float(opts.top_p),
                                  torch.from_numpy(uniform), done_t, max_steps, out_t, t, ids, grid,
                                  None if grid is None else torch.from_numpy(nat.grid_phase))
        nat.cursor = int(cursor)
        nat_tok = nat_out[:, t]

        # the masked, penalised, scaled logits are the same floats (the kernel masks in place too)
        assert np.array_equal(nat_logits.numpy(), ref_logits), f"step {t}: logits after the controls differ"
        assert np.array_equal(nat_tok, ref_tok), f"step {t}: native drew {nat_tok}, the reference {ref_tok}"
        assert np.array_equal(ids.numpy(), nat_tok), "the kernel writes the next step's input ids"
        for name in TRACKED:
            assert np.array_equal(getattr(nat, name), getattr(ref, name)), f"step {t}: tracker.{name} differs"
        assert nat.cursor == ref.cursor and np.array_equal(nat_done, ref_done), f"step {t}"

        # grammar, key and caps, checked on the native path's draws directly
        for b, tok in enumerate(nat_tok.tolist()):
            if was_done[b]:
                assert tok == PAD_ID
                saw["done"] += 1
                continue
            assert tok != PAD_ID
            full = opts.voices is not None and sounding[b].sum() >= opts.voices
            saw["full"] += full
            if overdue[b].any():
                saw["overdue"] += 1
                assert NOTE_OFF_OFFSET <= tok < TIME_SHIFT_OFFSET and overdue[b, tok - NOTE_OFF_OFFSET]
            elif NOTE_ON_OFFSET <= tok < NOTE_OFF_OFFSET:
                saw["on"] += 1
                p = tok - NOTE_ON_OFFSET
                assert not sounding[b, p], "NOTE_ON of a sounding pitch"
                assert opts.scale is None or p % 12 in opts.scale, "NOTE_ON out of key"
                assert opts.note_range is None or opts.note_range[0] <= p <= opts.note_range[1], "out of range"
                assert not full, f"NOTE_ON with {sounding[b].sum()} notes sounding, voices={opts.voices}"
                assert grid is None or beat_lines[at[b] % params.grid], "NOTE_ON off the grid"
            elif NOTE_OFF_OFFSET <= tok < TIME_SHIFT_OFFSET:
                saw["off"] += 1
                assert sounding[b, tok - NOTE_OFF_OFFSET], "NOTE_OFF of a silent pitch"
            else:
                saw["shift"] += 1
                assert TIME_SHIFT_OFFSET <= tok < V
                landing = at[b] + tok - TIME_SHIFT_OFFSET + 1
                assert grid is None or beat_lines[landing % params.grid], "a time shift that leaves the grid"
    assert np.array_equal(nat_out, ref_out)
    # the walk went through the paths it is meant to test
    assert saw["on"] and saw["off"] and saw["shift"]
    if opts.max_note_steps is not None:
        assert saw["overdue"]
    if opts.max_steps is not None:
        assert saw["done"]  # files ended part-way and drew PAD from then on
    if opts.voices is not None:
        assert saw["full"]  # files reached the cap and went on with NOTE_OFFs and TIME_SHIFTs
    if opts.grid is not None:
        assert saw["off_grid"]  # files started off the grid (the phase) and were brought onto it


# --- c) end to end ---------------------------------------------------------------------------


def test_native_and_python_sample_the_same_ids_and_repeat_for_a_seed():
    model = small_model("embedding", ("chorale", "fiddle"))
    primer = np.array([NOTE_ON_OFFSET + 60, 257 + 30, 129 + 60, NOTE_ON_OFFSET + 64], dtype=np.int64)
    base = dict(PRODUCER, max_events=120, top_k=40, temperature=0.9, max_steps=3000, primer=primer,
                style=torch.tensor([0.6, 0.4]), precision="fp32")
    runs = {k: [sample(model, SEED, SamplingOptions(**base, seed=5, kernels=k)) for _ in range(2)]
            for k in ("native", "python")}
    for k, (first, again) in runs.items():
        assert same_ids(first, again), f"kernels={k} does not repeat itself for a seed"
        assert all(np.array_equal(ids[:len(primer)], primer) for ids in first)
    assert same_ids(runs["native"][0], runs["python"][0])
    # and without a primer or a style (the even style blend), both ways of opening a clip
    plain = dict(PRODUCER, precision="fp32", seed=11)
    onehot = small_model()
    for start in ("random", "model"):
        assert same_ids(sample(onehot, SEED, SamplingOptions(**plain, start=start, kernels="native")),
                        sample(onehot, SEED, SamplingOptions(**plain, start=start, kernels="python"))), start


@pytest.mark.parametrize("start", ["model", "random"])
@pytest.mark.parametrize("voices", [1, 2, None])
def test_native_and_python_agree_with_a_range_and_voices(start, voices):
    model = small_model("embedding", ("chorale", "fiddle"))
    opts = dict(PRODUCER, max_events=150, max_steps=3000, note_range=(50, 76), voices=voices, start=start,
                style=torch.tensor([0.2, 0.8]), precision="fp32", seed=21)
    python = sample(model, SEED, SamplingOptions(**opts, kernels="python"))
    assert same_ids(sample(model, SEED, SamplingOptions(**opts, kernels="native")), python)
    ons = np.concatenate([ids[(ids >= NOTE_ON_OFFSET) & (ids < NOTE_OFF_OFFSET)] for ids in python])
    pitches = ons - NOTE_ON_OFFSET
    assert pitches.size and pitches.min() >= 50 and pitches.max() <= 76


def position_model(styles: tuple[str, ...] = ()) -> tuple[EventLSTM, EventParams]:
    """A model that reads bar positions (position="beat"), on beat tokens, with positions that matter."""
    params = EventParams.beat()
    torch.manual_seed(0)
    model = EventLSTM(ModelConfig(vocab_size=params.vocab_size, hidden_size=24, num_layers=2, input="embedding",
                                  embedding_dim=12, styles=list(styles), style_dim=4, position="beat", position_dim=3,
                                  position_grid=params.grid, position_bar_beats=4)).eval()
    with torch.no_grad():
        model.head.weight.mul_(10)
        model.step_in_beat_embedding.weight.mul_(5)
        model.beat_in_bar_embedding.weight.mul_(5)
    return model, params


@pytest.mark.parametrize("styles", [(), ("chorale", "fiddle")], ids=["plain", "styles"])
def test_native_step_lstm_with_positions_equals_nn_lstm(styles):
    model, params = position_model(styles)
    ids = torch.randint(1, params.vocab_size, (3, 25), generator=torch.Generator().manual_seed(1))
    positions = torch.randint(0, 4 * params.grid, (3, 25), generator=torch.Generator().manual_seed(2))
    style = torch.tensor([0.3, 0.7]) if styles else None
    with torch.no_grad():
        reference, _ = model(ids, style.expand(3, -1) if styles else None, positions=positions)
        stepper = StepLSTM(model, style, batch=3, precision="fp32", native=True)
        stepped = torch.stack([stepper.step(ids[:, t].contiguous(), positions[:, t].contiguous()).clone()
                               for t in range(ids.shape[1])], 1)
    assert torch.allclose(stepped, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("start", ["model", "random", "context"])
def test_native_and_python_sample_the_same_ids_with_a_position_model(start):
    model, params = position_model(("chorale", "fiddle"))
    context = np.array([NOTE_ON_OFFSET + 60, TIME_SHIFT_OFFSET + 8, NOTE_OFF_OFFSET + 60, TIME_SHIFT_OFFSET + 20])
    opts = dict(PRODUCER, max_events=150, max_steps=400, style=torch.tensor([0.6, 0.4]), precision="fp32", seed=8,
                **(dict(context=context, context_start=7) if start == "context" else dict(start=start)))
    python = sample(model, params, SamplingOptions(**opts, kernels="python"))
    assert same_ids(sample(model, params, SamplingOptions(**opts, kernels="native")), python)
    assert sum(len(ids) for ids in python) > 100


@pytest.mark.parametrize("start", ["model", "primer", "context"])
def test_native_and_python_keep_every_onset_and_offset_on_the_grid(start):
    """An untrained model puts most of its mass off the grid; with a grid every time, counted
    from the clip's bar line (a context's own phase), lands on a 16th or 8th-triplet line."""
    model, params = position_model(("chorale", "fiddle"))
    lead = np.array([NOTE_ON_OFFSET + 60, TIME_SHIFT_OFFSET + 6, NOTE_OFF_OFFSET + 60])  # 7 steps: off the grid
    opens = {"model": dict(start="model"), "primer": dict(primer=lead),
             "context": dict(context=np.concatenate([lead, [TIME_SHIFT_OFFSET]]), context_start=3)}[start]
    opts = dict(PRODUCER, max_events=200, max_steps=400, style=torch.tensor([0.5, 0.5]), precision="fp32", seed=4,
                grid=(4, 3), **opens)
    python = sample(model, params, SamplingOptions(**opts, kernels="python"))
    assert same_ids(sample(model, params, SamplingOptions(**opts, kernels="native")), python)
    phase = {"model": 0, "primer": 7, "context": (3 + 8) % params.grid}[start]  # where the clip's draws begin
    lines = {0, 3, 4, 6, 8, 9}
    for ids in python:
        t, times = phase, []
        for i in ids.tolist()[len(lead) if start == "primer" else 0:]:
            if i >= TIME_SHIFT_OFFSET:
                t += i - TIME_SHIFT_OFFSET + 1
                times.append(t)
            elif i >= NOTE_ON_OFFSET:
                times.append(t)
        assert len(times) > 20 and {x % params.grid for x in times} <= lines, sorted({x % 12 for x in times})
    free = sample(model, params, SamplingOptions(**{**opts, "grid": None}, kernels="python"))
    assert not same_ids(free, python)  # the grid changed the draws: the model alone leaves the grid


# --- d) the prepared-weights cache -----------------------------------------------------------


@pytest.mark.parametrize("kernels", ["native", "python"])
def test_step_weights_cache_follows_in_place_parameter_changes(kernels):
    model = small_model()
    first = _StepWeights.of(model, 4, False)
    assert _StepWeights.of(model, 4, False) is first
    assert _StepWeights.of(model, 4, True) is not first  # another precision: prepared again
    opts = SamplingOptions(**PRODUCER, seed=2, precision="fp32", kernels=kernels)
    before = sample(model, SEED, opts)
    held = _StepWeights.of(model, 4, False)
    with torch.no_grad():  # an edit that changes the distribution (adding a constant to head.weight would not)
        model.head.weight.add_(torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(9)) * 5)
    assert _StepWeights.of(model, 4, False) is not held
    after = sample(model, SEED, opts)
    assert not same_ids(after, before)
    assert same_ids(after, sample(copy.deepcopy(model), SEED, opts))
    # load_state_dict copies into the same tensors in place: caught by their version counters too
    model.load_state_dict(small_model(seed=0).state_dict())
    assert same_ids(sample(model, SEED, opts), before)


def test_writes_through_data_need_forget_prepared():
    # `.data` writes bypass the version counters the cache is keyed on (documented on _StepWeights).
    model = small_model()
    opts = SamplingOptions(**PRODUCER, seed=2, precision="fp32", kernels="python")
    sample(model, SEED, opts)  # prepares and caches the weights
    model.head.weight.data.add_(torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(9)) * 5)
    forget_prepared(model)
    assert same_ids(sample(model, SEED, opts), sample(copy.deepcopy(model), SEED, opts))


# --- e) not built, bad names -----------------------------------------------------------------


def test_native_without_a_build_is_one_clear_line(tmp_path):
    env = {"MIDIGEN_KERNELS_DIR": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    gen = ("generate", "--model", "models/pretrained", "--num", "2", "--bars", "1", "--seed", "4")
    proc = run_midigen(*gen, "--kernels", "native", "--out", str(tmp_path / "native"), env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "midigen kernels build" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "native").exists() or not any((tmp_path / "native").iterdir())

    status = run_midigen("kernels", "status", env=env)
    assert status.returncode == 1 and "not built" in status.stdout, status.stdout + status.stderr

    # "auto" falls back to the Python path there: the same files as --kernels python
    auto = run_midigen(*gen, "--kernels", "auto", "--out", str(tmp_path / "auto"), env=env)
    python = run_midigen(*gen, "--kernels", "python", "--out", str(tmp_path / "python"))
    assert auto.returncode == 0 and python.returncode == 0, auto.stderr + python.stderr
    made = sorted(p.name for p in (tmp_path / "auto").iterdir())
    assert made and made == sorted(p.name for p in (tmp_path / "python").iterdir())
    assert all((tmp_path / "auto" / n).read_bytes() == (tmp_path / "python" / n).read_bytes() for n in made)


def test_status_here_is_built_and_bad_names_are_refused(capsys):
    assert cli_main(["kernels", "status"]) == 0
    assert "not built" not in capsys.readouterr().out
    assert native.resolve("native") and native.resolve("auto") and not native.resolve("python")
    with pytest.raises(ValueError, match="bogus"):
        sample(small_model(), SEED, SamplingOptions(num=2, max_events=5, kernels="bogus"))
