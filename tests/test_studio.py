"""`midigen studio`: the page's server as a producer uses it, and the page itself in a real browser.

Fast: the endpoints through Starlette's TestClient on the shipped model (small requests):
the page and its fields (read from GenerateRequest), generate (the same bytes as
`generate_batch`), a bad style or value as a 4xx with its one line, uploads (non-MIDI and
too-large refused, a real clip continued), interpolate, keep (generate's names, all-or-none,
an existing file refused, nothing outside --out), the header and host checks, concurrent
clicks, a broken model, and the command's one-line refusals.

Slow + browser: `midigen studio` as a fresh process, driven by Debian's headless Chromium
(Playwright), as `make test-browser` runs it; and the bench's studio rows.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import pytest

from conftest import REPO, TESTS, make_midi, run_midigen, stop_process_group

from midigen.data.midi_io import TICKS_PER_BEAT
from midigen.producer.request import GenerateRequest
from midigen.producer.studio import HEADER, MAX_UPLOAD_BYTES, NOT_ON_PAGE, Studio, create_app

SHIPPED = REPO / "models" / "pretrained"
SMALL = {"num": "2", "bars": "2", "max_copy": "off"}  # fast requests; the copy check has its own test


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio")
    return Studio(str(SHIPPED), root / "ideas", root / "work")


@pytest.fixture
def client(studio):
    from starlette.testclient import TestClient

    return TestClient(create_app(studio), base_url="http://127.0.0.1", headers={HEADER: "1"})


def generate(client, **fields) -> dict:  # noqa: ANN001
    response = client.post("/api/generate", json={"fields": {**SMALL, **fields}})
    assert response.status_code == 200, response.text
    return response.json()


def upload(client, path: Path, name: str | None = None):  # noqa: ANN001, ANN201
    return client.post("/api/clips", params={"name": name or path.name}, content=path.read_bytes())


def test_the_page_and_its_fields_come_from_the_request(client, studio):
    page = client.get("/")
    assert page.status_code == 200 and "/static/studio.js" in page.text
    assert "script-src" not in page.text and "http" not in page.text.split("<body>")[0]  # nothing from elsewhere
    assert client.get("/static/studio.js").status_code == 200
    info = client.get("/api/model").json()
    request_fields = {f.name: f for f in dataclasses.fields(GenerateRequest)
                      if f.metadata.get("cli", True) and not f.metadata.get("internal")}
    shown = {f["name"]: f for f in info["fields"]}
    assert set(shown) == set(request_fields) - set(NOT_ON_PAGE)
    for name, f in shown.items():  # defaults and help as the request has them, not restated
        assert f["default"] == (list(request_fields[name].default) if isinstance(request_fields[name].default, tuple)
                                else request_fields[name].default)
        assert f["help"] == request_fields[name].metadata["help"]
    assert ("form" in shown) == ("form" in request_fields)
    assert info["model"]["styles"] == studio.bundle.styles and len(info["model"]["styles"]) > 1
    assert info["model"]["card"].startswith("# midigen model")
    assert "shipped pretrained model" in info["model"]["describe"]


def test_generate_gives_generate_batchs_files_with_figures_audio_and_a_roll(client, studio):
    from midigen.producer.generate import generate_batch

    style = {studio.bundle.styles[0]: 0.7, studio.bundle.styles[1]: 0.3}
    response = client.post("/api/generate", json={"fields": {**SMALL, "seed": "11", "bpm": "96"}, "style": style})
    assert response.status_code == 200, response.text
    batch = response.json()
    req = GenerateRequest.from_fields({**SMALL, "seed": "11", "bpm": "96", "style": style})
    expected = generate_batch(studio.bundle, req)
    assert [i["name"] for i in batch["ideas"]] == [r["name"] for r in expected] == ["midigen_s11_01.mid",
                                                                                   "midigen_s11_02.mid"]
    assert batch["seed"] == 11 and not batch["fresh_seed"]
    assert batch["meter"] == "4/4" and batch["own_meter"] is None  # a blend names no style's own meter
    for idea, clip in zip(batch["ideas"], expected):
        midi = client.get(idea["midi_url"])
        assert midi.content == clip["midi"]  # byte for byte what generate writes
        assert midi.headers["content-disposition"] == f'attachment; filename="{clip["name"]}"'
        assert client.get(idea["audio_url"]).content[:4] == b"RIFF"
        assert client.get(idea["roll_url"]).content[:8] == b"\x89PNG\r\n\x1a\n"
        assert isinstance(idea["usable"], bool) and isinstance(idea["reasons"], list)
        assert 0 <= idea["figures"]["on_beat"] <= 1 and idea["figures"]["n_notes"] == len(clip["notes"][0])
    assert generate(client)["fresh_seed"]  # no seed: a fresh one, said


def test_the_copy_ratio_is_shown_where_the_model_has_an_index(client):
    batch = generate(client, num="1", seed="3", max_copy="auto")
    assert 0 <= batch["ideas"][0]["copy"] <= 1


def test_a_users_mistake_is_a_4xx_with_one_line_and_the_server_keeps_serving(client):
    bad_style = client.post("/api/generate", json={"fields": SMALL, "style": {"polka": 1}})
    assert bad_style.status_code == 400
    assert bad_style.json()["error"].startswith("unknown style polka: this model knows chorale")
    for fields, words in [({"top_p": "2"}, "top_p 2.0: use a number in (0, 1]"),
                          ({"temprature": "1"}, "did you mean temperature?"),
                          ({"bars": "x"}, "bars 'x': use a whole number"),
                          ({"primer": "/etc/passwd"}, "primer: not set this way")]:
        answer = client.post("/api/generate", json={"fields": {**SMALL, **fields}})
        assert answer.status_code == 400 and words in answer.json()["error"], answer.text
        assert "\n" not in answer.json()["error"]
    assert client.post("/api/generate", content=b"{", headers={"content-type": "application/json"}).status_code == 400
    assert client.get("/api/model").status_code == 200
    generate(client)


def test_uploads_must_be_midi_and_small_and_a_clip_is_continued(client, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not music")
    refused = upload(client, text)
    assert refused.status_code == 400
    assert refused.json()["error"] == "notes.txt: not a MIDI file (a MIDI file starts with 'MThd'); drop a MIDI clip (.mid)"
    broken = tmp_path / "broken.mid"
    broken.write_bytes(b"MThd\x00\x00\x00\x06garbage")
    assert "broken.mid: not a readable MIDI file" in upload(client, broken).json()["error"]
    big = client.post("/api/clips", params={"name": "big.mid"}, content=b"MThd" + bytes(MAX_UPLOAD_BYTES))
    assert big.status_code == 413 and "2 MB limit" in big.json()["error"]
    sneaky = upload(client, text, name="../../etc/evil.mid")  # a name is only a label
    assert sneaky.json()["error"].startswith("evil.mid: not a MIDI file")

    scale = [60, 62, 64, 65]  # one bar of quarter notes at 480 ticks a beat
    primer = make_midi(tmp_path / "my clip.mid", [(p, i, i + 1) for i, p in enumerate(scale)])
    clip = upload(client, primer).json()
    assert clip["name"] == "my clip.mid" and clip["events"] > 0
    batch = client.post("/api/generate", json={"fields": {**SMALL, "bars": "2", "seed": "4"}, "primer": clip["id"]}).json()
    for idea in batch["ideas"]:
        notes = _notes(client.get(idea["midi_url"]).content)
        assert [(on, pitch) for on, pitch in notes[:4]] == [(i * TICKS_PER_BEAT, p) for i, p in enumerate(scale)]
        assert len(notes) > 4  # and continued
    too_long = client.post("/api/generate", json={"fields": {**SMALL, "bars": "1"}, "primer": clip["id"]})
    assert too_long.status_code == 400
    assert too_long.json()["error"].startswith("primer my clip.mid is as long as the requested 1 bars")


def test_interpolate_two_clips(client, tmp_path):
    a = upload(client, make_midi(tmp_path / "a.mid", [(60 + i % 5, i, i + 1) for i in range(8)])).json()
    b = upload(client, make_midi(tmp_path / "b.mid", [(72 - i % 3, i / 2, i / 2 + 0.5) for i in range(16)])).json()
    answer = client.post("/api/interpolate", json={"fields": {**SMALL, "seed": "2"}, "a": a["id"], "b": b["id"],
                                                   "steps": "3"})
    assert answer.status_code == 200, answer.text
    ideas = answer.json()["ideas"]
    assert [(i["name"], i["weight"]) for i in ideas] == [("midigen_s2_step1of3.mid", 0.0),
                                                         ("midigen_s2_step2of3.mid", 0.5),
                                                         ("midigen_s2_step3of3.mid", 1.0)]
    bad = client.post("/api/interpolate", json={"fields": SMALL, "a": a["id"], "b": b["id"], "steps": "1"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("steps 1: use 2 to")
    assert client.post("/api/interpolate", json={"fields": SMALL, "a": a["id"]}).json()["error"].startswith("B: drop")


def test_keep_writes_generates_names_all_or_none_and_refuses_existing(client, studio):
    batch = generate(client, seed="21")
    ids = [i["id"] for i in batch["ideas"]]
    kept = client.post("/api/keep", json={"ids": ids, "audio": True})
    assert kept.status_code == 200, kept.text
    out = studio.out
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "midigen_s21_01.mid", "midigen_s21_01.wav", "midigen_s21_02.mid", "midigen_s21_02.wav"]
    for idea in batch["ideas"]:
        assert (out / idea["name"]).read_bytes() == client.get(idea["midi_url"]).content
    again = client.post("/api/keep", json={"ids": ids})
    assert again.status_code == 400 and again.json()["error"].startswith("midigen_s21_01.mid exists in")
    assert client.post("/api/keep", json={"ids": ids, "force": True}).status_code == 200
    into = client.post("/api/keep", json={"ids": ids[:1], "folder": "verse/take 1"})
    assert into.status_code == 200 and (out / "verse" / "take 1" / "midigen_s21_01.mid").is_file()
    assert not list(out.rglob(".midigen-staging-*"))


@pytest.mark.parametrize("folder", ["../escape", "/tmp/escape", "verse/../../escape", "..", "a\\..\\b", "link/x"])
def test_keep_never_leaves_the_output_folder(client, studio, tmp_path, folder):
    studio.out.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    link = studio.out / "link"
    if not link.is_symlink():
        link.symlink_to(outside)
    idea = generate(client, num="1")["ideas"][0]
    answer = client.post("/api/keep", json={"ids": [idea["id"]], "folder": folder})
    assert answer.status_code == 400 and answer.json()["error"].startswith("folder"), answer.text
    assert not list(outside.iterdir()) and not (studio.out.parent / "escape").exists()
    assert client.get(f"/ideas/{idea['id']}/midi/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/ideas/../../etc/passwd").status_code == 404


def test_requests_come_from_the_page_on_this_machine(studio):
    from starlette.testclient import TestClient

    app = create_app(studio)
    without = TestClient(app, base_url="http://127.0.0.1").post("/api/generate", json={"fields": SMALL})
    assert without.status_code == 403  # another site's page cannot add the header without a preflight
    assert TestClient(app, base_url="http://evil.example").get("/").status_code == 400  # DNS rebinding
    assert TestClient(app, base_url="http://localhost").get("/").status_code == 200
    assert "frame-ancestors 'none'" in TestClient(app, base_url="http://127.0.0.1").get("/").headers[
        "content-security-policy"]


def test_concurrent_clicks_each_get_their_own_files(client, studio):
    from midigen.producer.generate import generate_batch

    results = {}

    def click(seed: int) -> None:
        results[seed] = client.post("/api/generate", json={"fields": {**SMALL, "seed": str(seed)}}).json()

    threads = [threading.Thread(target=click, args=(seed,)) for seed in (31, 32, 33)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed, batch in results.items():
        expected = generate_batch(studio.bundle, GenerateRequest.from_fields({**SMALL, "seed": seed}))
        assert [client.get(i["midi_url"]).content for i in batch["ideas"]] == [r["midi"] for r in expected]


def test_a_broken_model_is_one_line_on_the_page_and_another_can_be_loaded(tmp_path):
    from starlette.testclient import TestClient

    broken = tmp_path / "broken"
    shutil.copytree(SHIPPED, broken)
    (broken / "config.json").write_text("{not json")
    studio = Studio(str(broken), tmp_path / "ideas", tmp_path / "work")
    client = TestClient(create_app(studio), base_url="http://127.0.0.1", headers={HEADER: "1"})
    info = client.get("/api/model").json()
    assert info["model"] is None and info["error"].startswith(f"{broken / 'config.json'}: not valid JSON")
    answer = client.post("/api/generate", json={"fields": SMALL})
    assert answer.status_code == 503 and "not valid JSON" in answer.json()["error"]
    assert client.post("/api/model", json={"ref": str(tmp_path / "nowhere")}).status_code == 400
    loaded = client.post("/api/model", json={"ref": str(SHIPPED)})
    assert loaded.status_code == 200 and loaded.json()["model"]["styles"]
    generate(client)


def test_the_command_refuses_a_taken_port_and_a_bad_out_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_midigen("studio", "--port", str(port), "--no-browser", "--model", str(SHIPPED), timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(f"midigen: error: --port {port}: cannot listen on")
    (tmp_path / "file").write_text("")
    proc = run_midigen("studio", "--out", str(tmp_path / "file"), "--no-browser", timeout=120)
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _notes(data: bytes) -> list[tuple[int, int]]:
    """(onset tick, pitch) of every note of a MIDI file's bytes, in order."""
    midi = mido.MidiFile(file=io.BytesIO(data))
    now, notes = 0, []
    for msg in midi.tracks[0]:
        now += msg.time
        if msg.type == "note_on" and msg.velocity:
            notes.append((now, msg.note))
    return sorted(notes)


