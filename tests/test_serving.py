"""The registered model as MLflow's own tools see it: its signature (built from the producer's
request), its input example, and `mlflow models serve` answering a generate request, a primer
request and a bad request."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path

import mido
import pytest

from conftest import REPO, free_port, make_midi, stop_process_group

STYLES = ["chorale", "fiddle"]


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """models:/midigen@champion in a new store: a tiny random model's bundle, logged and
    registered by `registration.log_model`, as a training run's end does (seconds, no training)."""
    import mlflow
    import torch
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from midigen import tracking
    from midigen.data.events import EventParams
    from midigen.model import EventLSTM, ModelConfig
    from midigen.producer.bundle import save_bundle
    from midigen.train import registration

    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    params = EventParams.beat()
    torch.manual_seed(0)
    net = EventLSTM(ModelConfig(vocab_size=params.vocab_size, hidden_size=16, num_layers=1, embedding_dim=8,
                                styles=STYLES))
    registration.save_tokenizer(params.to_dict(), root / "tok")
    with _use_tracking_uri(uri):  # log_model sets the process's tracking URI; put it back after
        run_id = MlflowClient(uri).create_run(tracking.ensure_experiment("serving", uri)).info.run_id
        bundle = save_bundle(root / "bundle", net, root / "tok" / "tokenizer.json", {"run_id": run_id})
        registration.log_model(run_id, bundle, uri, "midigen", alias="champion")
        model = mlflow.pyfunc.load_model("models:/midigen@champion")
        info = mlflow.models.get_model_info("models:/midigen@champion")
    return {"uri": uri, "root": root, "model": model, "info": info}


def request_fields() -> list:
    from midigen.producer.request import GenerateRequest

    return [f for f in fields(GenerateRequest) if f.metadata.get("cli", True) and not f.metadata.get("internal")]


# --- the signature ------------------------------------------------------------------------------


def test_the_signature_is_the_request_primer_in_settings_as_params_with_their_defaults():
    from midigen.train.registration import signature

    sig = signature()
    assert [(c.name, c.type.name, c.required) for c in sig.inputs.inputs] == [("primer", "string", False)]
    assert [(c.name, c.type.name) for c in sig.outputs.inputs] == [("name", "string"), ("midi", "binary")]
    params = {p.name: p for p in sig.params.params}
    assert list(params) == [f.name for f in request_fields() if f.name != "primer"]
    for f in request_fields():
        if f.name != "primer":
            assert params[f.name].default == (f.default if f.default is None or isinstance(f.default, (int, float))
                                              else str(f.default)), f.name
    assert params["seed"].default is None  # a fresh seed per call, as the CLI
    kinds = {name: p.dtype.name for name, p in params.items()}
    assert (kinds["num"], kinds["bpm"], kinds["style"], kinds["note_range"]) == ("long", "double", "string", "string")


def test_a_field_added_to_the_request_appears_in_the_signature(monkeypatch):
    from midigen.producer.request import GenerateRequest
    from midigen.train import registration

    @dataclass
    class Extended(GenerateRequest):
        swing: float = field(default=0.5, metadata={"help": "late 8ths", "cli": True, "metavar": None})
        hidden: str | None = field(default=None, metadata={"help": "", "cli": False})

    monkeypatch.setattr(registration, "GenerateRequest", Extended)
    params = {p.name: p for p in registration.signature().params.params}
    assert (params["swing"].dtype.name, params["swing"].default) == ("double", 0.5)
    assert "hidden" not in params and "context" not in params and "fresh_seed" not in params


def test_the_registered_model_carries_its_signature_and_an_example(champion):
    from midigen.train.registration import signature

    info = champion["info"]
    assert info.signature == signature()
    assert info.saved_input_example_info["params"] == "true"  # the example sets params, served as one
    assert champion["model"].input_example == {"primer": None}
    frame = champion["model"].predict({}, params={"num": 2, "bars": 2, "seed": 5})
    again = champion["model"].predict({}, params={"num": 2, "bars": 2, "seed": 5})
    assert list(frame["name"]) == ["midigen_s5_01.mid", "midigen_s5_02.mid"]
    assert list(frame["midi"]) == list(again["midi"])  # same seed, same bytes


# --- requests as the scoring server takes them ------------------------------------------------


def midi_of(encoded: str) -> mido.MidiFile:
    return mido.MidiFile(file=io.BytesIO(base64.b64decode(encoded)))


def check_daw_facts(midi: mido.MidiFile, bars: int) -> list[tuple[int, int]]:
    """The DAW facts every file keeps; returns its notes as (onset tick, pitch)."""
    assert midi.ticks_per_beat == 960 and len(midi.tracks) == 1
    metas = {m.type: m for m in midi.tracks[0] if m.is_meta}
    assert (metas["time_signature"].numerator, metas["time_signature"].denominator) == (4, 4)
    now, onsets = 0, []
    for msg in midi.tracks[0]:
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            onsets.append((now, msg.note))
    assert now == bars * 4 * 960  # bar-exact: it loops
    return onsets


