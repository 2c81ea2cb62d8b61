"""The sampler against plain references: `StepLSTM` computes what nn.LSTM computes (the
one-step cell in model.py mirrors the network), the draw is softmax, the nucleus filter keeps
what sorting keeps, a seed repeats itself, and the controls hold (primer kept, grammar, key,
pitch range, voices, how a clip opens, options checked).
Both sampler implementations (Python reference, native kernels) run where they can be built.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from midigen.data.events import (NOTE_OFF_OFFSET, NOTE_ON_OFFSET, TIME_SHIFT_OFFSET, EventParams, cut_ids, decode_ids,
                                 total_steps)
from midigen.model import EventLSTM, ModelConfig, StepLSTM
from midigen.producer import native
from midigen.producer.sampling import LEAD_IN_SEED, SamplingOptions, _draw, _sample, _top_p, _weights, sample

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


def test_midigen_precision_sets_what_auto_means(monkeypatch):
    from midigen.errors import MidigenError
    from midigen.model import native_bf16, resolve_precision

    monkeypatch.delenv("MIDIGEN_PRECISION", raising=False)
    assert resolve_precision("auto") == ("bf16" if native_bf16() else "fp32")
    for chosen in ("fp32", "bf16"):
        monkeypatch.setenv("MIDIGEN_PRECISION", chosen)
        assert resolve_precision("auto") == chosen and resolve_precision("fp32") == "fp32"
    # fp32 through the environment draws exactly what fp32 asked for by name draws
    model = small_model()
    monkeypatch.setenv("MIDIGEN_PRECISION", "fp32")
    by_env = sample(model, SEED, SamplingOptions(**PRODUCER, seed=5, precision="auto"))
    by_name = sample(model, SEED, SamplingOptions(**PRODUCER, seed=5, precision="fp32"))
    assert all(np.array_equal(a, b) for a, b in zip(by_env, by_name))
    monkeypatch.setenv("MIDIGEN_PRECISION", "fp16")
    with pytest.raises(MidigenError, match="MIDIGEN_PRECISION=fp16: use fp32 or bf16"):
        resolve_precision("auto")


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




# --- note range, voices, how a clip opens ---------------------------------------------------


def note_ons(ids: np.ndarray) -> np.ndarray:
    return ids[(ids >= NOTE_ON_OFFSET) & (ids < NOTE_OFF_OFFSET)] - NOTE_ON_OFFSET


def most_sounding(ids: np.ndarray) -> int:
    """The most notes sounding at once in a file; grammar checked on the way."""
    sounding, most = set(), 0
    for tok in ids.tolist():
        if NOTE_ON_OFFSET <= tok < NOTE_OFF_OFFSET:
            assert tok - NOTE_ON_OFFSET not in sounding
            sounding.add(tok - NOTE_ON_OFFSET)
            most = max(most, len(sounding))
        elif NOTE_OFF_OFFSET <= tok < TIME_SHIFT_OFFSET:
            sounding.remove(tok - NOTE_OFF_OFFSET)
    return most


@pytest.mark.parametrize("start", ["model", "random"])
def test_note_range_bounds_every_note_on(start, kernels):
    model = small_model()
    opts = dict(num=6, max_events=150, top_p=0.95, seed=3, precision="fp32", kernels=kernels, start=start)
    free = np.concatenate([note_ons(ids) for ids in sample(model, SEED, SamplingOptions(**opts))])
    assert free.min() < 55 or free.max() > 67  # without the range, this model plays outside it
    ranged = sample(model, SEED, SamplingOptions(**opts, note_range=(55, 67)))
    for ids in ranged:
        pitches = note_ons(ids)
        assert pitches.size > 1 and pitches.min() >= 55 and pitches.max() <= 67, pitches
    # with a key too: the range's in-key pitches only (a random start note, as ever, ignores the key)
    keyed = sample(model, SEED, SamplingOptions(**opts, note_range=(55, 67), scale=[0, 4, 7]))
    sampled = 0 if start == "model" else 1
    assert set(np.concatenate([note_ons(ids[sampled:]) for ids in keyed]).tolist()) <= {55, 60, 64, 67}


def test_voices_caps_the_notes_sounding_at_once(kernels):
    model = small_model()
    opts = dict(num=6, max_events=200, top_p=0.95, max_note_steps=60, seed=5, precision="fp32", kernels=kernels)
    assert max(most_sounding(ids) for ids in sample(model, SEED, SamplingOptions(**opts))) > 2  # uncapped: chords
    for voices in (1, 2):
        files = sample(model, SEED, SamplingOptions(**opts, voices=voices))
        # never over the cap, and it is reached; no file ran out of events it may play (a
        # PAD drawn mid-clip would be dropped, leaving it short)
        assert [most_sounding(ids) for ids in files] == [voices] * len(files)
        assert all(len(ids) == opts["max_events"] for ids in files)


def test_voices_holds_over_a_primer_with_more_notes_sounding(kernels):
    primer = np.array([NOTE_ON_OFFSET + 60, NOTE_ON_OFFSET + 64, NOTE_ON_OFFSET + 67], dtype=np.int64)
    opts = SamplingOptions(num=4, max_events=150, primer=primer, voices=1, max_note_steps=30, seed=2, precision="fp32",
                           kernels=kernels)
    new_notes = 0
    for ids in sample(small_model(), SEED, opts):
        sounding = {60, 64, 67}
        for tok in ids[len(primer):].tolist():
            if NOTE_ON_OFFSET <= tok < NOTE_OFF_OFFSET:
                assert not sounding, f"a new note while {sounding} sound (voices=1)"
                sounding.add(tok - NOTE_ON_OFFSET)
                new_notes += 1
            elif NOTE_OFF_OFFSET <= tok < TIME_SHIFT_OFFSET:
                sounding.remove(tok - NOTE_OFF_OFFSET)
    assert new_notes  # the primer's notes ended and new ones came


def biased_model(pitch: int, shift_bias: float = 0.0) -> EventLSTM:
    """A model whose logits ignore its input: NOTE_ON `pitch` far above every other pitch,
    and a one-step TIME_SHIFT `shift_bias` above that."""
    model = small_model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[NOTE_ON_OFFSET + pitch] = 15.0
        model.head.bias[TIME_SHIFT_OFFSET] = 15.0 + shift_bias
    return model


def test_model_start_opens_on_the_pitch_the_model_prefers(kernels):
    # the model prefers a time shift to any note: the clip still opens with its favourite note
    model = biased_model(pitch=71, shift_bias=10.0)
    opts = dict(num=5, max_events=40, max_steps=24, seed=4, precision="fp32", kernels=kernels)
    for ids in sample(model, SEED, SamplingOptions(**opts, start="model")):
        assert ids[0] == NOTE_ON_OFFSET + 71  # no warm-up event written before it
        # the warm-up's time shift is not counted: the clip has its full 24 steps of one-step shifts
        assert np.array_equal(ids[1:], np.full(24, TIME_SHIFT_OFFSET))
    # the seed's random start does not ask the model
    randoms = sample(model, SEED, SamplingOptions(**opts, start="random"))
    assert sum(ids[0] == NOTE_ON_OFFSET + 71 for ids in randoms) < len(randoms)


def test_a_lead_in_is_played_cut_and_followed_on_from_not_written(kernels):
    # A lead-in of 30 steps, then the clip: the model prefers a time shift to any note, yet the
    # clip opens on its note at step 0 and has its full 24 steps; nothing of the lead-in is written.
    model = biased_model(pitch=71, shift_bias=10.0)
    opts = dict(num=3, max_events=40, max_steps=24, seed=4, precision="fp32", kernels=kernels)
    for ids in sample(model, SEED, SamplingOptions(**opts, lead_in_steps=30)):
        assert ids[0] == NOTE_ON_OFFSET + 71
        assert np.array_equal(ids[1:], np.full(24, TIME_SHIFT_OFFSET))
    # with a model that reads its input, the clip is the continuation of the lead-in, cut closed at
    # its end (a note held over the cut is not kept), drawn as after any context but opening on a note
    model = small_model(seed=3)
    lead_opts = SamplingOptions(**{**opts, "max_steps": 30, "max_events": 50, "seed": 4 + LEAD_IN_SEED})
    leads = [cut_ids(ids, SEED, 30) for ids in sample(model, SEED, lead_opts)]
    assert all(total_steps(lead, SEED) == 30 for lead in leads)
    after = _sample(model, SEED, SamplingOptions(**opts, context=leads), open_on_note=True)
    clips = sample(model, SEED, SamplingOptions(**opts, lead_in_steps=30))
    assert all(np.array_equal(a, b) for a, b in zip(clips, after))
    assert all(NOTE_ON_OFFSET <= ids[0] < NOTE_OFF_OFFSET for ids in clips)
    # no lead-in: the clip's first note follows the neutral start, as before
    bare = sample(model, SEED, SamplingOptions(**opts))
    assert not all(np.array_equal(a, b) for a, b in zip(clips, bare))
    # a primer or a context opens the clip itself: the lead-in does not apply
    primer = np.array([NOTE_ON_OFFSET + 60, TIME_SHIFT_OFFSET + 4, NOTE_OFF_OFFSET + 60])
    for given in (dict(primer=primer), dict(context=primer)):
        with_lead = sample(model, SEED, SamplingOptions(**opts, **given, lead_in_steps=30))
        without = sample(model, SEED, SamplingOptions(**opts, **given))
        assert all(np.array_equal(a, b) for a, b in zip(with_lead, without))
    with pytest.raises(ValueError, match="lead_in_steps=-1"):
        SamplingOptions(lead_in_steps=-1)


def test_cut_ids_keeps_what_starts_before_the_cut_closed_and_rests_to_it():
    ids = [NOTE_ON_OFFSET + 60, TIME_SHIFT_OFFSET + 9, NOTE_ON_OFFSET + 64,  # 60 from 0, 64 from 10 over the cut
           TIME_SHIFT_OFFSET + 4, NOTE_OFF_OFFSET + 60, TIME_SHIFT_OFFSET + 19, NOTE_ON_OFFSET + 67]  # 67 at 35
    cut = cut_ids(ids, SEED, 30)
    assert total_steps(cut, SEED) == 30
    on, off, pitch = decode_ids(cut, SEED)
    assert pitch.tolist() == [60, 64] and on.tolist() == [0, 10] and off.tolist() == [15, 30]
    ons, offs = ((cut >= NOTE_ON_OFFSET) & (cut < NOTE_OFF_OFFSET)), ((cut >= NOTE_OFF_OFFSET) & (cut < TIME_SHIFT_OFFSET))
    assert ons.sum() == offs.sum() == 2 and cut[-1] == NOTE_OFF_OFFSET + 64  # closed: every note released at the cut
    quiet = cut_ids([TIME_SHIFT_OFFSET + 99, NOTE_ON_OFFSET + 60], SEED, 80)  # nothing before the cut but rests
    assert total_steps(quiet, SEED) == 80 and decode_ids(quiet, SEED)[0].size == 0


def test_model_start_draws_within_key_and_range(kernels):
    model = biased_model(pitch=71)  # B: out of C pentatonic, and of the range
    opts = SamplingOptions(num=5, max_events=3, scale=[0, 2, 4, 7, 9], note_range=(60, 69), seed=4,
                           precision="fp32", kernels=kernels)
    for ids in sample(model, SEED, opts):
        assert NOTE_ON_OFFSET + 60 <= ids[0] <= NOTE_ON_OFFSET + 69 and (ids[0] - NOTE_ON_OFFSET) % 12 in opts.scale


def test_random_start_keeps_start_pitches(kernels):
    starts = [40, 52, 77, 90]
    opts = SamplingOptions(num=4, max_events=30, start="random", start_pitches=starts, seed=6, precision="fp32",
                           kernels=kernels)
    files = sample(biased_model(pitch=71), SEED, opts)
    assert [int(ids[0]) - NOTE_ON_OFFSET for ids in files] == starts
    # drawn from the seed where none are given, within the range where one is
    drawn = sample(small_model(), SEED, SamplingOptions(num=8, max_events=5, start="random", note_range=(70, 73),
                                                        seed=6, precision="fp32", kernels=kernels))
    assert all(70 <= ids[0] - NOTE_ON_OFFSET <= 73 for ids in drawn)


def greedy_leaning(model: EventLSTM, first: int, style: torch.Tensor, strength: float, steps: int) -> list[int]:
    """What the sampler must draw with top_k=1: at each step the argmax of (1 + s) * l_style -
    s * l_even over the events the grammar allows (no NOTE_ON of a sounding pitch, no NOTE_OFF
    of a silent one), each stream reading the whole clip so far with nn.LSTM."""
    ids, sounding = [first], {first - NOTE_ON_OFFSET}
    even = torch.full_like(style, 1.0 / style.numel())
    with torch.no_grad():
        for _ in range(steps):
            seq = torch.tensor([ids])
            lean = model(seq, style[None])[0][0, -1]
            blend = model(seq, even[None])[0][0, -1]
            logits = (1 + strength) * lean - strength * blend
            logits[0] = float("-inf")  # PAD
            for pitch in range(128):
                logits[(NOTE_ON_OFFSET if pitch in sounding else NOTE_OFF_OFFSET) + pitch] = float("-inf")
            nxt = int(torch.argmax(logits))
            if NOTE_ON_OFFSET <= nxt < NOTE_OFF_OFFSET:
                sounding.add(nxt - NOTE_ON_OFFSET)
            elif NOTE_OFF_OFFSET <= nxt < TIME_SHIFT_OFFSET:
                sounding.discard(nxt - NOTE_OFF_OFFSET)
            ids.append(nxt)
    return ids


def test_style_strength_leans_away_from_the_even_blend(kernels):
    model = small_model("embedding", ("a", "b"), seed=3)
    with torch.no_grad():
        model.style_embedding.weight.mul_(30)  # styles far apart, as a trained model's are
    style = torch.tensor([1.0, 0.0])
    opts = dict(num=2, max_events=14, top_k=1, start="random", start_pitches=[60, 67], style=style, seed=1,
                precision="fp32", kernels=kernels)
    leaning = sample(model, SEED, SamplingOptions(**opts, style_strength=1.5))
    plain = sample(model, SEED, SamplingOptions(**opts))
    for ids, first in zip(leaning, (60, 67)):
        assert ids.tolist() == greedy_leaning(model, NOTE_ON_OFFSET + first, style, 1.5, 14)
    drawn = {**opts, "top_k": 0, "num": 8, "start_pitches": None}  # it changes what is drawn
    assert any(a.tolist() != b.tolist() for a, b in zip(sample(model, SEED, SamplingOptions(**drawn, style_strength=1.5)),
                                                        sample(model, SEED, SamplingOptions(**drawn))))
    # 0 is the style as trained; the even blend has nothing to lean away from; nor has a model without styles
    assert all(np.array_equal(a, b) for a, b in zip(sample(model, SEED, SamplingOptions(**opts, style_strength=0.0)),
                                                    plain))
    blend = {**opts, "style": None}
    assert all(np.array_equal(a, b) for a, b in zip(sample(model, SEED, SamplingOptions(**blend, style_strength=2.0)),
                                                    sample(model, SEED, SamplingOptions(**blend))))
    unstyled = {**opts, "style": None}
    assert all(np.array_equal(a, b) for a, b in zip(
        sample(small_model(), SEED, SamplingOptions(**unstyled, style_strength=2.0)),
        sample(small_model(), SEED, SamplingOptions(**unstyled))))


def test_the_lean_pushes_away_from_the_blend_it_is_given(kernels):
    model = small_model("embedding", ("a", "b", "c"), seed=3)
    with torch.no_grad():
        model.style_embedding.weight.mul_(30)
    opts = dict(num=8, max_events=14, style=torch.tensor([1.0, 0.0, 0.0]), seed=1, precision="fp32", kernels=kernels,
                style_strength=1.5)
    even = sample(model, SEED, SamplingOptions(**opts))
    # every style named: the even blend itself, the default
    assert all(np.array_equal(a, b) for a, b in zip(
        sample(model, SEED, SamplingOptions(**opts, lean_from=torch.ones(3))), even))
    # a fine-tune's base styles (a, b): a leans away from their blend, not one holding the new style c
    base = sample(model, SEED, SamplingOptions(**opts, lean_from=torch.tensor([1.0, 1.0, 0.0])))
    assert any(a.tolist() != b.tolist() for a, b in zip(base, even))
    greedy = {**opts, "num": 1, "top_k": 1, "start": "random", "start_pitches": [60]}
    ids = sample(model, SEED, SamplingOptions(**greedy, lean_from=torch.tensor([1.0, 1.0, 0.0])))[0]
    two = small_model("embedding", ("a", "b"), seed=3)  # the same model without c: the base's own lean
    with torch.no_grad():
        two.load_state_dict({k: (v[:2] if k == "style_embedding.weight" else v) for k, v in model.state_dict().items()})
    assert ids.tolist() == greedy_leaning(two, NOTE_ON_OFFSET + 60, torch.tensor([1.0, 0.0]), 1.5, 14)


@pytest.mark.parametrize("bad,words", [
    (dict(style_strength=-0.5), "style_strength"), (dict(style_strength=9.0), "style_strength"),
    (dict(style_strength=float("nan")), "style_strength"),
    (dict(temperature=0), "temperature"), (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"), (dict(temperature=float("inf")), "temperature"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_k=-1), "top_k"),
    (dict(voices=0), "voices"), (dict(start="silence"), "start"),
    (dict(note_range=(70, 60)), "note_range"), (dict(note_range=(0, 128)), "note_range"),
    (dict(note_range=(61, 61), scale=[0, 2, 4, 5, 7, 9, 11]), "no pitch"),
    (dict(note_range=(60, 72), start="random", start_pitches=[59]), "outside"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_options_are_refused(bad, words):
    with pytest.raises(ValueError, match=words):
        SamplingOptions(**bad)
