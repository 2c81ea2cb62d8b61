"""A producer's own MIDI files added to a corpus as a style of theirs (`midigen data import`).

`import_folder(folder, style, root)` takes every MIDI file under `folder`, at any depth
(suffixes in `MIDI_SUFFIXES`, any case; hidden files and folders, names starting with '.'
such as macOS's `._x.mid`, are left out), and copies each usable one to
`<root>/<style>/<name>.mid`, a flat folder: `name` is the file's path under `folder`
with '/' as '__', each part made safe by `corpus.safe_name` (`a b/c.MID` -> `a_b__c.mid`),
plus `_2`, `_3`... in sorted path order where that name (compared without case) is taken.

Each file is checked first, with `read_midi` so that its reason is the one training would
give: unreadable, empty, not MIDI, type 2, an unusable tempo map, no notes, drum tracks only;
and it is refused as absurd when it is over `MAX_BYTES`, `MAX_SECONDS` long or holds over
`MAX_NOTES` pitched notes. A refused file is skipped, printed with its reason and listed in
`<root>/<style>/import_skipped.csv` (`source`, `reason`: the latest import's). A file whose
bytes (sha256) equal those of a file imported before it, or of one already in the style
folder, is a duplicate and not copied.

`<root>/manifest.csv` gets a row per copied file: `source` is its path under `folder`
(never a path of this machine), `notes` its pitched notes, `seconds` its end, `licence`
"yours", `exporter` "import"; every other row is kept. A style name that is one of music21's
(`corpus.STYLES`, whose folders `midigen data build` writes) is refused; an imported style
imported into again gets the new files. Nothing in `folder` is changed, and a user's mistake
(no such folder, no MIDI in it, no usable file, a bad style name) is one MidigenError before
anything is written. Files are written atomically, the manifest after them; an interrupted
import removes what it copied (a file left by a killed one gets its manifest row when it is
imported again). Not for building music21's styles (`midigen.data.corpus`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from midigen.data.corpus import MANIFEST, MANIFEST_COLUMNS, STYLES, _write_csv, read_manifest, safe_name
from midigen.data.corpus import SKIPPED as CORPUS_SKIPPED  # skipped.csv: not a style name either
from midigen.data.midi_io import MIDI_SUFFIXES, read_midi
from midigen.errors import MidigenError, MidiReadError

LICENCE = "yours"  # the manifest's licence column for a producer's own files
EXPORTER = "import"  # the manifest's exporter column: no exporter of ours wrote these bytes
SKIPPED = "import_skipped.csv"  # in the style folder
SKIPPED_COLUMNS = ("source", "reason")
# Past these a file is not a piece to learn from but a mistake (a stray event hours in, a
# whole album or a generated stress test in one file); a long symphonic movement stays within them.
MAX_SECONDS = 30 * 60
MAX_NOTES = 100_000
MAX_BYTES = 16 * 2**20  # not even parsed: MIDI of a piece is kilobytes, 100,000 notes under 1 MiB
_MAX_STEM = 150  # characters of a flattened name: file systems stop at 255 bytes


@dataclass
class Candidate:
    """One MIDI file under the folder: where it is, its copy's name, and what the check found."""

    path: Path
    source: str  # path under the folder, forward slashes: the manifest's `source`
    digest: str = ""  # sha256 of its bytes
    notes: int = 0  # pitched notes
    seconds: float = 0.0
    reason: str = ""  # why it is skipped; "" when usable
    duplicate_of: str = ""  # the file with the same bytes: a source, or <style>/<name> already in the corpus
    name: str = ""  # its file name in the style folder


