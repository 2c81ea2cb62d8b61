"""Writing generated clips into a producer's folder: all of them or none, never over another run's.

Everything is written aside first (a hidden staging folder inside `--out`, removed on any
error, Ctrl-C or SIGTERM) and moved in at the end under a lock on the folder
(`.midigen.lock`, held with flock): two runs into one folder cannot overwrite each other's
files, and files that exist are refused without `--force`. A name that exists as a folder is
refused even with `--force`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from midigen.errors import MidigenError

LOCK = ".midigen.lock"
STAGING_PREFIX = ".midigen-staging-"


def check_folder(out: Path) -> Path:
    """Say in one line why `out` cannot become a folder of clips, without creating anything."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == out and not out.is_dir():
        raise MidigenError(f"--out {out}: is a file, not a folder; name a folder for the clips")
    if existing != out and not existing.is_dir():
        raise MidigenError(f"--out {out}: a part of that path ({existing}) is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MidigenError(f"--out {out}: {existing} is not writable; name a folder you can write to")
    return out


def prepare_folder(out: Path) -> Path:
    """Create `out` (and its parents) or say in one line why it cannot be a folder of clips."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MidigenError(f"--out {out}: is a file, not a folder; name a folder for the clips") from None
    except NotADirectoryError:
        raise MidigenError(f"--out {out}: a part of that path is a file, not a folder") from None
    except OSError as exc:
        raise MidigenError(f"--out {out}: cannot create it ({_why(exc)})") from None
    if not out.is_dir():
        raise MidigenError(f"--out {out}: is a file, not a folder; name a folder for the clips")
    if not os.access(out, os.W_OK | os.X_OK):
        raise MidigenError(f"--out {out}: not writable; name a folder you can write to")
    return out


def check_targets(paths: list[Path], force: bool) -> None:
    """Refuse paths that exist (unless `force`) and those that are folders (always)."""
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise MidigenError(f"{folders[0]} is a folder, not a file: move it or use another --out/--name")
    clashes = [p for p in paths if p.exists()]
    if clashes and not force:
        raise MidigenError(f"{clashes[0]} exists ({len(clashes)} files would be overwritten): use --force or "
                           "another --out/--seed")


@contextlib.contextmanager
def staging(out: Path):
    """A hidden folder inside `out` to write into; removed on the way out, whatever happens."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    except OSError as exc:
        raise MidigenError(f"--out {out}: cannot write into it ({_why(exc)})") from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def folder_lock(out: Path):
    """Exclusive use of `out` while files are moved in (another run waits its turn)."""
    with open(out / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def commit(staged: list[Path], out: Path, force: bool) -> list[Path]:
    """Move the staged files into `out`, checked again under the folder's lock; returns their paths."""
    targets = [out / p.name for p in staged]
    with folder_lock(out):
        check_targets(targets, force)  # another run may have written them since the first check
        for source, target in zip(staged, targets):
            try:
                os.replace(source, target)
            except OSError as exc:
                raise MidigenError(f"cannot write {target} ({_why(exc)})") from None
    return targets


def write_staged(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    try:
        path.write_bytes(data)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise MidigenError(f"{name}: the file name is too long for this file system; use a shorter --name") from None
        raise MidigenError(f"cannot write {path.parent.parent} ({_why(exc)})") from None
    return path


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def audio_settings(args) -> tuple[str | None, str | None]:  # noqa: ANN001
    """(format, renderer) for --audio/--soundfont, or (None, None). Checked before any sampling:
    a bad format or a missing SoundFont fails in a second, not after minutes of work."""
    if args.audio is None and args.soundfont is None:
        return None, None
    from midigen.producer.audio import available_renderer, check_format

    return check_format(args.audio or "wav"), available_renderer(args.soundfont)


def write_clips(results: list[dict], args, source, audio: tuple[str | None, str | None],  # noqa: ANN001
                req, bundle, report: dict | None = None) -> int:  # noqa: ANN001
    """Write generated clips into --out (with --preview PNGs and --audio recordings beside them),
    all or none, then say what was written (`midigen.producer.report`; `report` adds to --json)."""
    from midigen.data.midi_io import TICKS_PER_BEAT
    from midigen.producer.report import judge, print_report

    audio_format, renderer = audio
    out = prepare_folder(Path(args.out))
    suffixes = [".png"] if args.preview else []
    suffixes += [f".{audio_format}"] if audio_format else []
    names = [r["name"] for r in results]
    check_targets([out / n for n in names] + [out / Path(n).with_suffix(s) for n in names for s in suffixes],
                  args.force)
    with staging(out) as folder:
        staged = []
        for r in results:
            midi_path = write_staged(folder, r["name"], r["midi"])
            staged.append(midi_path)
            if args.preview:
                from midigen.evaluation.pianoroll import pianoroll_from_notes

                staged.append(pianoroll_from_notes(*r["notes"], TICKS_PER_BEAT, midi_path.with_suffix(".png"),
                                                   title=r["name"], end_tick=r.get("end_tick"),
                                                   meter=req.time_signature))
            if audio_format:
                from midigen.producer.audio import render_midi_file

                render_midi_file(midi_path, renderer=renderer, fmt=audio_format)
                staged.append(midi_path.with_suffix(f".{audio_format}"))
        written = commit([Path(p) for p in staged], out, args.force)
    files = [out / n for n in names]
    audio_files = [p for p in written if audio_format and p.suffix == f".{audio_format}"]
    print_report(judge(results, req, bundle), files, source, req, args.json, report,
                 audio={"renderer": renderer, "format": audio_format, "files": audio_files} if audio_format else None)
    return 0
