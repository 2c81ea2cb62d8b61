"""The MLflow UI in a real headless Chromium, as a team member uses it after a sweep.

Two smoke runs of a sweep (model.hidden_size=16,32) are trained into a fresh SQLite store,
`mlflow ui` serves it the way `make ui` does, and the browser checks that:

(a) the experiment opens on its runs table (its `mlflow.experimentKind` tag: no GenAI pages
    first), which lists both runs, named by the hidden size that tells them apart, with their
    model.hidden_size and val/nll once those columns are picked in the column selector (MLflow
    shows neither by default);
(b) a run's page lists its metrics and parameters with the values in the store, and the corpus
    it trained on as its dataset (name and digest), and its metric charts draw val/nll;
(c) the run's artifact view shows a sample's piano roll under samples/epoch_XXX/, and the
    epoch's index.html (rendered by MLflow in a sandboxed iframe) holds a piano roll and a
    player per sample, and a player really plays when clicked;
(d) the compare view puts the two runs side by side, their differing hidden_size in the
    parameters' diff and val/nll among the metrics;
(e) the registered model `midigen` and its version show the model card as description.

A screenshot of every page goes to tmp_path/screenshots and to tests/.artifacts/mlflow_ui/
(git-ignored) for a human to look at. Skipped when Chromium or the Python `playwright` driver
is missing; `make test-browser` installs both and runs this for real.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import CORPUS, TESTS, mlflow_process, run_midigen

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own browser download does not work here
# What the closed network and a container need: no sandbox, no GPU, nothing calling home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MISSING = (f"no Chromium at {CHROMIUM}" if not CHROMIUM.exists()
           else "no Python `playwright` driver" if importlib.util.find_spec("playwright") is None else None)
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(MISSING is not None, reason=f"{MISSING}: `make test-browser` installs it")]
SCREENSHOTS = TESTS / ".artifacts" / "mlflow_ui"
HIDDEN_SIZES = ("16", "32")
WAIT_MS = 60_000  # the SPA's first paint on a busy 2-core machine


def mlflow_ui(store_uri: str, artifact_root: Path, log_path: Path):
    """`mlflow ui` over `store_uri` on 127.0.0.1, as `make ui` starts it; a context that yields its URL."""
    return mlflow_process(["ui", "--backend-store-uri", store_uri, "--default-artifact-root", artifact_root.as_uri()],
                          log_path)


@pytest.fixture
def sweep(tmp_path):
    """Two smoke runs of one sweep in a fresh store, each registered as a version of `midigen`.

    The experiment is created first with its artifacts under tmp_path (the layout midigen
    gives the project store: <artifact root>/<experiment>/<run id>/artifacts), so nothing
    lands in the checkout's mlartifacts/."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifact_root = tmp_path / "mlartifacts"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("smoke", artifact_location=(artifact_root / "smoke").as_uri())
    env = {"MLFLOW_TRACKING_URI": uri, "MIDIGEN_CACHE": str(tmp_path / "model-cache")}
    proc = run_midigen("train", "-m", "experiment=smoke", f"data.root={CORPUS}", f"paths.cache={tmp_path / 'cache'}",
                       f"paths.outputs={tmp_path / 'out'}", f"model.hidden_size={','.join(HIDDEN_SIZES)}",
                       env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {r.data.params["model.hidden_size"]: r for r in client.search_runs([experiment_id])}
    assert sorted(runs) == sorted(HIDDEN_SIZES)
    for size, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"smoke #{run.data.tags['sweep_job']} model.hidden_size={size}"
        assert run.info.artifact_uri.startswith((artifact_root / "smoke").as_uri())
    epochs = sorted(a.path for a in client.list_artifacts(runs["32"].info.run_id, "samples") if a.is_dir)
    samples = [a.path for a in client.list_artifacts(runs["32"].info.run_id, epochs[-1])]
    model = client.get_registered_model("midigen")
    newest = max(client.search_model_versions("name='midigen'"), key=lambda v: int(v.version))
    return {"uri": uri, "artifact_root": artifact_root, "experiment_id": experiment_id, "runs": runs,
            "epoch_dir": epochs[-1], "samples": samples, "model": model, "version": newest}


@pytest.fixture
def browser(tmp_path):
    """A Playwright page in Debian's headless Chromium with a fresh profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(WAIT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()


class Screenshots:
    """Each page as a PNG in tmp_path/screenshots and in tests/.artifacts/mlflow_ui/."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True)
        shutil.rmtree(SCREENSHOTS, ignore_errors=True)
        SCREENSHOTS.mkdir(parents=True)

    def take(self, page, name: str) -> None:  # noqa: ANN001
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path))
        shutil.copyfile(path, SCREENSHOTS / path.name)


