"""Training corpora: the human-written scores that ship inside music21, exported as MIDI.

`build_corpus` writes `<out>/<style>/<name>.mid`, one file per piece (one per tune of an
ABC collection), and `<out>/manifest.csv` with a row per file: `file` (relative path),
`style`, `source` (music21 corpus path, plus `#<X number>` for one tune of a collection),
`notes` and `seconds` (as read back from the written file).

Building is idempotent: a piece whose file exists is not exported again, and files are
written atomically, so an interrupted build resumes where it stopped. Pieces are parsed
in a process pool; a piece music21 cannot parse or export is skipped and counted, never
fatal. Not for reading MIDI for training (that is `midigen.data`, which takes any
`<root>/<style>/*.mid` folder).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import sys
import unicodedata
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from midigen.errors import MidigenError

ALL_STYLES: dict[str, str] = {
    "chorale": "Bach chorales, all voices (music21 corpus/bach, ~410 pieces)",
    "fiddle": "fiddle tunes, single line (Ryan's Mammoth Collection, music21 corpus/ryansMammoth, ~1060 tunes)",
    "folk": "German and other folksongs, single line (Essen collection, music21 corpus/essenFolksong, ~8500 tunes)",
    "renaissance": "Palestrina mass movements, all voices (music21 corpus/palestrina, ~1300 pieces)",
}
DEFAULT_STYLES: tuple[str, ...] = ("chorale", "fiddle")

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("file", "style", "source", "notes", "seconds")

# style -> (music21 corpus folder, source suffixes in order of preference for a shared stem)
_SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "chorale": ("bach", (".mxl", ".xml", ".musicxml", ".krn")),
    "fiddle": ("ryansMammoth", (".abc",)),
    "folk": ("essenFolksong", (".abc",)),
    "renaissance": ("palestrina", (".krn", ".mxl", ".xml")),
}
# corpus/bach is Bach's chorales plus one keyboard piece (the Well-Tempered Clavier's C-major prelude)
_NOT_CHORALES = frozenset({"bwv846"})
_TUNE_NUMBER = re.compile(r"^\s*X:\s*(\d+)\s*$")


@dataclass(frozen=True)
class Piece:
    """One piece to export: `number` is the ABC `X:` number of a tune inside a collection file."""

    style: str
    source: str  # music21 corpus path (forward slashes), plus "#<number>" for a tune of a collection
    path: Path
    number: int | None
    name: str  # output file name inside the style folder, e.g. "bwv1.6.mid"


def music21_corpus_root() -> Path:
    """The folder of music21's bundled corpus (found without importing music21, which is slow)."""
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise MidigenError("music21 is not installed: install midigen with `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "corpus"


def safe_name(text: str) -> str:
    """An ASCII file-name stem: letters, digits, '.', '_' and '-' only, no leading dot."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._") or "untitled"


def list_pieces(style: str, corpus_root: Path | None = None) -> list[Piece]:
    """Every piece of `style`, in the stable order `--limit` takes them from (source file, tune number)."""
    folder_name, suffixes = _SOURCES[style]
    folder = (corpus_root or music21_corpus_root()) / folder_name
    if not folder.is_dir():
        raise MidigenError(f"music21's bundled corpus has no folder {folder_name!r} (looked in {folder}); "
                           "reinstall music21 with its corpus")
    excluded = _NOT_CHORALES if style == "chorale" else frozenset()
    chosen: dict[str, Path] = {}  # one source per stem: e.g. bwv277.mxl over its duplicate bwv277.krn
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in suffixes and path.stem not in excluded:
            best = chosen.get(path.stem)
            if best is None or suffixes.index(path.suffix) < suffixes.index(best.suffix):
                chosen[path.stem] = path
    pieces, taken = [], set()
    for stem, path in sorted(chosen.items()):
        rel = f"{folder_name}/{path.name}"
        numbers = _tune_numbers(path) if path.suffix == ".abc" else []
        if len(numbers) <= 1:  # a single piece: parse the whole file
            entries = [(None, rel, safe_name(stem))]
        else:
            entries = [(n, f"{rel}#{n}", f"{safe_name(stem)}_{n}") for n in numbers]
        for number, source, base in entries:
            name, k = f"{base}.mid", 2
            while name.lower() in taken:  # case-insensitive file systems
                name, k = f"{base}_{k}.mid", k + 1
            taken.add(name.lower())
            pieces.append(Piece(style, source, path, number, name))
    return pieces


def _tune_numbers(path: Path) -> list[int]:
    """The distinct `X:` numbers of an ABC file, in file order (music21 extracts a tune by it)."""
    seen: dict[int, None] = {}
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            match = _TUNE_NUMBER.match(line)
            if match:
                seen.setdefault(int(match.group(1)), None)
    return list(seen)


def build_corpus(styles: list[str] | tuple[str, ...] = DEFAULT_STYLES, out: str | Path = "data/corpus",
                 limit: int | None = None, jobs: int | None = None) -> dict[str, Counter]:
    """Export `styles` into `out/<style>/` and rewrite `out/manifest.csv`.

    `limit` takes at most that many pieces per style (the first in `list_pieces` order);
    `jobs` is the number of worker processes (default: all cores). Existing files are kept
    and not re-exported. Returns per style a Counter of `written`, `existing`, `failed`.
    Prints a progress bar on stderr and one summary line per style on stdout.
    """
    styles = _check_styles(styles)
    if limit is not None and limit < 0:
        raise MidigenError(f"--limit must be 0 or more, not {limit}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise MidigenError(f"--jobs must be 1 or more, not {jobs}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MidigenError(f"corpus folder {out} is a file: pass --out a folder")

    catalogue = {style: list_pieces(style) for style in styles}
    counts = {style: Counter(written=0, existing=0, failed=0) for style in styles}
    todo: list[tuple[Piece, Path]] = []
    for style in styles:
        (out / style).mkdir(parents=True, exist_ok=True)
        for piece in catalogue[style][:limit]:
            dest = out / style / piece.name
            if dest.exists():
                counts[style]["existing"] += 1
            else:
                todo.append((piece, dest))

    failures: list[tuple[Piece, str]] = []
    if todo:
        for (piece, _), error in zip(todo, _export_all(todo, jobs)):
            counts[piece.style]["failed" if error else "written"] += 1
            if error:
                failures.append((piece, error))
    rows = _write_manifest(out, catalogue)

    for piece, error in failures:
        print(f"skipped {piece.source}: {error}", file=sys.stderr)
    for style in styles:
        c = counts[style]
        n_files = sum(1 for row in rows if row["style"] == style)
        print(f"{style}: {c['written']} written, {c['existing']} already present, {c['failed']} failed "
              f"({n_files} files in {out / style})")
    if not todo:
        print(f"nothing new to export; {out / MANIFEST} lists {len(rows)} files")
    return counts


def _check_styles(styles) -> list[str]:
    styles = [s.strip() for s in styles if s.strip()]
    known = ", ".join(ALL_STYLES)
    unknown = [s for s in styles if s not in ALL_STYLES]
    if unknown:
        raise MidigenError(f"unknown style {unknown[0]!r}: choose from {known}")
    if not styles:
        raise MidigenError(f"no style given: choose from {known}")
    return list(dict.fromkeys(styles))


def _export_all(todo: list[tuple[Piece, Path]], jobs: int) -> list[str | None]:
    """Export every (piece, destination); the error message of each piece that failed, else None."""
    from tqdm import tqdm

    # In a log (not a terminal) a redraw every 0.1 s is thousands of characters: update every 10 s there.
    bar = tqdm(total=len(todo), desc="exporting", unit="piece", file=sys.stderr, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)
    try:
        if jobs == 1 or len(todo) == 1:
            results = []
            for task in todo:
                results.append(export_piece(task))
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo))) as pool:
            results = []
            # small chunks: piece costs vary 100-fold (a 4-bar folksong vs a 15-part chorale)
            for result in pool.map(export_piece, todo, chunksize=4):
                results.append(result)
                bar.update()
            return results
    finally:
        bar.close()


def export_piece(task: tuple[Piece, Path]) -> str | None:
    """Parse one piece with music21 and write it to its destination as MIDI; an error message or None.

    All parts go into the file (one track each); repeats are written out as played; the
    tempo is the score's own, else music21's default of 120 BPM. Runs in a worker process.
    """
    piece, dest = task
    try:
        data = _midi_bytes(piece)
    except Exception as exc:  # music21 raises many kinds on odd scores; a bad piece never stops a build
        return _first_line(exc) or type(exc).__name__
    if not data:
        return "no notes"
    part = dest.with_name(f".{dest.name}.part")  # hidden and not *.mid: never mistaken for a corpus file
    part.write_bytes(data)
    os.replace(part, dest)
    return None


def _midi_bytes(piece: Piece) -> bytes:
    """The piece as a standard MIDI file (bytes), or b'' when it has no notes."""
    from music21 import converter, repeat, stream
    from music21.midi import translate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # music21 warns per odd symbol; it would tear the progress bar
        # no pickle cache: each piece is parsed once, and writing pickles costs more than it saves
        with _no_beaming():
            score = converter.parseFile(piece.path, number=piece.number, forceSource=True, storePickle=False)
        if isinstance(score, stream.Opus):  # a collection file parsed whole: its first piece
            score = score.scores[0]
        if not score.recurse().notes:
            return b""
        _unshare_context_objects(score)
        try:
            midi = translate.streamToMidiFile(score)  # expands repeats as played
        except repeat.ExpanderException:  # repeats music21 cannot follow: play the music once, as written
            _drop_repeats(score)
            midi = translate.streamToMidiFile(score)
        return midi.writestr()


@contextmanager
def _no_beaming():
    """Parse without music21's beaming (patched out of `Stream.makeBeams` for the block).

    The ABC reader beams every tune, a fifth of its parse time, and beams are notation
    that MIDI never sees (the exported bytes are identical).
    """
    from music21 import stream

    real = stream.Stream.makeBeams
    stream.Stream.makeBeams = lambda self, *args, **kwargs: None if kwargs.get("inPlace") else self
    try:
        yield
    finally:
        stream.Stream.makeBeams = real


def _unshare_context_objects(score) -> None:
    """Give each measure its own time/key signature and tempo objects.

    music21's ABC reader puts one TimeSignature object into several measures of a tune
    with changing meters (many Essen songs); MIDI export then fails when it gathers them
    into its conductor track ("already found in this Stream").
    """
    import copy

    from music21 import key, meter, tempo

    seen: set[int] = set()
    for container in score.recurse(streamsOnly=True, includeSelf=True):
        for element in list(container.getElementsByClass((meter.TimeSignature, key.KeySignature,
                                                          tempo.MetronomeMark))):
            if id(element) in seen:
                container.replace(element, copy.deepcopy(element))
            else:
                seen.add(id(element))


def _drop_repeats(score) -> None:
    """Remove repeat barlines, endings and repeat expressions, so the score reads straight through."""
    from music21 import bar, repeat, spanner, stream

    for measure in score[stream.Measure]:
        for side in ("leftBarline", "rightBarline"):
            if isinstance(getattr(measure, side), bar.Repeat):
                setattr(measure, side, None)
        for expression in list(measure.getElementsByClass(repeat.RepeatExpression)):
            measure.remove(expression)
    for container in score.recurse(streamsOnly=True, includeSelf=True):
        for bracket in list(container.getElementsByClass(spanner.RepeatBracket)):
            container.remove(bracket)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else ""


def _write_manifest(out: Path, catalogue: dict[str, list[Piece]]) -> list[dict]:
    """Rewrite `out/manifest.csv`: every file of the built styles, plus rows kept for other styles.

    Rows of styles not built now are kept while their files exist. `notes` and `seconds`
    are read back from each file with symusic; a file that cannot be read is left out.
    """
    from symusic import Score

    path = out / MANIFEST
    rows = []
    if path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.DictReader(fh)
                    if row.get("style") not in catalogue and (out / row.get("file", "")).is_file()]
    for style, pieces in catalogue.items():
        source_of = {piece.name: piece.source for piece in pieces}
        for midi in sorted((out / style).glob("*.mid")):
            try:
                score = Score(str(midi), ttype="second")
            except Exception:  # not ours to judge here: `midigen.data` reports unreadable files
                continue
            rows.append({"file": f"{style}/{midi.name}", "style": style, "source": source_of.get(midi.name, ""),
                         "notes": sum(len(track.notes) for track in score.tracks),
                         "seconds": f"{score.end():.2f}"})
    rows.sort(key=lambda row: row["file"])
    part = out / f".{MANIFEST}.part"
    with part.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(part, path)
    return rows
