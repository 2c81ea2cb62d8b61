"""The sampler against plain references: `StepLSTM` computes what nn.LSTM computes (the
one-step cell in model.py mirrors the network), the draw is softmax, the nucleus filter keeps
what sorting keeps, a seed repeats itself, and the controls hold (primer kept, grammar, key).
Both sampler implementations (Python reference, native kernels) run where they can be built.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from midigen.data.events import NOTE_ON_OFFSET, EventParams
from midigen.model import EventLSTM, ModelConfig, StepLSTM
from midigen.producer import native
from midigen.producer.sampling import SamplingOptions, _draw, _top_p, _weights, sample

SEED = EventParams.seed()
PRODUCER = dict(num=4, max_events=60, top_p=0.9, repetition_penalty=0.5, max_note_steps=40,
                scale=[0, 2, 4, 5, 7, 9, 11])


NEEDS_COMPILER = pytest.mark.skipif(native.compiler() is None, reason="no C++ compiler to build the native kernels")


@pytest.fixture(scope="session")
def native_kernels() -> None:
    """The native sampling kernels, built once (a no-op where built; a failed build fails the test)."""
    native.build()


@pytest.fixture(params=["python", pytest.param("native", marks=NEEDS_COMPILER)])
def kernels(request) -> str:
    """Both sampler implementations: the Python reference and the native kernels."""
    if request.param == "native":
        request.getfixturevalue("native_kernels")
    return request.param


def small_model(input_kind: str = "onehot", styles: tuple[str, ...] = (), seed: int = 0) -> EventLSTM:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=SEED.vocab_size, hidden_size=24, num_layers=3, input=input_kind,
                         embedding_dim=12, styles=list(styles), style_dim=4)
    model = EventLSTM(config).eval()
    with torch.no_grad():  # peakier than the init's near-uniform outputs, like a trained model
        model.head.weight.mul_(10)
    return model


@pytest.mark.parametrize("input_kind,styles", [("onehot", ()), ("embedding", ("chorale", "fiddle"))],
                         ids=["onehot", "embedding+styles"])
def test_step_lstm_in_fp32_equals_nn_lstm(input_kind, styles):
    model = small_model(input_kind, styles)
    ids = torch.randint(1, SEED.vocab_size, (3, 25))
    style = torch.tensor([0.3, 0.7]) if styles else None
    with torch.no_grad():
        reference, (h, c) = model(ids, style.expand(3, -1) if styles else None)  # (B, T, V)
        stepper = StepLSTM(model, style, batch=3, precision="fp32")
        stepped = torch.stack([stepper.step(ids[:, t]).clone() for t in range(ids.shape[1])], 1)
        assert torch.allclose(stepped, reference, atol=1e-5, rtol=0)
        # Starting from nn.LSTM's state (how a primer is fed) continues the same sequence.
        resumed = StepLSTM(model, style, batch=3, precision="fp32")
        resumed.set_state(h, c)
        nxt = torch.randint(1, SEED.vocab_size, (3, 1))
        expected, _ = model(torch.cat([ids, nxt], 1), style.expand(3, -1) if styles else None)
        assert torch.allclose(resumed.step(nxt[:, 0]), expected[:, -1], atol=1e-5, rtol=0)


def test_step_lstm_without_onednn_falls_back_to_torch_mm(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    model = small_model()
    ids = torch.randint(1, SEED.vocab_size, (2, 15))
    with torch.no_grad():
        reference, _ = model(ids)
        stepper = StepLSTM(model, None, batch=2, precision="fp32")
        assert stepper.hh0.packed is None
        stepped = torch.stack([stepper.step(ids[:, t]).clone() for t in range(ids.shape[1])], 1)
    assert torch.allclose(stepped, reference, atol=1e-5, rtol=0)


def test_step_lstm_in_bf16_stays_close_to_fp32():
    model = small_model()
    ids = torch.randint(1, SEED.vocab_size, (4, 20))
    with torch.no_grad():
        reference, _ = model(ids)
        stepper = StepLSTM(model, None, batch=4, precision="bf16")
        stepped = torch.stack([stepper.step(ids[:, t]).clone() for t in range(ids.shape[1])], 1)
    probs, ref_probs = torch.softmax(stepped, -1), torch.softmax(reference, -1)
    assert (probs - ref_probs).abs().max() < 1e-2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sampler_repeats_itself_for_a_seed_and_not_for_another(precision, kernels):
    model = small_model()
    runs = [sample(model, SEED, SamplingOptions(**PRODUCER, seed=seed, precision=precision, kernels=kernels))
            for seed in (3, 3, 4)]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2]))


def test_sampler_keeps_the_primer_and_obeys_grammar_and_key(kernels):
    model = small_model()
    primer = np.array([NOTE_ON_OFFSET + 60, 257 + 30, 129 + 60, NOTE_ON_OFFSET + 64], dtype=np.int64)
    opts = SamplingOptions(**PRODUCER, primer=primer, seed=1, precision="fp32", kernels=kernels)
    for ids in sample(model, SEED, opts):
        assert np.array_equal(ids[:4], primer)
        sounding = {64}
        for tok in ids[4:].tolist():
            if 1 <= tok < 129:
                assert tok - 1 not in sounding and (tok - 1) % 12 in PRODUCER["scale"]
                sounding.add(tok - 1)
            elif 129 <= tok < 257:
                assert tok - 129 in sounding  # NOTE_OFF only for a sounding pitch
                sounding.discard(tok - 129)
            else:
                assert 257 <= tok < SEED.vocab_size


def test_nucleus_filter_keeps_what_sorting_keeps():
    rng = np.random.default_rng(0)
    for _ in range(50):
        logits = (rng.normal(size=(6, 50)) * rng.uniform(0.5, 4)).astype(np.float32)
        logits[rng.random(logits.shape) < 0.3] = -np.inf
        top_p = float(rng.uniform(0.05, 0.99))
        weights = _weights(logits)
        _top_p(weights, top_p)
        for row, kept in zip(logits, weights > 0):
            order = np.argsort(-row, kind="stable")
            probs = np.exp(row[order] - row[order][0])
            probs /= probs.sum()
            before = np.cumsum(probs) - probs  # mass of the events ranked above each one
            expected = np.zeros(row.size, dtype=bool)
            expected[order[before <= top_p]] = True
            assert np.array_equal(kept, expected & np.isfinite(row))


def test_draw_samples_softmax():
    logits = np.array([[np.log(0.5), -np.inf, np.log(0.3), np.log(0.2)]], dtype=np.float32)  # one impossible
    uniform = np.random.default_rng(1).random(40_000)
    picks = _draw(np.repeat(_weights(logits), uniform.size, 0), uniform)
    freq = np.bincount(picks, minlength=4) / uniform.size
    assert freq[1] == 0
    assert np.allclose(freq, [0.5, 0.0, 0.3, 0.2], atol=0.01)


