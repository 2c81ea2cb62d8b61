"""Row group `audio`: rendering a producer's 8 ideas (8 bars each) to audio with the built-in piano,
against a 2 s budget."""

from __future__ import annotations

import tempfile
from pathlib import Path

from midigen.bench.core import Row, Sizes, best_of

CLIPS, BARS = 8, 8


def bench_audio(bundle: Path, sizes: Sizes) -> list[Row]:
    """8 generated 8-bar clips -> WAV (read MIDI, synthesise, write), best of N, against 2 s."""
    from midigen.producer.audio import DEFAULT_SAMPLE_RATE, render_midi_file
    from midigen.producer.bundle import load_bundle
    from midigen.producer.generate import GenerateRequest, generate_batch

    clips = generate_batch(load_bundle(bundle), GenerateRequest(num=CLIPS, bars=BARS, seed=0, max_copy=None))
    with tempfile.TemporaryDirectory(prefix="midigen-bench-audio-") as tmp:
        paths = []
        for clip in clips:
            paths.append(Path(tmp) / clip["name"])
            paths[-1].write_bytes(clip["midi"])
        notes = sum(len(clip["notes"][0]) for clip in clips)

        def render(fmt: str) -> None:
            for path in paths:
                render_midi_file(path, renderer="builtin", fmt=fmt)

        repeats = max(1, sizes.sample_repeats // 2)
        wav, wav_median = best_of(lambda: render("wav"), repeats)
        mp3, _ = best_of(lambda: render("mp3"), repeats)
    return [Row("audio_render_seconds", wav, 2.0, "s", "< 2 s", 1.0,
                notes=f"{CLIPS} clips x {BARS} bars at 120 bpm ({notes} notes) from {bundle.name}, built-in piano, "
                      f"{DEFAULT_SAMPLE_RATE} Hz mono WAV, read + synthesise + write, best of {repeats} "
                      f"(median {wav_median:.3f} s); as mp3 {mp3:.3f} s; baseline column = the 2 s budget")]