def _open(page, url: str) -> None:  # noqa: ANN001
    """Open a page of the SPA and close the MLflow Assistant side panel it opens on a first visit."""
    page.goto(url)
    page.wait_for_load_state("domcontentloaded")
    assistant = page.get_by_role("button", name="Close", exact=True)
    try:
        assistant.first.click(timeout=5000)
    except Exception:  # noqa: BLE001  (not shown this time: nothing to close)
        pass


def _add_runs_table_column(page, kind: str, name: str) -> None:  # noqa: ANN001
    """Tick `name` in the runs table's column selector, as a user does: open "Columns", search,
    tick. The selector re-renders (and collapses its groups) while the page settles; retry."""
    header = page.locator(f"[role=columnheader][col-id='{kind}.`{name}`']")
    for _ in range(8):
        if header.count():
            return
        search = page.get_by_placeholder("Search columns")
        try:
            if not search.is_visible():
                page.get_by_role("button", name="Columns", exact=True).click(timeout=5000)
            search.fill(name, timeout=5000)
            collapsed = page.locator("[class*='tree-switcher_close']")
            for _ in range(collapsed.count()):
                collapsed.first.click(timeout=2000)
            title = page.locator("[class*='tree-title']").get_by_text(name, exact=True).first
            node = title.locator("xpath=ancestor::div[contains(@class,'tree-treenode')][1]")
            node.locator("[class*='tree-checkbox']").first.click(timeout=5000)
            page.keyboard.press("Escape")
            header.first.wait_for(timeout=5000)
        except Exception:  # noqa: BLE001  (re-rendered under us: try again)
            continue
    raise AssertionError(f"could not add the column {kind}.{name} to the runs table")


def _cell(row, col_id: str) -> str:  # noqa: ANN001
    return row.locator(f"[col-id='{col_id}']").inner_text().strip()


def _compare_metric_values(page, metric: str) -> list[str]:  # noqa: ANN001
    """The compare view's values of `metric`, one per run, read where a user reads them: at the
    height of the metric's name. Its metrics table is two virtualized grids (names, values)
    scrolled with the wheel over the values; the names follow one wheel event late in MLflow
    3.17, so a last 1-pixel step brings them level before reading."""
    names = page.locator("a[title='Plot chart']")
    name = names.filter(has=page.get_by_text(metric, exact=True))
    values = page.locator(".ReactVirtualized__Grid").filter(has_not=names).last
    values.scroll_into_view_if_needed()
    grid = values.bounding_box()
    values.hover()
    for _ in range(60):
        if name.count() and grid["y"] <= name.bounding_box()["y"] <= grid["y"] + grid["height"] - 30:
            break
        page.mouse.wheel(0, 45)
        page.wait_for_timeout(150)
    page.mouse.wheel(0, 1)
    page.wait_for_timeout(500)
    box = name.bounding_box()
    assert grid["y"] <= box["y"] <= grid["y"] + grid["height"], f"{metric} is not in the compare view's metrics"
    y = box["y"] + box["height"] / 2
    return [page.evaluate("([x, y]) => document.elementFromPoint(x, y).innerText", [grid["x"] + dx, y]).strip()
            for dx in (10, grid["width"] / 2 + 10)]


