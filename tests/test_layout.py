"""The package's layout is its architecture: each stage imports only the stages below it.

    midigen.errors, .tracking, .model      shared by everything
    midigen.data        MIDI -> events -> tokens, the corpus, the token cache (and the DataModule)
    midigen.evaluation  metrics, piano rolls, originality, style fidelity, `midigen evaluate`
    midigen.producer    bundle, sampling, native kernels, generate, audio (what `midigen generate` runs)
    midigen.train       the Hydra app, LightningModule, callbacks, registration, baselines
    midigen.bench       side-by-side benchmarks of all of the above
    midigen.cli         the top: nothing imports it

Checked statically (every import, including those inside functions) and, for the producer,
by importing it in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "midigen"
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
LAYERS = ["base", "data", "evaluation", "producer", "train", "bench", "cli"]
BASE = {"midigen", "midigen.errors", "midigen.tracking", "midigen.model"}
TOP = {"midigen.cli", "midigen.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    if module in BASE:
        return "base"
    if module in TOP:
        return "cli"
    stage = module.split(".")[1]
    assert stage in LAYERS, f"{module} belongs to no stage: put it in one of {LAYERS[1:-1]}"
    return stage


def midigen_imports(path: Path) -> set[str]:
    """Every midigen module `path` imports, wherever the import statement sits."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "midigen"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "midigen":
            for alias in node.names:  # `from midigen.producer import native` imports midigen.producer.native
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _is_module(sub) else node.module)
    return found


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def package_graph() -> dict[str, set[str]]:
    return {module_name(p): midigen_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_goes_down_the_stages():
    upward = []
    for module, imports in package_graph().items():
        for target in imports:
            if LAYERS.index(layer(target)) > LAYERS.index(layer(module)):
                upward.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
    assert not upward, "imports that go up the stages:\n" + "\n".join(sorted(upward))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles_between_modules():
    graph = {m: {t for t in imps if t != "midigen"} for m, imps in package_graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_sees_a_cycle():  # the checker itself can fail
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_imports_the_cli():
    importers = [m for m, imps in package_graph().items() if imps & TOP and m not in TOP]
    assert not importers, f"the CLI is the top; these import it: {importers}"


def test_the_seed_study_scripts_import_each_other_one_way():
    study = EXPERIMENTS / "seed_study"
    graph = {}
    for path in study.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        graph[path.stem] = {n for n in names if (study / f"{n}.py").exists()}
    assert find_cycle(graph) is None, graph


# What `midigen generate` runs; pyfunc.py is the MLflow wrapper that MLflow itself loads.
PRODUCER_MODULES = sorted(module_name(p) for p in (PACKAGE / "producer").glob("*.py") if p.stem != "pyfunc")


@pytest.mark.parametrize("modules", [PRODUCER_MODULES, ["midigen.evaluation.metrics", "midigen.evaluation.pianoroll",
                                                        "midigen.evaluation.originality", "midigen.data.events",
                                                        "midigen.data.midi_io", "midigen.data.cache"]],
                         ids=["producer", "evaluation+data"])
def test_the_producer_path_loads_no_training_machinery(modules):
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & {"pytorch_lightning", "lightning", "lightning_fabric", "hydra", "mlflow", "omegaconf"}


def test_cli_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "midigen", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("data", "tokenize", "train", "evaluate", "generate", "models", "bench", "kernels"):
        assert command in out.stdout