def import_folder(folder: str | Path, style: str, root: str | Path = "data/corpus") -> dict[str, int]:
    """Copy the usable, new MIDI files under `folder` into `root/style/` and record them in the manifest.

    Returns counts: `imported` (files given a manifest row), `duplicates`, `skipped`. Prints
    each skipped file and duplicate on stderr and one summary line on stdout. Raises
    MidigenError, with nothing written, for a folder that is missing or holds no MIDI file or
    none usable, a style name that is not a safe folder name or is one of music21's, and a
    corpus inside the folder (writing there would change it).
    """
    folder, root = Path(folder), Path(root)
    _check_style(style)
    if not folder.exists():
        raise MidigenError(f"{folder}: no such folder; name the folder that holds your MIDI files")
    if not folder.is_dir():
        raise MidigenError(f"{folder} is a file, not a folder: name the folder that holds your MIDI files")
    if root.exists() and not root.is_dir():
        raise MidigenError(f"corpus folder {root} is a file: pass --root a folder")
    style_dir = root / style
    if style_dir.exists() and not style_dir.is_dir():
        raise MidigenError(f"{style_dir} is a file, not a style folder: choose another --style")
    if _inside(root, folder) or _inside(style_dir, folder):
        raise MidigenError(f"the corpus {root} is inside {folder}: importing would change the folder it reads; "
                           "pass --root a corpus outside it")
    candidates = _find_midi(folder)
    if not candidates:
        raise MidigenError(f"{folder} holds no MIDI files ({', '.join(MIDI_SUFFIXES)}, at any depth)")

    manifest = read_manifest(root)
    existing = _existing_files(style_dir)  # sha256 -> name, for the files already in the style folder
    in_folder = sum(1 for _ in _midi_in(style_dir))
    adopted, new = _sort_out(candidates, style, existing, {row.get("file", "") for row in manifest},
                             {p.name.lower() for p in style_dir.iterdir()} if style_dir.is_dir() else set())
    skipped = [c for c in candidates if c.reason]
    if len(skipped) == len(candidates):
        shown = "; ".join(f"{_shown(c.source)}: {c.reason}" for c in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise MidigenError(f"none of the {len(candidates)} MIDI files in {folder} can be used, nothing imported "
                           f"({shown}{more})")

    rows = [{"file": f"{style}/{c.name}", "style": style, "source": _shown(c.source), "notes": c.notes,
             "seconds": f"{c.seconds:.2f}", "licence": LICENCE, "exporter": EXPORTER} for c in adopted + new]
    extra = tuple(column for row in manifest[:1] for column in row if column and column not in MANIFEST_COLUMNS)

    def write_manifest() -> None:  # every row kept, ours added; not rewritten when nothing is new
        if rows:
            _write_csv(root / MANIFEST, MANIFEST_COLUMNS + extra,
                       sorted(manifest + rows, key=lambda row: row.get("file", "")))

    _write_files(new, style_dir, write_manifest)
    report = style_dir / SKIPPED
    if skipped:
        _write_csv(report, SKIPPED_COLUMNS, [{"source": _shown(c.source), "reason": c.reason} for c in skipped])
    else:
        report.unlink(missing_ok=True)

    duplicates = [c for c in candidates if c.duplicate_of]
    for c in skipped:
        print(f"skipped {_shown(c.source)}: {c.reason}", file=sys.stderr)
    for c in duplicates:
        print(f"duplicate {_shown(c.source)}: same bytes as {_shown(c.duplicate_of)}", file=sys.stderr)
    if in_folder:
        print(f"style {style} was in {root} already ({in_folder} file{'' if in_folder == 1 else 's'}): "
              "new files added beside them")
    listed = f"; reasons above and in {report}" if skipped else ""
    recovered = f" ({len(adopted)} copied by an import that stopped early, now recorded)" if adopted else ""
    total = in_folder + len(new)
    print(f"imported {len(rows)}{recovered}, duplicates {len(duplicates)}, skipped {len(skipped)}{listed}; "
          f"into {style_dir} ({total} file{'' if total == 1 else 's'})")
    return {"imported": len(rows), "duplicates": len(duplicates), "skipped": len(skipped)}


def _sort_out(candidates: list[Candidate], style: str, existing: dict[str, str], recorded: set[str],
              taken: set[str]) -> tuple[list[Candidate], list[Candidate]]:
    """Check each candidate (in order) and mark it skipped, a duplicate, or to be recorded.

    Returns (adopted, new): files already in the style folder but not in the manifest (a
    killed import's), recorded under their name there; and files to copy, each given a free
    name (`taken`: lower-case names in the style folder, which it joins).
    """
    first_of: dict[str, Candidate] = {}  # sha256 -> the first usable file with those bytes
    adopted: dict[str, Candidate] = {}  # name in the style folder -> the file it is a copy of
    for candidate in candidates:
        _check(candidate)
        if candidate.reason:
            continue
        if candidate.digest in existing:
            name = existing[candidate.digest]
            if f"{style}/{name}" in recorded or name in adopted:
                candidate.duplicate_of = f"{style}/{name}"
            else:
                candidate.name = name
                adopted[name] = candidate
        elif candidate.digest in first_of:
            candidate.duplicate_of = first_of[candidate.digest].source
        else:
            first_of[candidate.digest] = candidate
            candidate.name = _free_name(candidate.source, taken)
    return list(adopted.values()), list(first_of.values())


def _check_style(style: str) -> None:
    if style.lower() in (MANIFEST, CORPUS_SKIPPED):
        raise MidigenError(f"style name {style!r} is the name of a corpus file: choose another")
    if style in STYLES:
        raise MidigenError(f"style {style!r} is one of music21's styles (`midigen data build` writes its folder): "
                           f"import under a name of your own, e.g. my-{style}")
    if not style or safe_name(style) != style or len(style) > 64:
        suggestion = safe_name(style)[:64] or "mine"
        raise MidigenError(f"style name {style!r} is not a safe folder name: use letters, digits, '.', '_' and '-', "
                           f"not starting with '.' (e.g. {suggestion!r})")


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies under it (links resolved)."""
    return path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents


def _find_midi(folder: Path) -> list[Candidate]:
    """Every MIDI file under `folder`, hidden ones left out, sorted by path; links to folders not followed."""
    found = []
    for where, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            path = Path(where) / name
            if not name.startswith(".") and path.suffix.lower() in MIDI_SUFFIXES and path.is_file():
                found.append(Candidate(path, path.relative_to(folder).as_posix()))
    return sorted(found, key=lambda c: c.source)


def _midi_in(style_dir: Path):
    """The MIDI files directly in the style folder (where imports put them)."""
    if style_dir.is_dir():
        yield from (path for path in sorted(style_dir.iterdir())
                    if path.suffix.lower() in MIDI_SUFFIXES and path.is_file())


def _existing_files(style_dir: Path) -> dict[str, str]:
    """sha256 -> file name, for the MIDI files already in the style folder."""
    return {_sha256(path.read_bytes()): path.name for path in _midi_in(style_dir)}


def _check(candidate: Candidate) -> None:
    """Fill in `candidate`'s digest, notes and seconds, or the reason it is skipped."""
    path = candidate.path
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            candidate.reason = f"{size / 2**20:.0f} MiB, over {MAX_BYTES // 2**20} MiB: not one piece of music"
            return
        candidate.digest = _sha256(path.read_bytes())
        notes = read_midi(path, seconds=True, need_notes=True)
    except MidiReadError as exc:
        candidate.reason = _without_name(str(exc), path)
        return
    except OSError as exc:
        candidate.reason = f"unreadable ({exc.strerror or exc})"
        return
    candidate.notes, candidate.seconds = int(notes.on.size), float(notes.end)
    if candidate.seconds > MAX_SECONDS:
        candidate.reason = (f"{candidate.seconds / 60:.0f} minutes long, over {MAX_SECONDS // 60}: "
                            "split it into pieces (or a stray event lies far past the music)")
    elif candidate.notes > MAX_NOTES:
        candidate.reason = f"{candidate.notes:,} notes, over {MAX_NOTES:,}: split it into pieces"


def _without_name(message: str, path: Path) -> str:
    """A MidiReadError's reason without the file name it starts with (the source is printed beside it)."""
    for prefix in (f"{path.name}: ", f"{path}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _free_name(source: str, taken: set[str]) -> str:
    """The flattened, safe `.mid` name of `source`, not in `taken` (lower case), which it joins."""
    stem = "__".join(safe_name(part) for part in Path(source).with_suffix("").parts)[:_MAX_STEM]
    name, k = f"{stem}.mid", 2
    while name.lower() in taken:  # case-insensitive file systems
        name, k = f"{stem}_{k}.mid", k + 1
    taken.add(name.lower())
    return name


def _write_files(new: list[Candidate], style_dir: Path, write_manifest) -> None:  # noqa: ANN001
    """Copy each file to `style_dir/<name>` atomically, then `write_manifest()`; on any failure or
    interruption remove every copy made (and the folders made for them) before raising."""
    made = [folder for folder in (style_dir, *style_dir.parents) if not folder.exists()]
    style_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for candidate in new:
            data = candidate.path.read_bytes()
            if _sha256(data) != candidate.digest:
                raise MidigenError(f"{candidate.path} changed while it was imported; nothing imported: run it again")
            dest = style_dir / candidate.name
            part = dest.with_name(f".{dest.name}.part")
            written.append(part)
            part.write_bytes(data)
            os.replace(part, dest)
            written.append(dest)
        write_manifest()
    except BaseException as exc:
        for path in written:
            path.unlink(missing_ok=True)
        for folder in made:  # deepest first
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        if isinstance(exc, OSError):  # a full disk, a read-only corpus: the user's to fix
            raise MidigenError(f"cannot copy into {style_dir} ({exc.strerror or exc}); nothing imported") from None
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _shown(text: str) -> str:
    """A path fit for a terminal and a UTF-8 CSV (a name that is not UTF-8 keeps its bytes as escapes)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