# --- slow: the bench's rows, and the page in a real browser -------------------------------------------


@pytest.mark.slow
def test_bench_studio_rows(tmp_path):
    from midigen.bench.core import Sizes
    from midigen.bench.studio import bench_studio

    rows = {r.name: r for r in bench_studio(Sizes(cold_start_repeats=1))}
    assert set(rows) == {"studio_generate_seconds", "studio_vs_cli"}
    assert rows["studio_generate_seconds"].ours > 0 and rows["studio_vs_cli"].baseline > 0
    assert rows["studio_vs_cli"].ours == rows["studio_generate_seconds"].ours


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own browser download does not work here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
MISSING = (f"no Chromium at {CHROMIUM}" if not CHROMIUM.exists()
           else "no Python `playwright` driver" if importlib.util.find_spec("playwright") is None else None)
SCREENSHOTS = TESTS / ".artifacts" / "studio"
WAIT_MS = 60_000


@pytest.fixture
def studio_server(tmp_path):
    """`midigen studio` as a producer starts it (a fresh process, --port 0), until its address is printed."""
    out = tmp_path / "ideas"
    proc = subprocess.Popen([sys.executable, "-m", "midigen", "studio", "--port", "0", "--no-browser", "--out", str(out),
                             "--model", str(SHIPPED)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, line + proc.stdout.read() if proc.poll() is not None else line
        yield {"url": match.group(0), "out": out}
    finally:
        stop_process_group(proc)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(MISSING is not None, reason=f"{MISSING}: `make test-browser` installs it")
def test_the_page_in_a_real_browser(studio_server, tmp_path):
    """Load, generate four ideas, play one, download one, continue an uploaded clip, interpolate two,
    and a non-MIDI upload's message; a screenshot for the README."""
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    a = make_midi(tmp_path / "verse.mid", [(60 + (i * 2) % 7, i, i + 1) for i in range(8)])
    b = make_midi(tmp_path / "chorus.mid", [(67 + i % 4, i / 2, i / 2 + 0.5) for i in range(16)])
    text = tmp_path / "lyrics.txt"
    text.write_text("la la la")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000}, accept_downloads=True,
            bypass_csp=True)  # the page forbids eval; Playwright's wait_for_function uses it
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        try:
            page.goto(studio_server["url"])
            expect(page.locator("#model-line")).to_contain_text("shipped pretrained model")
            expect(page.locator("#styles input[type=range]")).to_have_count(10)
            page.fill("[data-field=num]", "4")
            page.fill("[data-field=seed]", "7")
            page.locator("#styles input[name=fiddle]").fill("0.8")
            page.click("#generate")
            cards = page.locator(".batch").first.locator(".idea")
            expect(cards).to_have_count(4)
            expect(page.locator("#message")).to_be_hidden()
            page.wait_for_function("[...document.querySelectorAll('.idea img')].every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(SCREENSHOTS / "studio.png"))

            player = cards.first.locator("audio")
            player.evaluate("a => a.play()")
            page.wait_for_function("a => a.currentTime > 0", arg=player.element_handle())
            assert player.evaluate("a => a.error") is None

            with page.expect_download() as download:
                cards.first.locator(".actions a").click()
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            assert saved.name == "midigen_s7_01.mid"
            midi = mido.MidiFile(str(saved))
            assert midi.ticks_per_beat == 960 and len(midi.tracks) == 1
            sig = [m for m in midi.tracks[0] if m.type == "time_signature"]
            assert [(s.numerator, s.denominator) for s in sig] == [(4, 4)]
            assert sum(m.time for m in midi.tracks[0]) == 8 * 4 * 960  # exactly 8 bars: it loops

            page.set_input_files("#primer-file", str(a))
            expect(page.locator("#primer-chosen")).to_contain_text("verse.mid")
            page.click("#generate")
            expect(page.locator(".batch h3").first).to_contain_text("continuing verse.mid")
            expect(page.locator(".batch").first.locator(".idea")).to_have_count(4)

            page.set_input_files("#a-file", str(a))
            page.set_input_files("#b-file", str(b))
            expect(page.locator("#b-chosen")).to_contain_text("chorus.mid")
            page.fill("#steps", "3")
            page.click("#interpolate")
            expect(page.locator(".batch h3").first).to_contain_text("verse.mid to chorus.mid")
            expect(page.locator(".batch").first.locator(".idea")).to_have_count(3)

            page.set_input_files("#primer-file", str(text))
            expect(page.locator("#message")).to_have_text(
                "lyrics.txt: not a MIDI file (a MIDI file starts with 'MThd'); drop a MIDI clip (.mid)")
            page.screenshot(path=str(SCREENSHOTS / "studio-error.png"))
        finally:
            context.close()
