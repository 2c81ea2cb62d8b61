"""Audio previews: WAVs a producer (and a teammate in the MLflow UI) can listen to.

What is checked is what a listener relies on: the file opens anywhere (`wave`), lasts as long
as the MIDI, sounds where the notes are and is silent where they are not, follows the tempo
map and the velocities, never clips, and says which renderer made it; plus clean one-line
errors, `midigen generate --audio` end to end, and the training callback's listening page.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import wave
from pathlib import Path
from types import SimpleNamespace

import mido
import numpy as np
import pytest
from conftest import REPO, make_midi, run_midigen

from midigen.errors import MidigenError
from midigen.producer import audio

PRETRAINED = REPO / "models" / "pretrained"
RATE = audio.DEFAULT_SAMPLE_RATE


def write_notes(path, notes, bpm=120.0, tpb=480, end_beat=None, tracks=None):
    """A type-1 MIDI file; notes [(pitch, start_beat, end_beat, velocity, channel)], one track per channel."""
    by_channel = {}
    for pitch, start, end, velocity, channel in notes:
        by_channel.setdefault(channel, []).append((pitch, start, end, velocity))
    midi = mido.MidiFile(type=1, ticks_per_beat=tpb)
    for channel, chan_notes in sorted(by_channel.items()):
        events = [(round(s * tpb), 1, p, v) for p, s, _, v in chan_notes]
        events += [(round(e * tpb), 0, p, 0) for p, _, e, _ in chan_notes]
        track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0)])
        now = 0
        for tick, on, pitch, velocity in sorted(events):
            kind = "note_on" if on else "note_off"
            track.append(mido.Message(kind, note=pitch, velocity=velocity, channel=channel, time=tick - now))
            now = tick
        if end_beat is not None:
            track.append(mido.MetaMessage("end_of_track", time=round(end_beat * tpb) - now))
        midi.tracks.append(track)
    midi.save(str(path))
    return path


def read_wav(path):
    """(samples as float in [-1, 1], sample rate, the raw int16 samples), read with `wave` only."""
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return raw / 32768.0, w.getframerate(), raw


def rms(samples, rate, start_s, end_s):
    window = samples[int(start_s * rate):int(end_s * rate)]
    return float(np.sqrt(np.mean(window ** 2)))


def test_wav_is_readable_and_as_long_as_the_midi_through_its_tempo_map(tmp_path):
    # 4 beats at 120 bpm (2 s), then 60 bpm: the note at beat 6 starts at 4 s, the file ends at 5 s.
    midi = make_midi(tmp_path / "clip.mid", [(60, 0, 1), (67, 6, 7)], tempo_changes=[(4, 60)])
    result = audio.render_midi_file(midi, renderer="builtin")
    assert result.path == tmp_path / "clip.wav" and result.renderer == "builtin"
    assert result.bytes == result.path.stat().st_size
    samples, rate, _ = read_wav(result.path)
    assert rate == RATE and samples.size / rate == pytest.approx(result.seconds)
    length = mido.MidiFile(str(midi)).length
    assert length == pytest.approx(5.0)
    assert length <= result.seconds <= length + audio.RELEASE_SECONDS + 1 / rate
    assert rms(samples, rate, 4.05, 4.45) > 0.05  # the second note, where the tempo map puts it
    assert rms(samples, rate, 3.0, 3.95) == 0.0  # not where 120 bpm throughout would (3 s)


def test_sound_where_the_notes_are_and_silence_where_there_are_none(tmp_path):
    midi = write_notes(tmp_path / "gaps.mid", [(60, 0, 2, 90, 0), (64, 6, 8, 90, 0)], end_beat=10)  # 0-1 s, 3-4 s
    samples, rate, _ = read_wav(audio.render_midi_file(midi, renderer="builtin").path)
    for start, end in [(0.05, 0.95), (3.05, 3.95)]:
        assert rms(samples, rate, start, end) > 0.05
    release = audio.RELEASE_SECONDS
    for start, end in [(1 + release, 3.0), (4 + release, 5.0)]:  # after each note's release, before the next
        assert rms(samples, rate, start, end) == 0.0
    assert 0 < rms(samples, rate, 1.0, 1.0 + release / 2) < rms(samples, rate, 0.5, 1.0)  # fades, no hard stop


def test_louder_for_higher_velocity_and_never_clipped(tmp_path):
    midi = write_notes(tmp_path / "vel.mid", [(60, 0, 2, 40, 0), (60, 4, 6, 120, 0)])
    samples, rate, _ = read_wav(audio.render_midi_file(midi, renderer="builtin").path)
    soft, loud = rms(samples, rate, 0.05, 0.95), rms(samples, rate, 2.05, 2.95)
    assert loud > 2 * soft > 0

    # A dense fortissimo cluster would overflow 16 bits without normalisation.
    cluster = [(p, b, b + 4, 127, 0) for p in range(36, 96, 2) for b in (0, 1, 2)]
    _, _, raw = read_wav(audio.render_midi_file(write_notes(tmp_path / "ff.mid", cluster), renderer="builtin").path)
    assert np.abs(raw.astype(np.int32)).max() <= round(audio.PEAK_LEVEL * 32767) + 1 < 32767


def test_non_drum_channels_are_merged_and_drums_left_out(tmp_path):
    midi = write_notes(tmp_path / "band.mid", [(60, 0, 2, 90, 0), (67, 4, 6, 90, 3), (38, 8, 10, 127, 9)])
    samples, rate, _ = read_wav(audio.render_midi_file(midi, renderer="builtin").path)
    assert rms(samples, rate, 0.05, 0.95) > 0.05 and rms(samples, rate, 2.05, 2.95) > 0.05  # both tracks
    assert rms(samples, rate, 4.0, 5.0) == 0.0  # the snare on channel 10 is not played as a piano note


def test_renderer_falls_back_to_the_builtin_piano_and_says_so(tmp_path, monkeypatch):
    fonts = tmp_path / "sf2"
    fonts.mkdir()
    (fonts / "FluidR3_GM.sf2").write_bytes(b"RIFF")
    monkeypatch.setattr(audio, "SOUNDFONT_DIRS", (str(fonts),))
    monkeypatch.delenv(audio.SOUNDFONT_ENV, raising=False)

    monkeypatch.setattr(audio, "_fluidsynth", lambda: None)  # a SoundFont here, FluidSynth not
    assert audio.available_renderer() == "builtin"
    midi = make_midi(tmp_path / "c.mid", [(60, 0, 1)])
    assert audio.render_midi_file(midi).renderer == "builtin"

    monkeypatch.setattr(audio, "_fluidsynth", lambda: "program")  # both: FluidSynth is chosen
    assert audio.available_renderer() == f"fluidsynth:{(fonts / 'FluidR3_GM.sf2').resolve()}"
    assert audio.available_renderer(renderer="builtin") == "builtin"


def one_line_error(call, *words):
    with pytest.raises(MidigenError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def test_soundfont_and_format_mistakes_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(audio.SOUNDFONT_ENV, raising=False)
    midi = make_midi(tmp_path / "c.mid", [(60, 0, 1)])
    missing = tmp_path / "nope.sf2"
    one_line_error(lambda: audio.render_midi_file(midi, soundfont=missing), str(missing), "SoundFont")
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(missing))
    one_line_error(lambda: audio.available_renderer(), "$MIDIGEN_SOUNDFONT", str(missing))
    monkeypatch.delenv(audio.SOUNDFONT_ENV)

    font = tmp_path / "gm.sf2"
    font.write_bytes(b"RIFF")
    monkeypatch.setattr(audio, "_fluidsynth", lambda: None)
    one_line_error(lambda: audio.render_midi_file(midi, soundfont=font), str(font), "FluidSynth", "install")
    one_line_error(lambda: audio.available_renderer(renderer="fluidsynth"), "FluidSynth")

    one_line_error(lambda: audio.render_midi_file(midi, fmt="aiff"), "aiff", "wav", "mp3")
    monkeypatch.setitem(sys.modules, "soundfile", None)  # `import soundfile` fails
    one_line_error(lambda: audio.render_midi_file(midi, fmt="flac"), "soundfile", "wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mid", "gm.sf2"]  # no audio left by any of them


def test_audio_module_loads_no_torch():
    """The producer's audio is numpy, mido and the standard library: it loads in a light interpreter."""
    code = ("import json, sys; import midigen.producer.audio\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & {"torch", "pytorch_lightning", "lightning", "hydra", "omegaconf", "mlflow", "matplotlib",
                         "soundfile", "fluidsynth"}


