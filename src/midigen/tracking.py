"""Where runs and models are tracked: MLflow URIs, store and experiment creation, datasets.

Default store: SQLite at `<repo>/mlflow.db` with artifacts under `<repo>/mlartifacts`,
derived from the repo root, never the working directory. `MLFLOW_TRACKING_URI`
overrides it (a team's `mlflow server`). mlflow is imported inside functions: the
producer path reaches here only for registry URIs.
"""

from __future__ import annotations

import json
import os
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


def artifact_root(uri: str | None = None) -> str:
    """Where a local SQLite store keeps artifacts: `mlartifacts/` beside its database file
    (`<repo>/mlartifacts` for the default store), so a temporary store never writes into the repo."""
    uri = tracking_uri(uri)
    if is_local_sqlite(uri) and uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).expanduser().resolve().parent / "mlartifacts").as_uri()
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


# MLflow 3's UI opens an experiment on its GenAI pages unless the experiment says what it is;
# with this tag it opens on the runs table (the value is one the UI knows).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def ensure_experiment(name: str, uri: str) -> str:
    """The id of experiment `name`, created with artifacts beside a local SQLite store's database
    and tagged as model training (EXPERIMENT_KIND; an existing experiment without the tag gets it)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    key, kind = EXPERIMENT_KIND
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = f"{artifact_root(uri)}/{name}" if is_local_sqlite(uri) else None
        try:
            return client.create_experiment(name, artifact_location=location, tags={key: kind})
        except MlflowException:  # a parallel sweep job created it first
            exp = client.get_experiment_by_name(name)
    if key not in exp.tags:  # a kind someone chose in the UI stays
        client.set_experiment_tag(exp.experiment_id, key, kind)
    return exp.experiment_id


def log_dataset(client, run_id: str, name: str, digest: str, source: str | Path, profile: dict,  # noqa: ANN001
                context: str = "training") -> None:
    """Log a dataset as an input of run `run_id`: what the run page and the runs table show as
    its dataset (`name`, `digest`, `context`), with where it lives (`source`, a local folder)
    and its `profile` (JSON: the counts that describe it). An experiment stores each
    (name, digest) once, so the digest must change whenever the profile would."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dataset = Dataset(name=name, digest=digest, source_type="local",
                      source=json.dumps({"uri": Path(source).resolve().as_uri()}), profile=json.dumps(profile))
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])])
