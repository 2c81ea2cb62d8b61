"""A real `mlflow server` on loopback: train, register, alias, generate through it; and a server
that is down or hung fails `train` and `generate` in seconds with one line, never a hang."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from conftest import CORPUS, free_port, mlflow_process, run_midigen

CHECK_TIMEOUT = 5.0  # midigen.tracking.check_reachable's /health probe


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a SQLite store and artifacts proxied through the server
    (`--artifacts-destination`: clients never touch the artifact store themselves)."""
    root = tmp_path_factory.mktemp("server")
    with mlflow_process(["server", "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
                         "--artifacts-destination", str(root / "artifacts")], root / "server.log") as url:
        yield {"url": url, "root": root}


def test_train_register_alias_and_generate_through_a_server(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    env = {"MLFLOW_TRACKING_URI": mlflow_server["url"], "MIDIGEN_CACHE": str(tmp_path / "model-cache")}
    proc = run_midigen("train", "experiment=smoke", f"data.root={CORPUS}", f"paths.cache={tmp_path / 'cache'}",
                       f"paths.outputs={tmp_path / 'out'}", "registry.alias=staging", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "registered models:/midigen/1; @staging moved to the new version" in proc.stdout

    client = MlflowClient(mlflow_server["url"])
    version = client.get_model_version_by_alias("midigen", "staging")
    run = client.get_run(version.tags["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # uploaded through the server
    assert any((mlflow_server["root"] / "artifacts").rglob("model.safetensors"))

    out = tmp_path / "ideas"
    proc = run_midigen("generate", "--model", "models:/midigen@staging", "--num", "2", "--bars", "2",
                       "--seed", "0", "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.mid")) == ["midigen_s0_01.mid", "midigen_s0_02.mid"]
    assert any((tmp_path / "model-cache" / "models").iterdir())  # downloaded through the server, cached


COMMANDS = {
    "train": ["train", "experiment=smoke", f"data.root={CORPUS}"],
    "generate --model": ["generate", "--model", "models:/midigen@staging", "--num", "1"],
    "generate": ["generate", "--num", "1"],  # the default model asks the registry too
}


def _fails_fast(url: str, command: list[str], tmp_path: Path, limit: float) -> None:
    env = {"MLFLOW_TRACKING_URI": url, "MIDIGEN_CACHE": str(tmp_path / "model-cache")}
    extra = [f"paths.outputs={tmp_path / 'out'}"] if command[0] == "train" else ["--out", str(tmp_path / "ideas")]
    started = time.perf_counter()
    proc = run_midigen(*command, *extra, env=env, timeout=120)
    seconds = time.perf_counter() - started
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"midigen: error: MLflow tracking server {url} is not reachable")
    assert seconds < limit, f"{command[0]} took {seconds:.1f} s to notice the server is down"
    assert not (tmp_path / "ideas").exists() and not list((tmp_path / "out").rglob("mlflow_run.json"))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_server_that_is_down_fails_in_seconds(command, tmp_path):
    # `train` imports torch, Lightning, Hydra and MLflow before it can ask (most of its seconds)
    _fails_fast(f"http://127.0.0.1:{free_port()}", COMMANDS[command], tmp_path, limit=25 if command == "train" else 15)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_a_server_that_never_answers_fails_after_the_probe_timeout(command, tmp_path):
    with socket.socket() as hung:  # accepts connections (the kernel does) but never replies
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        _fails_fast(f"http://127.0.0.1:{hung.getsockname()[1]}", COMMANDS[command], tmp_path,
                    limit=CHECK_TIMEOUT + 15)


def test_a_server_behind_an_auth_proxy_counts_as_up():
    """A 401 on /health is an answer: the probe must not call a protected server down."""
    import http.server
    import threading

    from midigen.tracking import check_reachable

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.end_headers()

        def log_message(self, *args):  # noqa: ANN002
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_reachable(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
