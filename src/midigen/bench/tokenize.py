"""Row group `tokenize`: our cold token cache vs the seed's mido parser and miditok's MIDILike; a warm
cache vs a cold one."""

from __future__ import annotations

import math
import time
from pathlib import Path

from midigen.bench.core import Row, Sizes, best_of
from midigen.data.events import EventParams


SEED_VOCAB = (["<pad>"] + [f"note_on_{i}" for i in range(128)] + [f"note_off_{i}" for i in range(128)]
              + [f"time_shift_{i}" for i in range(125)])


def seed_midi_parser(path: Path) -> list[int]:
    """The seed's tokenizer (Gomatam's `midi_parser`, velocity and pedal removed), re-implemented.

    mido merges the tracks and gives each message's delta time in seconds through the tempo
    map; the milliseconds since the last note event become `time_shift_k` events of 8 ms
    (1000 ms each, then the rounded rest), each note message a `note_on_p`/`note_off_p`
    string, and the strings are mapped to ids with `vocab.index`, as the seed did.
    Drum-channel messages are skipped, as our tokenizer drops drum tracks.
    """
    import mido

    from midigen.data.midi_io import DRUM_CHANNEL

    events: list[str] = []
    delta_ms = 0.0
    for msg in mido.MidiFile(str(path)):
        delta_ms += msg.time * 1000.0
        if msg.is_meta or msg.type not in ("note_on", "note_off") or msg.channel == DRUM_CHANNEL:
            continue
        for _ in range(int(delta_ms // 1000)):
            events.append("time_shift_124")
        rest = int(math.floor((delta_ms % 1000) / 8 + 0.5))  # the seed's round-half-up
        if rest > 0:
            events.append(f"time_shift_{rest - 1}")
        delta_ms = 0.0
        on = msg.type == "note_on" and msg.velocity > 0
        events.append(f"note_{'on' if on else 'off'}_{msg.note}")
    return [SEED_VOCAB.index(e) for e in events]


def bench_tokenize(corpus: Path, cache_root: Path, sizes: Sizes, source: str = "") -> list[Row]:
    """Our cold token cache vs the seed's mido parser and miditok's MIDILike; then a warm cache.

    `source` says where `corpus` comes from (it is usually a subset of a larger corpus).
    """
    import miditok

    from midigen.data import cache as data
    from midigen.data.cache import build_token_cache, list_corpus

    params = EventParams.seed()
    files = [cf.path for cf in list_corpus(corpus)]
    runs = max(sizes.tokenize_repeats, 1)
    colds = []
    for k in range(runs):
        start = time.perf_counter()
        built = build_token_cache(corpus, params, cache_root / f"cold{k}")
        colds.append(time.perf_counter() - start)
    cold = min(colds)
    tokens = int(built.tokens.size)

    def parse_all_mido() -> None:
        for path in files:
            try:
                seed_midi_parser(path)
            except Exception:  # noqa: BLE001 - a file mido rejects is skipped, as our cache skips it
                pass

    mido_s, _ = best_of(parse_all_mido, runs, warmup=0)
    midilike = miditok.MIDILike()

    def encode_all_midilike() -> None:
        for path in files:
            try:
                midilike.encode(path)
            except Exception:  # noqa: BLE001
                pass

    midilike_s, _ = best_of(encode_all_midilike, runs, warmup=0)

    # A warm cache must not parse a single MIDI file: count calls into the parser.
    calls = []
    real = data.read_notes
    data.read_notes = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:
        warm, _ = best_of(lambda: build_token_cache(corpus, params, cache_root / "cold0"), runs + 2, warmup=0)
    finally:
        data.read_notes = real
    if calls:
        raise AssertionError(f"a warm token cache parsed {len(calls)} MIDI files")

    what = (f"{len(files)} files ({tokens:,} tokens, {len(built.skipped)} skipped) of {source or corpus}; ours = "
            f"build_token_cache into a fresh cache (parse + tokenize + hash + write), best of {runs}")
    return [
        Row("tokenize_vs_mido", cold, mido_s, "s", ">= 10x", 10.0,
            notes=f"{what}; baseline = the seed's mido midi_parser re-implemented (merged tracks, seconds via "
                  f"tempo, event strings, vocab.index)"),
        Row("tokenize_vs_miditok_midilike", cold, midilike_s, "s", ">= 1x", 1.0,
            notes=f"{what}; baseline = miditok.MIDILike() (default config) .encode(path) per file"),
        Row("cache_hit", warm, cold, "s", "0 MIDI files parsed, >= 10x", 10.0,
            notes=f"second build_token_cache over the same corpus: {len(calls)} calls to midi_io.read_notes; "
                  f"ours = warm load (hash files + mmap), baseline = the cold build; best of {runs + 2}"),
    ]