def primer_text(tmp_path: Path) -> str:
    """A one-bar clip (C E G C' on the beats), as a client sends it: base64 text."""
    path = make_midi(tmp_path / "primer.mid", [(60, 0, 1), (64, 1, 2), (67, 2, 3), (72, 3, 4)])
    return base64.b64encode(path.read_bytes()).decode()


PRIMER_ONSETS = [(0, 60), (960, 64), (1920, 67), (2880, 72)]


def invoke(model, payload: dict) -> tuple[int, dict]:
    """What `POST /invocations` answers: (status, JSON)."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        answer = scoring_server.invocations(json.dumps(payload), "application/json", model,
                                            model.metadata.get_input_schema())
    except MlflowException as exc:
        return exc.get_http_status_code(), json.loads(exc.serialize_as_json())
    return answer.status, json.loads(answer.response)


BAD_REQUESTS = [  # (params, inputs, a word the refusal must name)
    ({"num": "two"}, {}, "num"),
    ({"num": 0}, {}, "num"),
    ({"temperature": "hot"}, {}, "temperature"),
    ({"style": "jazz"}, {}, "jazz"),
    ({"note_range": "99-20"}, {}, "note_range"),
    ({}, {"primer": "/etc/hostname"}, "primer"),  # a served model reads no paths
    ({}, {"primer": "TVRoZA"}, "primer"),  # not whole base64 of a MIDI file
]


def test_served_requests_generate_continue_and_refuse(champion, tmp_path, monkeypatch):
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")  # as `mlflow models serve` sets it
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where a sent primer is written for the request
    model = champion["model"]
    status, body = invoke(model, {"inputs": {}, "params": {"num": 2, "bars": 2, "seed": 3, "style": "fiddle"}})
    assert status == 200, body
    assert [p["name"] for p in body["predictions"]] == ["midigen_s3_01.mid", "midigen_s3_02.mid"]
    for p in body["predictions"]:
        check_daw_facts(midi_of(p["midi"]), bars=2)
    # events instead of bars: the filled-in default bars must not clash with it
    status, body = invoke(model, {"inputs": {}, "params": {"num": 1, "events": 40, "seed": 3}})
    assert status == 200, body

    status, body = invoke(model, {"inputs": {"primer": primer_text(tmp_path)}, "params": {"bars": 3, "seed": 4}})
    assert status == 200, body
    for p in body["predictions"]:
        assert check_daw_facts(midi_of(p["midi"]), bars=3)[:4] == PRIMER_ONSETS  # kept verbatim at the start

    for params, inputs, word in BAD_REQUESTS:
        status, body = invoke(model, {"inputs": inputs, "params": params})
        assert 400 <= status < 500 and word in body["message"], (params, inputs, status, body)
    assert not list(scratch.iterdir())  # each sent primer's temporary file is gone with its request


# --- `mlflow models serve`, for real ------------------------------------------------------------


def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_make_serve_answers_over_http(champion, tmp_path):
    """`make serve` (`mlflow models serve -m models:/midigen@champion --env-manager local` with the
    venv's bin on PATH) answers /invocations: files, a continued primer, a refusal naming the field."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("_MLFLOW")}
    env.update(MLFLOW_TRACKING_URI=champion["uri"], PORT=str(port), MLFLOW_DISABLE_TELEMETRY="true",
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    # -o: the venv is installed already; never reinstall from a test.
    with log_path.open("w") as log:
        proc = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", "serve", "MODEL=models:/midigen@champion"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"mlflow models serve did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        status, body = post(f"{url}/invocations", {"inputs": {}, "params": {"num": 2, "bars": 4, "seed": 9}})
        assert status == 200, body
        assert [p["name"] for p in body["predictions"]] == ["midigen_s9_01.mid", "midigen_s9_02.mid"]
        for p in body["predictions"]:
            check_daw_facts(midi_of(p["midi"]), bars=4)
        status, body = post(f"{url}/invocations", {"inputs": {"primer": primer_text(tmp_path)},
                                                   "params": {"bars": 2, "num": 1, "seed": 1}})
        assert status == 200, body
        assert check_daw_facts(midi_of(body["predictions"][0]["midi"]), bars=2)[:4] == PRIMER_ONSETS
        status, body = post(f"{url}/invocations", {"inputs": {}, "params": {"bars": 100000}})
        assert status == 400 and "bars 100000: use 1 to 256 bars" in body["message"], body
        status, body = post(f"{url}/invocations", {"inputs": {}, "params": {"num": "two"}})
        assert status == 400 and "'num'" in body["message"], body
    finally:
        stop_process_group(proc)
