"""Security: model files are data, never code; the MLflow UI listens on loopback only.

(Generated file names that cannot leave --out are tested in test_generate.py.)
"""

from __future__ import annotations

import os
import re

import pytest
import torch

from conftest import CORPUS, REPO, run_midigen


class _RunsCode:
    """Unpickling this calls os.mkdir(path): a stand-in for any code a crafted file could run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.fixture
def crafted_checkpoint(tmp_path):
    """A checkpoint-shaped file whose unpickling runs code, and the path that code would create."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model": {}, "tokenizer": {}},
                "callbacks": {"x": _RunsCode(str(marker))}}, path)
    return path, marker


def test_the_crafted_checkpoint_really_runs_code_when_loaded_unsafely(crafted_checkpoint):
    """The control: without weights_only the file does what it was made to do."""
    path, marker = crafted_checkpoint
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_generate_refuses_a_checkpoint_that_would_run_code(crafted_checkpoint, tmp_path):
    path, marker = crafted_checkpoint
    proc = run_midigen("generate", "--model", str(path), "--num", "1", "--out", str(tmp_path / "ideas"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[0]
    assert proc.stderr.startswith(f"midigen: error: {path}: not a loadable checkpoint")
    assert "GLOBAL posix.mkdir" in proc.stderr
    assert not marker.exists() and not (tmp_path / "ideas").exists()


def test_resuming_from_a_checkpoint_that_would_run_code_is_refused(crafted_checkpoint, tmp_path):
    path, marker = crafted_checkpoint
    proc = run_midigen("train", "experiment=smoke", f"data.root={CORPUS}", f"paths.cache={tmp_path / 'cache'}",
                       f"paths.outputs={tmp_path / 'out'}", f"ckpt_path={path}",
                       env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"midigen: error: {path}: not a loadable checkpoint")
    assert not marker.exists()
    assert not list((tmp_path / "out").rglob("mlflow_run.json"))  # refused before any run existed


def test_make_ui_binds_loopback_only():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^ui:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "no `ui` target in the Makefile"
    command = recipe.group(1).replace("\\\n", " ")
    assert "mlflow ui" in command or "mlflow server" in command
    assert re.search(r"--host[ =]127\.0\.0\.1\b", command), command
    assert "0.0.0.0" not in command