def test_a_team_member_sees_the_sweep_its_samples_and_the_model_card(sweep, browser, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    page = browser
    shots = Screenshots(tmp_path / "screenshots")
    exp, runs = sweep["experiment_id"], sweep["runs"]
    run = runs["32"]
    run_id = run.info.run_id
    with mlflow_ui(sweep["uri"], sweep["artifact_root"], tmp_path / "mlflow-ui.log") as url:
        # (a) the experiment's first page is its runs table: both runs, their hidden size and val/nll
        _open(page, f"{url}/#/experiments/{exp}")
        for r in runs.values():
            expect(page.locator(f"[role=row][row-id='{r.info.run_id}']").first).to_contain_text(r.info.run_name)
        expect(page.get_by_text("2 matching runs")).to_be_visible()
        _add_runs_table_column(page, "metrics", "val/nll")
        _add_runs_table_column(page, "params", "model.hidden_size")
        for size, r in runs.items():
            row = page.locator(f"[role=row][row-id='{r.info.run_id}']").filter(
                has=page.locator("[col-id='params.`model.hidden_size`']"))
            assert _cell(row, "params.`model.hidden_size`") == size
            assert float(_cell(row, "metrics.`val/nll`")) == pytest.approx(r.data.metrics["val/nll"], rel=1e-6)
        shots.take(page, "a_runs_table")

        # (b) a run's page: its metrics and parameters, its dataset, and the val/nll chart
        _open(page, f"{url}/#/experiments/{exp}/runs/{run_id}")
        expect(page.get_by_role("heading", name=run.info.run_name)).to_be_visible()
        (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
        assert dataset.name == CORPUS.name
        expect(page.get_by_text(dataset.digest[:8]).first).to_be_visible()  # the digest shows nowhere else
        expect(page.get_by_text(dataset.name, exact=True).first).to_be_visible()
        page.get_by_placeholder("Search metrics").fill("nll")
        for metric in ("val/nll", "test/nll"):
            metric_row = page.locator("[role=row]").filter(has=page.get_by_role("link", name=metric, exact=True))
            value = metric_row.locator("[role=cell]").nth(1).inner_text()
            assert float(value) == pytest.approx(run.data.metrics[metric], rel=1e-6), metric
        param_row = page.locator("[role=row]").filter(has=page.get_by_text("model.hidden_size", exact=True))
        expect(param_row.locator("[role=cell]").nth(1)).to_have_text("32")
        shots.take(page, "b_run_overview")
        page.get_by_role("tab", name="Model metrics").click()
        page.get_by_placeholder("Search metric charts").fill("val/nll")
        expect(page.get_by_role("heading", name="nll", exact=True)).to_be_visible()
        expect(page.locator(".js-plotly-plot path.js-line").first).to_be_attached()  # the curve is drawn
        shots.take(page, "b_run_val_nll_chart")

        # (c) the artifact view: a piano roll, then the epoch's page with its players
        roll = next(p for p in sweep["samples"] if p.endswith(".png"))
        _open(page, f"{url}/#/experiments/{exp}/runs/{run_id}/artifacts/{roll}")
        image = page.locator(f"img[alt='{roll}']")
        expect(image).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        shots.take(page, "c_artifact_piano_roll")

        index = f"{sweep['epoch_dir']}/index.html"
        assert index in sweep["samples"]
        page.get_by_text("index.html", exact=True).first.click()  # beside the piano roll in the file tree
        frame = page.frame_locator("iframe").first
        expect(frame.get_by_role("heading", level=1)).to_contain_text("Samples after epoch")
        n_samples = sum(p.endswith(".mid") for p in sweep["samples"])
        expect(frame.locator("audio")).to_have_count(n_samples)
        expect(frame.locator("section img")).to_have_count(n_samples)
        player = frame.locator("audio").first
        player.scroll_into_view_if_needed()
        media = player.evaluate("a => a.src.split(';')[0].slice('data:'.length)")
        assert player.evaluate("(a, type) => a.canPlayType(type)", media) in ("probably", "maybe"), media
        box = player.bounding_box()
        page.mouse.click(box["x"] + 22, box["y"] + box["height"] / 2)  # its play button, at the left
        deadline = time.time() + 20
        while player.evaluate("a => a.currentTime") == 0 and time.time() < deadline:
            page.wait_for_timeout(250)
        state = player.evaluate("a => ({time: a.currentTime, duration: a.duration, error: a.error && a.error.code})")
        assert state["time"] > 0 and state["duration"] > 0 and state["error"] is None, f"it did not play: {state}"
        shots.take(page, "c_artifact_samples_index")

        # (d) the compare view: the two runs side by side, what differs between them
        order = list(HIDDEN_SIZES)
        ids = urllib.parse.quote(json.dumps([runs[size].info.run_id for size in order]))
        experiments = urllib.parse.quote(json.dumps([exp]))
        _open(page, f"{url}/#/compare-runs?runs={ids}&experiments={experiments}")
        expect(page.get_by_text("Comparing 2 Runs from 1 Experiment")).to_be_visible()
        for size in order:
            expect(page.get_by_role("link", name=runs[size].info.run_id).first).to_be_visible()
        page.get_by_role("switch", name="Parameters - Show diff only").click()
        diff = page.locator("tr").filter(has=page.locator("th", has_text=re.compile(r"^model\.hidden_size$")))
        expect(diff.locator("td")).to_have_text(order)
        same = page.locator("tr").filter(has=page.locator("th", has_text=re.compile(r"^model\.num_layers$")))
        expect(same).to_have_count(0)  # equal in both runs: hidden by the diff
        page.get_by_role("switch", name="Metrics - Show diff only").click()
        shown = _compare_metric_values(page, "val/nll")
        assert [float(v) for v in shown] == pytest.approx([runs[s].data.metrics["val/nll"] for s in order], rel=1e-3)
        shots.take(page, "d_compare_runs")

        # (e) the registry: the model card as the model's and the version's description
        description = sweep["model"].description
        assert "Styles:" in description and "midigen generate" in description
        _open(page, f"{url}/#/models/midigen")
        expect(page.get_by_role("heading", name=re.compile(r"^midigen model \(smoke\)$"))).to_be_visible()
        expect(page.get_by_text(re.compile(r"^Styles: ")).first).to_be_visible()
        expect(page.get_by_text("midigen generate --model models:/midigen/latest").first).to_be_visible()
        shots.take(page, "e_registered_model")
        version = sweep["version"].version
        _open(page, f"{url}/#/models/midigen/versions/{version}")
        expect(page.get_by_text(f"midigen generate --model models:/midigen/{version}").first).to_be_visible()
        expect(page.get_by_text(re.compile(r"^Held-out NLL per event: ")).first).to_be_visible()
        shots.take(page, "e_model_version")
