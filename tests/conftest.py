"""Shared fixtures: small real MIDI files (exported from music21's corpus) and MIDI made here."""

from __future__ import annotations

import os
import shutil
import subprocess
import contextlib
import hashlib
import sys
from pathlib import Path

import mido
import pytest

TESTS = Path(__file__).resolve().parent
CORPUS = TESTS / "data" / "corpus"  # 8 Bach chorales + 8 Ryan's Mammoth fiddle tunes, from music21
REPO = TESTS.parent


def vlq(n: int) -> bytes:
    """A MIDI variable-length quantity (delta times, meta lengths), for writing files byte by byte."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def make_midi(path: Path, notes: list[tuple[int, float, float]], bpm: float = 120.0, tpb: int = 480,
              tempo_changes: list[tuple[float, float]] | None = None, channel: int = 0, kind: int = 0) -> Path:
    """Write notes [(pitch, start_beat, end_beat)] at `bpm` (plus [(beat, bpm)] tempo changes)."""
    events = []
    for pitch, start, end in notes:
        events.append((round(start * tpb), 1, pitch))
        events.append((round(end * tpb), 0, pitch))
    for beat, new_bpm in tempo_changes or []:
        events.append((round(beat * tpb), -1, new_bpm))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    now = 0
    for tick, what, value in events:
        if what == -1:
            track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(value), time=tick - now))
        elif what == 1:
            track.append(mido.Message("note_on", note=value, velocity=80, channel=channel, time=tick - now))
        else:
            track.append(mido.Message("note_off", note=value, velocity=0, channel=channel, time=tick - now))
        now = tick
    midi = mido.MidiFile(type=kind, ticks_per_beat=tpb)
    midi.tracks.append(track)
    midi.save(str(path))
    return path


@pytest.fixture
def corpus_dir() -> Path:
    return CORPUS


@pytest.fixture
def corpus_copy(tmp_path) -> Path:
    dest = tmp_path / "corpus"
    shutil.copytree(CORPUS, dest)
    return dest


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under `folder`: relative path -> (sha256 or "dir", mtime in ns)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        what = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        found[path.relative_to(folder).as_posix()] = (what, path.stat().st_mtime_ns)
    return found


def run_midigen(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300):
    """Run the `midigen` command in a fresh process (Hydra owns sys.argv and global state)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "midigen", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One smoke training run on the committed corpus, shared by the training and generation tests.

    Returns a dict with the store URI, the run's output folder and its model bundle.
    """
    root = tmp_path_factory.mktemp("smoke")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "MIDIGEN_CACHE": str(root / "model-cache")}
    proc = run_midigen("train", "experiment=smoke", f"data.root={CORPUS}", f"paths.cache={root / 'cache'}",
                       f"paths.outputs={root / 'outputs'}", "trainer.max_epochs=3", "registry.alias=champion",
                       env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dirs = [p.parent for p in (root / "outputs").rglob("mlflow_run.json")]
    assert len(run_dirs) == 1
    return {"uri": uri, "env": env, "root": root, "run_dir": run_dirs[0], "bundle": run_dirs[0] / "bundle",
            "stdout": proc.stdout}


def stop_process_group(proc) -> None:  # noqa: ANN001 - a Popen started with start_new_session=True
    """End a server and its children: SIGTERM, then SIGKILL if it has not exited within 15 s."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_process(args: list[str], log_path: Path, env: dict | None = None):
    """`mlflow <args>` (ui or server) on 127.0.0.1 and a free port, in its own process group;
    waits for /health (120 s at most) and yields its URL; torn down whole on the way out."""
    import time
    import urllib.request

    url = f"http://127.0.0.1:{(port := free_port())}"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), *args, "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
             **(env or {})})
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"mlflow {args[0]} did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        stop_process_group(proc)
        log.close()