def test_eight_eight_bar_clips_render_in_seconds():
    """A guard against a per-sample Python loop creeping in (that would take minutes), not a benchmark."""
    rng = np.random.default_rng(0)
    start = np.repeat(np.arange(0, 16, 0.25), 3)  # 8 bars at 120 bpm, three voices of eighth notes
    pitch = rng.integers(36, 96, start.size)
    began = time.perf_counter()
    for _ in range(8):
        samples = audio.render_notes(start, start + 0.25, pitch, np.full(start.size, 80))
    assert time.perf_counter() - began < 5.0
    assert samples.size == int(np.ceil((16 + audio.RELEASE_SECONDS) * RATE))


def test_generate_audio_writes_a_wav_beside_each_file(tmp_path):
    env = {audio.SOUNDFONT_ENV: ""}
    proc = run_midigen("generate", "--model", str(PRETRAINED), "--num", "2", "--bars", "2", "--seed", "1",
                       "--out", str(tmp_path), "--audio", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    renderer = out["audio"]["renderer"]
    assert renderer == "builtin" or renderer.startswith("fluidsynth:")
    assert [p.replace(".mid", ".wav") for p in out["files"]] == out["audio"]["files"]
    for midi_path, wav_path in zip(out["files"], out["audio"]["files"]):
        samples, rate, _ = read_wav(wav_path)
        length = mido.MidiFile(midi_path).length  # 2 bars at 120 bpm = 4 s
        if renderer == "builtin":
            assert length <= samples.size / rate <= length + audio.RELEASE_SECONDS + 1 / rate
        assert rms(samples, rate, 0.0, length) > 0.01

    # An existing preview is not overwritten without --force, even where its MIDI file is gone.
    for midi_path in out["files"]:
        Path(midi_path).unlink()
    again = run_midigen("generate", "--model", str(PRETRAINED), "--num", "2", "--bars", "2", "--seed", "1",
                        "--out", str(tmp_path), "--audio", env=env)
    assert again.returncode == 2 and ".wav exists" in again.stderr and "--force" in again.stderr
    assert not any(p.suffix == ".mid" for p in tmp_path.iterdir())


@pytest.mark.parametrize("args, words", [
    (["--audio", "aiff"], ["aiff", "wav", "mp3"]),
    (["--soundfont", "/no/such/font.sf2"], ["/no/such/font.sf2", "SoundFont"]),
], ids=["unknown-format", "missing-soundfont"])
def test_generate_audio_mistakes_exit_2_and_write_nothing(tmp_path, args, words):
    out = tmp_path / "ideas"
    proc = run_midigen("generate", "--model", str(PRETRAINED), "--num", "2", "--bars", "2", "--out", str(out),
                       *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and all(w in proc.stderr for w in words), proc.stderr
    assert not out.exists() or not any(out.iterdir())


def fake_training(bundle):
    module = SimpleNamespace(net=bundle.model, params=bundle.params, training=False, train=lambda mode=True: None)
    trainer = SimpleNamespace(logger=None, global_step=0)
    return trainer, module


@pytest.mark.parametrize("with_audio", [True, False], ids=["audio", "no-audio"])
def test_sampling_callback_writes_a_page_that_plays_each_sample(tmp_path, with_audio):
    from midigen.producer.bundle import load_bundle
    from midigen.train.callbacks import SamplingCallback

    callback = SamplingCallback(tmp_path / "samples", request={"num": 2, "bars": 2}, audio=with_audio,
                                audio_sample_rate=8000)
    callback.write_samples(*fake_training(load_bundle(PRETRAINED)), epoch=3)
    folder = tmp_path / "samples" / "epoch_003"
    midis = sorted(folder.glob("*.mid"))
    assert len(midis) == 2
    page = (folder / "index.html").read_text()
    players = re.findall(r'<audio controls[^>]* src="([^"]+)"', page)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert all(f"<th>{k}</th>" in page for k in metrics["mean"])  # the metrics, as a table
    for row in metrics["files"].values():
        assert f"{row['in_scale']:.3g}" in page
    # Self-contained: nothing is fetched from anywhere (the MLflow UI shows the page from a blob: URL).
    assert all(src.startswith("data:") for src in re.findall(r'(?:src|href)="([^"]+)"', page))
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == 2
    if not with_audio:
        assert players == [] and not list(folder.glob("*.wav"))
        return
    assert len(players) == 2
    for midi, src in zip(midis, players):
        wav = midi.with_suffix(".wav")
        assert src == "data:audio/wav;base64," + base64.b64encode(wav.read_bytes()).decode()
        samples, rate, _ = read_wav(wav)
        assert rate == 8000 and samples.size / rate == pytest.approx(4 + audio.RELEASE_SECONDS, abs=1e-3)


def test_training_config_turns_audio_on_at_a_low_sample_rate():
    """The defaults live in conf/callbacks, and every key there is one SamplingCallback takes."""
    from omegaconf import OmegaConf
    from test_train import _compose

    from midigen.train.callbacks import SamplingCallback

    sampling = OmegaConf.to_container(_compose().callbacks.sampling)
    assert sampling["audio"] is True and sampling["audio_sample_rate"] == 16000
    callback = SamplingCallback("samples", **sampling)
    assert callback.audio and (callback.audio_sample_rate, callback.audio_format) == (16000, "mp3")


def test_mp3_previews_are_small_and_decode_to_the_clip(tmp_path):
    """The training callback's default: an 8-bar clip at 16 kHz as mp3 is tens of KB, and sounds where the notes are."""
    import soundfile

    midi = make_midi(tmp_path / "c.mid", [(60 + (i % 12), i * 0.5, i * 0.5 + 0.4) for i in range(32)])  # 16 s
    result = audio.render_midi_file(midi, fmt="mp3", sample_rate=16000)
    assert result.path.suffix == ".mp3" and result.bytes < 80_000
    samples, rate = soundfile.read(result.path)
    assert rate == 16000 and abs(len(samples) / rate - result.seconds) < 0.2
    assert np.abs(samples[: rate * 15]).max() > 0.1
