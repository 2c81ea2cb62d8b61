"""Every producer command does what was asked, or says in one line why not (exit 2), with
nothing half-written: bad options, bad model folders, two writers into one folder, signals,
long clips, a closed pipe, the pyfunc's loosely typed requests, and a fuzz of the request."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, make_midi, run_midigen

PRETRAINED = REPO / "models" / "pretrained"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """`midigen ARGS` in this process (fast: no interpreter start-up); (status, stdout, stderr)."""
    from midigen.cli import main

    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_line_refusal(status: int, err: str, needle: str) -> None:
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("midigen: error: "), err
    assert needle in err, err
    assert "Traceback" not in err


BAD_OPTIONS = [
    (["--temperature", "nan"], "--temperature"), (["--temperature", "0"], "--temperature"),
    (["--temperature", "-1"], "--temperature"), (["--temperature", "inf"], "--temperature"),
    (["--style", "chorale=nan"], "finite"), (["--style", "chorale=inf"], "finite"),
    (["--style", ""], "name a style"), (["--style", "chorale=1,chorale=2"], "named twice"),
    (["--style", "=1"], "style name is missing"), (["--style", "jazz"], "unknown style jazz"),
    (["--max-note-beats", "-1"], "--max-note-beats"), (["--max-note-beats", "nan"], "--max-note-beats"),
    (["--seed", "-1"], "--seed"), (["--seed", str(2**70)], "--seed"), (["--seed", "1.5"], "whole number"),
    (["--num", "100000"], "1 to 128"), (["--num", "0"], "1 to 128"), (["--events", "100000000"], "--events"),
    (["--bars", "100000"], "1 to 256"), (["--top-p", "0"], "--top-p"), (["--top-p", "nan"], "--top-p"),
    (["--bpm", "inf"], "--bpm"), (["--note-range", "90-20"], "--note-range"), (["--note-range", "x"], "LOW-HIGH"),
    (["--voices", "0"], "--voices"), (["--start", "nope"], "--start"), (["--name", "///"], "--name"),
    (["--name", "n" * 300], "bytes"), (["--velocity", "0"], "--velocity"), (["--max-copy", "2"], "--max-copy"),
    (["--key", "H major"], "--key"), (["--kernels", "gpu"], "--kernels"), (["--grid", "1/32"], "--grid"),
    (["--style-strength", "9"], "--style-strength"), (["--style-strength", "-1"], "--style-strength"),
    (["--repetition-penalty", "nan"], "--repetition-penalty"), (["--lead-in", "5"], "--lead-in"),
    (["--lead-in", "-1"], "--lead-in"), (["--lead-in", "0.5"], "whole number"),
]


@pytest.mark.parametrize("args,needle", BAD_OPTIONS, ids=[" ".join(a)[:40] for a, _ in BAD_OPTIONS])
def test_bad_options_are_one_line_and_write_nothing(capsys, tmp_path, args, needle):
    out = tmp_path / "ideas"
    length = [] if "--events" in args or "--bars" in args else ["--bars", "1"]
    status, _, err = cli(capsys, "generate", "--model", str(PRETRAINED), "--num", "2", *length,
                         "--out", str(out), *args)
    one_line_refusal(status, err, needle)
    assert not out.exists() or not any(out.iterdir())


def test_bad_out_folders_are_one_line(capsys, tmp_path):
    a_file = tmp_path / "song.mid"
    a_file.write_bytes(b"x")
    for out, needle in ((a_file, "is a file"), (a_file / "sub", "is a file"), (a_file / "a" / "b", "is a file")):
        status, _, err = cli(capsys, "generate", "--model", str(PRETRAINED), "--num", "1", "--bars", "1",
                             "--out", str(out))
        one_line_refusal(status, err, needle)
    # a folder where a clip would go is refused, even with --force, and not reported as written
    (tmp_path / "ideas" / "x_s1_01.mid").mkdir(parents=True)
    status, _, err = cli(capsys, "generate", "--model", str(PRETRAINED), "--num", "1", "--bars", "1",
                         "--name", "x", "--seed", "1", "--force", "--out", str(tmp_path / "ideas"))
    one_line_refusal(status, err, "is a folder")


def _break(folder, how: str) -> None:
    config = json.loads((folder / "config.json").read_text())
    if how == "config not json":
        (folder / "config.json").write_text("{")
    elif how == "config a list":
        (folder / "config.json").write_text("[]")
    elif how == "absurd hidden size":
        config["model"]["hidden_size"] = 10**7
        (folder / "config.json").write_text(json.dumps(config))
    elif how == "tokenizer empty":
        (folder / "tokenizer.json").write_text("{}")
    elif how == "tokenizer of another model":
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        params = tokenizer["config"]["additional_params"] if "config" in tokenizer else tokenizer
        params["max_shift"] = params["max_shift"] + 5
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    elif how == "weights garbage":
        (folder / "model.safetensors").write_bytes(os.urandom(500))
    elif how == "weights of another shape":
        config["model"]["hidden_size"] = config["model"]["hidden_size"] // 2
        (folder / "config.json").write_text(json.dumps(config))
    elif how.startswith("top_p"):  # a fine-tune's per-style sampling setting, edited by hand
        config["sampling"] = {"top_p": {"nope": 0.9} if how == "top_p of an unknown style" else {"chorale": 1.5}}
        (folder / "config.json").write_text(json.dumps(config))
    elif how.startswith("strength"):  # a calibrated style strength, edited by hand
        config["sampling"] = {"top_p": {}, "style_strength": {"chorale": -1} if how == "strength below 0"
                              else {"nope": 1.0}}
        (folder / "config.json").write_text(json.dumps(config))
    elif how == "lean_from of an unknown style":  # a fine-tune's base styles, edited by hand
        config["sampling"] = {"top_p": {}, "lean_from": ["chorale", "nope"]}
        (folder / "config.json").write_text(json.dumps(config))


BROKEN = [("config not json", "config.json: not valid JSON"), ("config a list", "config.json: expected a JSON object"),
          ("absurd hidden size", "hidden_size=10000000"), ("tokenizer empty", "tokenizer.json: not a midigen tokenizer"),
          ("tokenizer of another model", "different models"), ("weights garbage", "model.safetensors: not readable"),
          ("weights of another shape", "model.safetensors"),
          ("top_p of an unknown style", "sampling.top_p names 'nope'"), ("top_p above 1", "not a mass in (0, 1]"),
          ("strength below 0", "not a strength from 0"), ("strength of an unknown style", "sampling.style_strength names"),
          ("lean_from of an unknown style", "sampling.lean_from is ['chorale', 'nope']")]


@pytest.mark.parametrize("how,needle", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_model_folders_are_one_line_naming_the_file(capsys, tmp_path, how, needle):
    folder = tmp_path / "model"
    shutil.copytree(PRETRAINED, folder)
    _break(folder, how)
    status, _, err = cli(capsys, "generate", "--model", str(folder), "--num", "1", "--bars", "1",
                         "--out", str(tmp_path / "ideas"))
    one_line_refusal(status, err, needle)
    assert not (tmp_path / "ideas").exists() or not any((tmp_path / "ideas").iterdir())


def test_long_clips_have_music_to_their_last_bar(capsys, tmp_path):
    status, out, err = cli(capsys, "generate", "--model", str(PRETRAINED), "--num", "2", "--bars", "128",
                           "--seed", "4", "--style", "chorale", "--max-copy", "off", "--out", str(tmp_path), "--json")
    assert status == 0, err
    for path in json.loads(out)["files"]:
        midi = mido.MidiFile(path)
        now, onsets = 0, []
        for msg in midi.tracks[0]:
            now += msg.time
            if msg.type == "note_on" and msg.velocity:
                onsets.append(now)
        bar = 4 * midi.ticks_per_beat
        assert now == 128 * bar and max(onsets) >= 127 * bar  # notes in the last bar, not silence


def test_the_default_seed_is_fresh_and_printed(capsys, tmp_path):
    seeds = []
    for _ in range(2):
        status, out, err = cli(capsys, "generate", "--model", str(PRETRAINED), "--num", "1", "--bars", "1",
                               "--out", str(tmp_path))
        assert status == 0, err
        line = next(line for line in out.splitlines() if line.startswith("seed: "))
        seeds.append(int(line.split()[1]))
        assert "--seed" in line
    assert seeds[0] != seeds[1] and len(list(tmp_path.glob("*.mid"))) == 2
    status, _, _ = cli(capsys, "generate", "--model", str(PRETRAINED), "--num", "1", "--bars", "1",
                       "--seed", str(seeds[0]), "--out", str(tmp_path / "again"))
    assert (tmp_path / "again" / f"midigen_s{seeds[0]}_01.mid").read_bytes() == \
        (tmp_path / f"midigen_s{seeds[0]}_01.mid").read_bytes()


def test_the_dance_group_is_the_even_blend_of_the_dance_tune_styles():
    from midigen.producer.bundle import load_bundle
    from midigen.producer.clip import style_weights

    bundle = load_bundle(PRETRAINED)
    weights = dict(zip(bundle.styles, style_weights(bundle, {"dance": 1.0, "chorale": 1.0}).tolist()))
    assert weights["chorale"] == 1.0 and weights["folk"] == 0.0
    assert all(weights[s] == pytest.approx(0.2) for s in ("fiddle", "irish", "scottish", "northumbrian", "fife"))


def test_a_unicode_name_is_kept_in_the_file_name(capsys, tmp_path):
    status, out, err = cli(capsys, "generate", "--model", str(PRETRAINED), "--num", "1", "--bars", "1",
                           "--name", "idée_日本", "--seed", "2", "--out", str(tmp_path))
    assert status == 0, err
    assert (tmp_path / "idée_日本_s2_01.mid").exists()


def _generate_process(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "midigen", "generate", "--model", str(PRETRAINED), "--num", "4",
                             "--bars", "8", "--seed", "5", "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_two_writers_into_one_folder_never_clobber(tmp_path):
    out = tmp_path / "ideas"
    slow, fast = _generate_process(out, "--audio"), _generate_process(out)
    results = [(p.wait(timeout=300), p.communicate()) for p in (slow, fast)]
    statuses = sorted(status for status, _ in results)
    assert statuses == [0, 2], results
    loser_err = next(err for status, (_, err) in results if status == 2)
    assert "exists" in loser_err and loser_err.count("\n") == 1
    winner = next(out_text for status, (out_text, _) in results if status == 0)
    reference = tmp_path / "reference"
    assert _generate_process(reference).wait(timeout=300) == 0
    for path in sorted(reference.glob("*.mid")):
        assert (out / path.name).read_bytes() == path.read_bytes()  # whole files of one run, not a mix
    assert not [p for p in out.iterdir() if p.name.startswith(".midigen-staging")]
    assert "wrote" in winner


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"])
def test_a_signal_leaves_nothing_half_written(tmp_path, signum, status):
    out = tmp_path / "ideas"
    proc = subprocess.Popen([sys.executable, "-m", "midigen", "generate", "--model", str(PRETRAINED), "--num", "6",
                             "--bars", "16", "--seed", "5", "--audio", "--kernels", "python", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.time() + 120
    while not (out.exists() and any(p.name.startswith(".midigen-staging") for p in out.iterdir())):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert err.count("\n") == 1 and "Traceback" not in err and "nothing half-written" in err
    assert [p.name for p in out.iterdir() if p.name != ".midigen.lock"] == []


def test_a_closed_pipe_is_quiet(tmp_path):
    proc = subprocess.run(f"{sys.executable} -m midigen generate --model {PRETRAINED} --num 8 --bars 1 "
                          f"--out {tmp_path} | head -1", shell=True, capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.startswith("model: ") and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert len(list(tmp_path.glob("*.mid"))) == 8  # the files were written before anything was printed


def test_a_primer_whose_notes_never_end_says_so(capsys, tmp_path):
    primer = tmp_path / "held.mid"
    track = mido.MidiTrack([mido.Message("note_on", note=60, velocity=80, time=0),
                            mido.MetaMessage("end_of_track", time=960)])
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    midi.save(str(primer))
    status, _, err = cli(capsys, "generate", "--model", str(PRETRAINED), "--num", "1", "--bars", "2",
                         "--primer", str(primer), "--out", str(tmp_path / "ideas"))
    one_line_refusal(status, err, f"--primer {primer}: its notes never end")


def test_interpolate_names_its_clips_not_an_option_it_lacks(capsys, tmp_path):
    a = make_midi(tmp_path / "a.mid", [(60, 0, 1), (64, 1, 2)])
    status, _, err = cli(capsys, "interpolate", str(a), str(tmp_path / "missing.mid"), "--model", str(PRETRAINED),
                         "--out", str(tmp_path / "ideas"))
    one_line_refusal(status, err, "B (")
    assert "--context" not in err


# --- the pyfunc's requests ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyfunc_model():
    from midigen.producer.pyfunc import MidigenPyfunc

    model = MidigenPyfunc()
    model.load_context(type("Context", (), {"artifacts": {"bundle": str(PRETRAINED)}})())
    return model


def test_pyfunc_takes_a_style_name_and_refuses_unknown_keys_and_types(pyfunc_model):
    from mlflow.exceptions import MlflowException

    frame = pyfunc_model.predict(None, {"style": "chorale", "num": 2, "bars": 1, "seed": 3})
    assert len(frame) == 2 and all(m[:4] == b"MThd" for m in frame["midi"])
    for request, needle in (({"temprature": 0.5}, "did you mean temperature"), ({"num": 1.7}, "num 1.7"),
                            ({"bars": 100000}, "bars"), ({"temperature": "hot"}, "temperature 'hot'"),
                            ({"style": 3}, "style"), ({"note_range": [99, 20]}, "note_range")):
        with pytest.raises(MlflowException, match=needle):
            pyfunc_model.predict(None, request)


# --- the request, fuzzed ----------------------------------------------------------------------------

ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                      st.text(max_size=12), st.lists(st.integers(-5, 200), max_size=3),
                      st.dictionaries(st.text(max_size=6), st.floats(allow_nan=True), max_size=3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["num", "bars", "events", "bpm", "temperature", "top_k", "top_p", "style",
                                        "key", "scale", "seed", "note_range", "voices", "start", "repetition_penalty",
                                        "max_note_beats", "velocity", "name", "max_copy", "kernels", "grid", "style_strength",
                                        "lead_in", "typo"]),
                       ANY_VALUE, max_size=6))
def test_any_request_is_built_or_refused_in_words(values):
    from midigen.errors import MidigenError
    from midigen.producer.request import GenerateRequest

    try:
        req = GenerateRequest.from_fields(values)
    except MidigenError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert 1 <= req.num <= 128 and req.temperature > 0 and (req.top_p is None or 0 < req.top_p <= 1)
    assert req.style_strength is None or 0 <= req.style_strength <= 8


def test_generate_says_when_a_style_lives_in_another_meter(tmp_path, capsys):
    """The shipped reference knows each style's meter: medieval's windows are mostly in 3-beat bars
    (6/8), so a 4/4 clip of it says `--meter 6/8` would write it in its own; a madrigal (4/4) or a
    medieval clip asked for in 3/4 says nothing."""
    from midigen.cli import main

    def run(*extra: str) -> str:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert main(["generate", "--num", "1", "--bars", "2", "--seed", "1", "--out", str(out), *extra]) == 0
        return capsys.readouterr().out

    assert "--meter 6/8 writes the style in its own" in run("--style", "medieval")
    assert "meter:" not in run("--style", "medieval", "--meter", "3/4")
    assert "meter:" not in run("--style", "madrigal")
    assert '"own_meter": {"style": "medieval", "meter": "6/8", "beats": 3' in run("--style", "medieval", "--json")
