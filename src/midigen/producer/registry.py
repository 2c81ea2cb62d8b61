"""Where a model comes from: `--model` values, MLflow registry downloads, their cache, the default.

`locate_model` turns what a producer types after `--model` into a `ModelSource`: the local
folder (or checkpoint) `load_bundle` takes, plus what it is (name, version, run id) and where it
came from (the registry, the download cache, a folder, the shipped model), so `generate` can
say which model wrote the files.

Registry URIs (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/NAME/latest`,
`runs:/ID/model`) are pinned to what the registry says the version *is* (its run id and
source) before anything is read from the cache: every MLflow store numbers its versions from
1, so `models:/midigen/1` of one store is not that of another, nor of the same store after it
was deleted and retrained. A cache entry is keyed by store, name, version and run, and carries
a `midigen-source.json` that is checked against the registry's answer; a mismatch downloads
again. Only this module imports mlflow on the producer path, and only for registry URIs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from midigen.errors import MidigenError
from midigen.producer.bundle import CONFIG, find_bundle_dir, load_bundle

# What every command that takes --model says of it (generate, interpolate, studio).
MODEL_HELP = ("models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, a pulled model folder or a .ckpt "
              "(default: models:/midigen@champion, else the newest version, else the shipped pretrained model)")
SOURCE_FILE = "midigen-source.json"  # in a cached or pulled model folder: what it is, where from
ORIGINS = ("registry", "cache", "folder", "shipped", "checkpoint")
_URI = re.compile(r"^(models|runs):/")


@dataclass(frozen=True)
class ModelSource:
    """A model a producer asked for, resolved.

    ref: what was asked for (`--model`, or the default); path: the local folder or .ckpt;
    origin: one of ORIGINS ("registry": downloaded now, "cache": a verified earlier download);
    name, version, run_id, store: the registered version and the tracking store it is in
    (for folders, the run id the bundle records, where it does).
    """

    ref: str
    path: Path
    origin: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    store: str | None = None

    def describe(self) -> str:
        """One line: which model, which run, where from."""
        what = f"models:/{self.name}/{self.version}" if self.name and self.version else self.ref
        run = f", run {self.run_id}" if self.run_id else ""
        where = {"registry": f"downloaded from the registry at {self.store}",
                 "cache": f"registry {self.store}, cached copy {self.path}",
                 "folder": f"model folder {self.path}",
                 "shipped": f"the shipped pretrained model {self.path}",
                 "checkpoint": f"checkpoint {self.path}"}[self.origin]
        asked = f" (asked: {self.ref})" if what != self.ref else ""
        return f"{what}{asked}{run}; {where}"

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def is_registry_uri(ref: str) -> bool:
    return bool(_URI.match(ref))


def cache_dir() -> Path:
    """Downloaded registry models: $MIDIGEN_CACHE/models (default ~/.cache/midigen/models)."""
    return Path(os.environ.get("MIDIGEN_CACHE", Path.home() / ".cache" / "midigen")) / "models"


def shipped_model() -> Path:
    from midigen.tracking import repo_root

    return repo_root() / "models" / "pretrained"


def locate_model(ref: str) -> ModelSource:
    """A `--model` value -> a ModelSource (downloading a registry version unless cached and verified)."""
    if is_registry_uri(ref):
        return _fetch(ref, None, force=False)
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        return ModelSource(ref, path, "checkpoint")
    run_id = None
    try:
        folder = find_bundle_dir(path)
        run_id = json.loads((folder / CONFIG).read_text()).get("run_id")
    except (MidigenError, OSError, ValueError, AttributeError):
        pass  # load_bundle reports what is wrong with the folder
    recorded = _read_source(path)
    shipped = shipped_model()
    origin = "shipped" if shipped.exists() and path.resolve() == shipped.resolve() else "folder"
    if recorded:  # a pulled model folder says what it was pulled from
        return ModelSource(ref, path, origin, recorded.get("name"), recorded.get("version"),
                           recorded.get("run_id") or run_id, recorded.get("store"))
    return ModelSource(ref, path, origin, run_id=run_id)


def resolve_model(ref: str) -> Path:
    """A `--model` value -> the local path `load_bundle` takes."""
    return locate_model(ref).path


def default_model_ref() -> str:
    """`models:/midigen@champion` where the registry has it, else its newest version, else the shipped model.

    A registry that answers but fails (a wrong store, permissions, a schema error) is an error,
    not a silent fall back to the shipped model: the producer would get another model than
    their team's. The shipped model is taken only where there is no registry, or it holds no
    `midigen` model; `generate` then says so in its summary."""
    from midigen.tracking import DEFAULT_REGISTRY_NAME, repo_root

    has_registry = bool(os.environ.get("MLFLOW_TRACKING_URI")) or (repo_root() / "mlflow.db").exists()
    if has_registry:
        client, uri = _client()
        from mlflow.exceptions import MlflowException

        name = DEFAULT_REGISTRY_NAME
        try:
            versions = client.search_model_versions(f"name='{name}'")
            if versions:
                aliases = client.get_registered_model(name).aliases or {}
                return f"models:/{name}@champion" if "champion" in aliases else f"models:/{name}/latest"
        except MlflowException as exc:
            raise MidigenError(f"the model registry at {uri} answered with an error ({_mlflow_reason(exc)}); "
                               "fix MLFLOW_TRACKING_URI or pass --model") from None
    if (shipped_model() / CONFIG).exists():
        return str(shipped_model())
    raise MidigenError("no model to generate with: train one (`make train`) or pass --model")


def pull_model(ref: str, out: Path, force: bool = False) -> ModelSource:
    """Download a registered model into `out/<name>-<version>` for offline generation.

    A folder there that holds another model (another run, another store) is refused unless
    `force`, which replaces it; one that holds this model is kept as it is."""
    if not is_registry_uri(ref):
        raise MidigenError(f"{ref}: pull takes models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/model")
    source = _fetch(ref, Path(out).expanduser(), force=force)
    load_bundle(source.path)  # fail now, not at generation time, if it is not a midigen model
    return source


# --- the registry -------------------------------------------------------------------------------


def _client():  # noqa: ANN202 - (MlflowClient, tracking URI)
    from midigen.tracking import check_reachable, tracking_uri

    uri = tracking_uri()
    check_reachable(uri)  # a server that is down: one line in seconds, not minutes of retries
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri), uri


def store_id(uri: str) -> str:
    """The tracking store as one string: a SQLite store by its database's absolute path."""
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).expanduser().resolve())
    return uri.rstrip("/")


