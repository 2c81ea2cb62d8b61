"""Row group `studio`: from the studio page's Generate click to eight playable ideas, with the shipped
model, against its 3 s budget and against the CLI doing the same work in the same process.

The click is what the page does: a POST to /api/generate on a real `midigen studio` server
(uvicorn on 127.0.0.1, in a thread of this process), then a GET of each idea's WAV, which is when
its player can play. The CLI's work is `generate`'s without the model load: `generate_batch`,
then `write_clips` writing the MIDI files and their WAVs (`--audio`, the built-in piano) into a
fresh folder. Both use the same requests (8 ideas x 8 bars, seeds 0, 1, ...), the same model
object and the studio's torch threads, timed alternately so that the machine's load falls on both.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from midigen.bench.core import Row, Sizes
from midigen.tracking import repo_root

IDEAS, BARS = 8, 8


def bench_studio(sizes: Sizes) -> list[Row]:
    import torch
    import uvicorn

    from midigen.producer.generate import generate_batch
    from midigen.producer.output import write_clips
    from midigen.producer.registry import locate_model
    from midigen.producer.request import GenerateRequest
    from midigen.producer.studio import Studio, bind, create_app, set_threads

    model = repo_root() / "models" / "pretrained"
    if not (model / "config.json").exists():
        return []
    threads_before = torch.get_num_threads()
    threads = set_threads()
    repeats = max(sizes.cold_start_repeats, 3)  # the ratio of two noisy times needs a few
    with tempfile.TemporaryDirectory(prefix="midigen-bench-studio-") as tmp:
        work = Path(tmp)
        studio = Studio(str(model), work / "keep", work / "studio")
        sock = bind(0)
        server = uvicorn.Server(uvicorn.Config(create_app(studio), log_level="warning", access_log=False,
                                               lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        try:
            _wait_until_up(url)
            studio.warm_up()
            source = locate_model(str(model))

            def click(seed: int) -> dict:
                body = json.dumps({"fields": {"num": str(IDEAS), "bars": str(BARS), "seed": str(seed)}}).encode()
                request = urllib.request.Request(f"{url}/api/generate", body, method="POST", headers={
                    "Content-Type": "application/json", "X-Midigen-Studio": "1"})
                with urllib.request.urlopen(request, timeout=300) as answer:
                    batch = json.loads(answer.read())
                for idea in batch["ideas"]:
                    with urllib.request.urlopen(url + idea["audio_url"], timeout=60) as audio:
                        audio.read()
                return batch

            def cli(seed: int) -> None:
                req = GenerateRequest.from_fields({"num": IDEAS, "bars": BARS, "seed": seed})
                args = argparse.Namespace(out=str(work / f"cli{seed}"), force=False, preview=False, json=False)
                with contextlib.redirect_stdout(io.StringIO()):
                    write_clips(generate_batch(studio.bundle, req), args, source, ("wav", "builtin"), req,
                                studio.bundle)

            page, command = [], []
            for seed in range(repeats):
                start = time.perf_counter()
                cli(seed)
                command.append(time.perf_counter() - start)
                start = time.perf_counter()
                batch = click(seed)
                page.append(time.perf_counter() - start)
            start = time.perf_counter()
            for idea in batch["ideas"]:  # the piano rolls, which the page shows after the players
                with urllib.request.urlopen(url + idea["roll_url"], timeout=120) as roll:
                    roll.read()
            rolls = time.perf_counter() - start
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()
            torch.set_num_threads(threads_before)
    ours, cli_time = min(page), min(command)
    how = (f"{IDEAS} ideas x {BARS} bars (seeds 0-{repeats - 1}) from the shipped model (models/pretrained), torch "
           f"threads {threads} (the studio's), best of {repeats} (medians: page {statistics.median(page):.2f} s, "
           f"CLI {statistics.median(command):.2f} s)")
    return [Row("studio_generate_seconds", ours, 3.0, "s", "< 3 s", 1.0,
                notes=f"the studio page's Generate click to {IDEAS} playable ideas: POST /api/generate to a real "
                      f"`midigen studio` server (generate_batch, judge, MIDI + built-in-piano WAV written) and a "
                      f"GET of each WAV; {how}; the {IDEAS} piano rolls are drawn after, when the page asks for "
                      f"them ({rolls:.2f} s for all); baseline column = the 3 s budget"),
            Row("studio_vs_cli", ours, cli_time, "s", ">= 0.9x (the page adds < 10%)", 0.9,
                notes=f"the same click against the CLI's work in this process on the same model object: "
                      f"generate_batch + write_clips (MIDI files and --audio wav, built-in piano) into a fresh "
                      f"folder, without `generate`'s model load; {how}; alternated click and CLI run")]


def _wait_until_up(url: str, seconds: float = 30.0) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/model", timeout=5).read()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
