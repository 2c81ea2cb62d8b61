"""Where runs and models are tracked: MLflow URIs, store creation, model logging and registry.

Default store: SQLite at `<repo>/mlflow.db` with artifacts under `<repo>/mlartifacts`,
derived from the repo root, never the working directory. `MLFLOW_TRACKING_URI`
overrides it (a team's `mlflow server`). mlflow is imported inside functions: the
producer path reaches here only for registry URIs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from midigen.errors import MidigenError

DEFAULT_REGISTRY_NAME = "midigen"


def repo_root() -> Path:
    """The checkout this package is installed from (editable), else the working directory."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def tracking_uri(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def artifact_root() -> str:
    return (repo_root() / "mlartifacts").as_uri()


def is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail within seconds, with one line, when an HTTP tracking server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except urllib.error.HTTPError:
        return  # it answered (401/403 from an auth proxy, say): up; MLflow reports what follows
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MidigenError(f"MLflow tracking server {uri} is not reachable ({reason}); start it or "
                           "set MLFLOW_TRACKING_URI to a running server") from None


def ensure_store(uri: str) -> None:
    """Create the SQLite store before anything runs in parallel (first-time migrations collide)."""
    check_reachable(uri)
    from mlflow import MlflowClient

    MlflowClient(uri).search_experiments(max_results=1)


def ensure_experiment(name: str, uri: str) -> str:
    """The id of experiment `name`, created with artifacts under <repo>/mlartifacts for the local store."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = f"{artifact_root()}/{name}" if is_local_sqlite(uri) else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # a parallel sweep job created it first
        return client.get_experiment_by_name(name).experiment_id


def log_model(run_id: str, bundle_dir: Path, uri: str, registry_name: str | None,
              alias: str | None = None, promote: str = "always", score: dict | None = None) -> dict:
    """Log the bundle as an MLflow pyfunc model (models-from-code + our package as code_paths).

    The model loads anywhere with `mlflow.pyfunc.load_model(uri)`: no pickled objects,
    weights as safetensors. Registered under `registry_name` (a new version per run),
    with `alias` pointed at it when given: always, or with `promote="if_better"` only when
    `score` beats the alias's current holder (see `should_promote`). Returns {"model_uri",
    "version", "promoted", "promotion"}.
    """
    import mlflow

    mlflow.set_tracking_uri(uri)
    package_dir = Path(__file__).resolve().parent
    model_code = package_dir / "mlflow_model.py"
    with tempfile.TemporaryDirectory() as tmp:
        # code_paths copies the package; leave caches out of the artifact.
        code_copy = Path(tmp) / "midigen"
        shutil.copytree(package_dir, code_copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(model_code),
                artifacts={"bundle": str(bundle_dir)},
                code_paths=[str(code_copy)],
                pip_requirements=_requirements(),
            )
    result = {"model_uri": f"runs:/{run_id}/model", "version": None}
    if registry_name:
        from mlflow import MlflowClient

        version = mlflow.register_model(info.model_uri, registry_name)
        result["version"] = int(version.version)
        client = MlflowClient(uri)
        client.set_model_version_tag(registry_name, version.version, "run_id", run_id)
        for key, value in (score or {}).items():
            client.set_model_version_tag(registry_name, version.version, key, str(value))
        if alias:
            promoted, why = should_promote(client, registry_name, alias, score or {}, promote)
            if promoted:
                client.set_registered_model_alias(registry_name, alias, version.version)
            result.update(promoted=promoted, promotion=why)
    return result


# Tags that make two versions' validation scores comparable: same tokenizer, same val files.
COMPARABLE = ("tokenizer", "val_files", "val_tokens")


def should_promote(client, name: str, alias: str, score: dict, promote: str) -> tuple[bool, str]:  # noqa: ANN001
    """Whether a new version with `score` ({"val_nll", "tokenizer", "val_files", "val_tokens"})
    takes `alias`, and why, in a line.

    "always": yes. "if_better": yes when nothing holds the alias, when the holder was scored
    on other validation data or another tokenizer (its number means nothing here: the newest
    training wins), or when the new val_nll is lower; otherwise the alias stays.
    """
    if promote == "always":
        return True, f"@{alias} moved to the new version (registry.promote=always)"
    if promote != "if_better":
        raise ValueError(f"registry.promote={promote!r}: use always or if_better")
    from mlflow.exceptions import MlflowException

    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return True, f"@{alias} was free"
    tags = holder.tags or {}
    if any(str(tags.get(k)) != str(score.get(k)) for k in COMPARABLE) or "val_nll" not in tags:
        return True, f"@{alias} v{holder.version} was scored on other data; the new version takes it"
    old, new = float(tags["val_nll"]), float(score["val_nll"])
    if new < old:
        return True, f"val/nll {new:.4f} beats @{alias} v{holder.version}'s {old:.4f}"
    return False, (f"val/nll {new:.4f} does not beat @{alias} v{holder.version}'s {old:.4f}; "
                   f"@{alias} stays (registry.promote=always to force)")


def _requirements() -> list[str]:
    from importlib.metadata import version

    pins = []
    for name in ("torch", "numpy", "mido", "safetensors", "symusic", "mlflow"):
        try:
            pins.append(f"{name}=={version(name)}" if name != "torch" else f"torch=={version(name).split('+')[0]}")
        except Exception:
            pins.append(name)
    return pins