def _pin(ref: str, client) -> dict:  # noqa: ANN001
    """What the registry says `ref` is: {name, version, run_id, source (an immutable URI)}."""
    if ref.startswith("runs:/"):
        run_id = ref[len("runs:/"):].split("/")[0]
        client.get_run(run_id)  # raises if unknown
        return {"name": None, "version": None, "run_id": run_id, "source": ref}
    body = ref[len("models:/"):]
    if "@" in body:
        name, alias = body.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
    else:
        name, _, version = body.partition("/")
        if version in ("", "latest"):
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise MidigenError(f"{ref}: no versions registered under {name!r}; train one with `make train`")
            mv = max(versions, key=lambda v: int(v.version))
        else:
            mv = client.get_model_version(name, version)
    return {"name": name, "version": str(mv.version), "run_id": mv.run_id,
            "source": f"models:/{name}/{mv.version}", "model_source": mv.source}


def _fetch(ref: str, dest_parent: Path | None, force: bool) -> ModelSource:
    """Pin `ref`, then use the verified local copy or download it (into the cache, or `dest_parent`)."""
    from mlflow.exceptions import MlflowException

    client, uri = _client()
    try:
        pinned = _pin(ref, client)
    except MlflowException as exc:
        raise MidigenError(f"{ref}: not found in the registry at {uri} ({_mlflow_reason(exc)})") from None
    identity = {"store": store_id(uri), **pinned}
    if dest_parent is None:  # the cache: one folder per store + version + run, never another's
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        label = f"{_safe(pinned['name'])}-{pinned['version']}" if pinned["name"] else f"run-{pinned['run_id']}"
        dest = cache_dir() / f"{label}-{digest}"
    else:  # a pulled folder keeps the name producers expect
        dest = dest_parent / (f"{_safe(pinned['name'])}-{pinned['version']}" if pinned["name"]
                              else f"run-{pinned['run_id']}")
    found = _read_source(dest)
    meta = dict(ref=ref, name=pinned["name"], version=pinned["version"], run_id=pinned["run_id"],
                store=identity["store"])
    if found is not None and _same(found, identity) and _complete(dest):
        return ModelSource(path=dest, origin="cache" if dest_parent is None else "folder", **meta)
    if dest.exists() and dest_parent is not None and not force:
        held = (f"run {found.get('run_id')} from {found.get('store')}" if found
                else "a folder midigen did not pull")
        raise MidigenError(f"{dest} exists and holds another model ({held}); use --force to replace it, "
                           "or another --out")
    _download(pinned["source"], dest, identity, ref)
    return ModelSource(path=dest, origin="registry", **meta)


def _same(found: dict, identity: dict) -> bool:
    return all(found.get(k) == v for k, v in identity.items())


def _complete(folder: Path) -> bool:
    try:
        find_bundle_dir(folder)
        return True
    except MidigenError:
        return False


def _download(source: str, dest: Path, identity: dict, ref: str) -> None:
    """Download into a private folder beside `dest`, record what it is, then swap it in."""
    import mlflow
    from mlflow.exceptions import MlflowException

    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise MidigenError(f"cannot write the model into {dest.parent} ({exc.strerror or exc})") from None
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp))
    except MlflowException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MidigenError(f"{ref}: could not download ({_mlflow_reason(exc)})") from None
    # download_artifacts puts the model folder inside dst_path under its own name
    inner = [p for p in tmp.iterdir() if p.is_dir()]
    root = inner[0] if len(inner) == 1 and not (tmp / "MLmodel").exists() else tmp
    (root / SOURCE_FILE).write_text(json.dumps({**identity, "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S")},
                                               indent=2))
    old = dest.with_name(f".{dest.name}.old{os.getpid()}")
    if dest.exists():
        dest.rename(old)
    root.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def _read_source(folder: Path) -> dict | None:
    try:
        found = json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


# --- the download cache --------------------------------------------------------------------------


def cached_models() -> list[dict]:
    """The cache's entries: {path, name, version, run_id, store, downloaded, bytes} (unverified ones too)."""
    root = cache_dir()
    entries = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        found = _read_source(folder) or {}
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        entries.append({"path": str(folder), "name": found.get("name"), "version": found.get("version"),
                        "run_id": found.get("run_id"), "store": found.get("store"),
                        "downloaded": found.get("downloaded"), "bytes": size})
    return entries


def clear_cache() -> tuple[int, int]:
    """Remove every cached model; returns (folders, bytes) removed."""
    entries = cached_models()
    for entry in entries:
        shutil.rmtree(entry["path"], ignore_errors=True)
    for stray in cache_dir().glob(".*") if cache_dir().is_dir() else []:  # interrupted downloads
        shutil.rmtree(stray, ignore_errors=True)
    return len(entries), sum(e["bytes"] for e in entries)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _mlflow_reason(exc: Exception) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return msg.strip().splitlines()[0][:200]
