"""Training corpora: the human-written scores that ship inside music21, exported as MIDI.

`STYLES` names each style a producer can ask for (`chorale`, `irish`, `classical`...) and the
folders of music21's bundled corpus it comes from. `build_corpus` writes
`<out>/<style>/<name>.mid`, one file per piece (one per tune of an ABC collection), and
`<out>/manifest.csv` with a row per file: `file` (relative path), `style`, `source` (music21
corpus path, plus `#<X number>` for one tune of a collection), `notes` and `seconds` (as
read back from the written file), `licence` (a note on the source's terms) and `exporter`
(the `EXPORTER_VERSION` that wrote the file).

Building resumes and repeats cheaply: a piece whose file exists and was written by this
`EXPORTER_VERSION` is not exported again; a file written by another version (or by an
exporter from before versions were recorded) is stale and exported again, so fixes to the
export reach a built corpus by themselves. A piece that failed is remembered in
`<out>/skipped.csv` with its reason and not retried until music21 or the exporter changes
(or, for a piece that ran out of time, the time limit grows). Each piece has a time limit
(`piece_timeout`); one that takes longer is skipped like a piece music21 cannot read.
Files are written atomically and recorded as they are written (in `<out>/.exported`
until the manifest is rewritten), so an interrupted build resumes where it stopped and
a finished one rebuilds as a no-op. Pieces are parsed in a process pool; a piece music21
cannot parse or export is skipped and counted, never fatal. Not for reading MIDI for
training (that is `midigen.data.cache`, which takes any `<root>/<style>/*.mid` folder).
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import os
import re
import signal
import sys
import threading
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from midigen.errors import MidigenError


@dataclass(frozen=True)
class Style:
    """A style a producer can ask for, and the pieces of music21's bundled corpus that make it."""

    description: str
    # corpus folders (searched at any depth) or single files, e.g. "bach", "mozart/k80", "miscFolk/x.abc"
    sources: tuple[str, ...]
    # score formats taken, preferred first where one piece ships in several (bwv277.mxl over bwv277.krn)
    suffixes: tuple[str, ...]
    licence: str  # the source's terms, in short: the manifest's `licence` column
    # corpus paths without suffix ("bach/bwv846"), or with "#<X number>" for one tune: not this style's music
    excluded: frozenset[str] = frozenset()
    # X numbers count through the whole collection, and some files overlap: take each tune once
    tunes_numbered_across_files: bool = False


_PUBLIC_DOMAIN_ABC = "music public domain ({}); ABC transcriptions by {}, shipped with music21 (no licence stated)"
_MUSIC21_SCORES = ("music public domain; encodings shipped with music21 by permission of their encoders "
                   "(music21 corpus/license.txt: some restrict commercial use)")

STYLES: dict[str, Style] = {
    "chorale": Style(
        "Bach chorales, four voices (music21 corpus/bach)",
        ("bach",), (".mxl", ".xml", ".musicxml", ".krn"),
        "music public domain; encodings by Margaret Greentree (jsbchorales.net), shipped with music21 by permission",
        # one keyboard piece among the chorales: the Well-Tempered Clavier's C-major prelude
        excluded=frozenset({"bach/bwv846"})),
    "fiddle": Style(
        "American and Irish fiddle tunes: reels, jigs, hornpipes, single line (Ryan's Mammoth Collection, 1883)",
        ("ryansMammoth",), (".abc",),
        _PUBLIC_DOMAIN_ABC.format("Ryan's Mammoth Collection, 1883", "Ray Davies and other volunteers")),
    "folk": Style(
        "German, European and Chinese folksongs, single line (Essen Folksong Collection)",
        ("essenFolksong",), (".abc",),
        "non-commercial use only: music21 has permission for non-commercial distribution and use "
        "(corpus/essenFolksong/license.txt)"),
    "renaissance": Style(
        "Palestrina mass movements, all voices (music21 corpus/palestrina)",
        ("palestrina",), (".krn", ".mxl", ".xml"),
        "music public domain; encodings Copyright 2000 John Miller, under a licence agreement that reserves "
        "derivative electronic formats (file headers): research use"),
    "irish": Style(
        "Irish traditional tunes: airs, jigs, reels, hornpipes, single line (O'Neill's Music of Ireland, 1850 melodies)",
        ("oneills1850",), (".abc",),
        _PUBLIC_DOMAIN_ABC.format("O'Neill's Music of Ireland, 1903", "Norbert Paap, Henrik Norbeck, Bob Safranek "
                                  "and other volunteers"),
        # the collection ships in files by tune-number range, some ranges twice (two transcribers)
        tunes_numbered_across_files=True),
    "scottish": Style(
        "Scottish (and some English and Irish) airs, marches and dance tunes for fife, violin or flute, single line "
        "(Aird's Selection, 1778-1803)",
        ("airdsAirs",), (".abc",),
        _PUBLIC_DOMAIN_ABC.format("Aird's Selection of Scotch, English, Irish and Foreign Airs, 1778-1803",
                                  "Jack Campin (2009)")),
    "northumbrian": Style(
        "English folk songs and Northumbrian small-pipe tunes, single line (Bruce and Stokoe's Northumbrian "
        "Minstrelsy, 1882)",
        ("miscFolk/northumbrianminstrelsyopus.abc",), (".abc",),
        _PUBLIC_DOMAIN_ABC.format("Northumbrian Minstrelsy, 1882", "Jack Campin (2007)")),
    "fife": Style(
        "American fife marches and quicksteps, colonial and Civil War, one or two voices",
        ("miscFolk/americanfifeopus.abc",), (".abc",),
        _PUBLIC_DOMAIN_ABC.format("18th-19th century bandsmen's tunebooks", "Jack Campin (2000)"),
        # X:101-131 are the untidied originals of tunes 1-31, appended to the file for reference
        excluded=frozenset(f"miscFolk/americanfifeopus#{n}" for n in range(100, 200))),
    "madrigal": Style(
        "Monteverdi madrigals, five voices (Books 3-5, 1592-1605)",
        ("monteverdi",), (".mxl", ".xml"), _MUSIC21_SCORES,
        excluded=frozenset({"monteverdi/madrigal.3.1_old"})),  # an older encoding of madrigal.3.1
    "classical": Style(
        "string quartet movements: Haydn, Mozart, Beethoven (op. 18 no. 1, op. 59) and Schumann (op. 41 no. 1)",
        ("haydn", "mozart/k80", "mozart/k155", "mozart/k156", "mozart/k458", "beethoven", "schumann_robert/opus41no1"),
        (".mxl", ".xml", ".musicxml", ".krn"), _MUSIC21_SCORES,  # leaves out mozart/k545, a piano sonata
        # Whole quartets in one file: music21 takes minutes on each (op. 18 no. 4: 10) and follows a
        # minuet's da capo back to the first movement (op. 18 no. 4 came out 65 minutes long).
        excluded=frozenset(f"beethoven/{opus}" for opus in ("opus18no3", "opus18no4", "opus18no5", "opus74",
                                                             "opus132", "opus133"))),
    "medieval": Style(
        "14th-century Italian polyphony, two to four voices: mass movements, madrigals, ballate, motets "
        "(Landini, Jacopo da Bologna, Giovanni da Cascia, Ciconia, anonymous)",
        ("trecento", "ciconia", "luca"), (".mxl", ".xml", ".musicxml"),
        "music public domain; transcriptions by Michael Scott Cuthbert and others after the PMFC editions, shipped "
        "with music21 (two CC-BY-SA 3.0, the rest no licence stated)",
        excluded=frozenset({"trecento/PMFC_12_4-Gloria Rvat 1419_bak"})),  # a backup copy of PMFC_12_4
}
ALL_STYLE_NAMES: tuple[str, ...] = tuple(STYLES)
ALL_STYLES: dict[str, str] = {name: style.description for name, style in STYLES.items()}
# The default corpus (`midigen data build`, `make train`): every style but `classical` (the
# shipped model was trained without it: its 45 quartet movements cost about 6 CPU minutes to
# export, 2-31 s each, and the style has too few files to learn from beside the others), at
# most DEFAULT_LIMIT pieces of each, so no style drowns the others. `--styles all` adds it.
DEFAULT_STYLES: tuple[str, ...] = tuple(name for name in STYLES if name != "classical")
DEFAULT_LIMIT = 300

# The version of the export code (`export_piece` and all it calls), recorded beside each file it
# writes. Bump it in any change that changes what a file holds (a fix to grace notes, ties,
# repeats...): the next build then exports every file of the built styles again, and retries
# the pieces that failed, instead of keeping what the old code wrote.
EXPORTER_VERSION = 1
# Seconds one piece may take to export: music21 takes minutes on some scores, or never ends
# (a repeat it follows round and round). 120 is about 4 times the slowest of `--styles all` (31 s).
DEFAULT_PIECE_TIMEOUT = 120.0

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("file", "style", "source", "notes", "seconds", "licence", "exporter")
# Pieces that failed to export, with the reason: not retried while music21 and the exporter are
# the same, nor (`timeout`: the limit a piece ran out of, empty for other failures) under a limit no longer.
SKIPPED = "skipped.csv"
SKIPPED_COLUMNS = ("style", "source", "reason", "music21", "exporter", "timeout")
# "<file>,<exporter>" per file written since the manifest was: how an interrupted build knows what it wrote
EXPORTED = ".exported"
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
    """Every piece of `style`, in the stable order `--limit` takes them from.

    That order is the style's sources in turn, each by corpus path and then tune number.
    File names are the piece's path inside its folder (with the folder first when a style
    draws on several) made safe, plus `_<X number>` for one tune of a collection.
    """
    spec = STYLES[style]
    root = corpus_root or music21_corpus_root()
    several_folders = len({source.split("/")[0] for source in spec.sources}) > 1
    pieces: list[Piece] = []
    taken: set[str] = set()
    numbers_taken: set[int] = set()  # for a collection numbered across its files
    for source in spec.sources:
        for key, path in _scores_in(root, source, spec):
            rel = path.relative_to(root).as_posix()
            stem = safe_name(key if several_folders else key.split("/", 1)[-1])
            numbers = _tune_numbers(path) if path.suffix == ".abc" else []
            fresh = numbers
            if spec.tunes_numbered_across_files:
                fresh = [n for n in numbers if n not in numbers_taken]
                numbers_taken.update(fresh)
                if numbers and not fresh:
                    continue
            if len(numbers) <= 1:  # a single piece: parse the whole file
                entries = [(None, rel, stem)]
            else:
                entries = [(n, f"{rel}#{n}", f"{stem}_{n}") for n in fresh if f"{key}#{n}" not in spec.excluded]
            for number, piece_source, base in entries:
                name, k = f"{base}.mid", 2
                while name.lower() in taken:  # case-insensitive file systems
                    name, k = f"{base}_{k}.mid", k + 1
                taken.add(name.lower())
                pieces.append(Piece(style, piece_source, path, number, name))
    return pieces


def _scores_in(root: Path, source: str, spec: Style) -> list[tuple[str, Path]]:
    """(corpus path without suffix, file) of each score under `source`, sorted, one file per piece."""
    where = root / source
    if where.is_file():
        files = [where]
    elif where.is_dir():
        files = sorted(path for path in where.rglob("*") if path.is_file())
    else:
        raise MidigenError(f"music21's bundled corpus has no {source!r} (looked in {where}); "
                           "reinstall music21 with its corpus")
    chosen: dict[str, Path] = {}  # one file per piece: e.g. bwv277.mxl over its duplicate bwv277.krn
    for path in files:
        key = path.relative_to(root).with_suffix("").as_posix()
        if path.suffix not in spec.suffixes or key in spec.excluded:
            continue
        best = chosen.get(key)
        if best is None or spec.suffixes.index(path.suffix) < spec.suffixes.index(best.suffix):
            chosen[key] = path
    return sorted(chosen.items())


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
                 limit: int | None = None, jobs: int | None = None,
                 piece_timeout: float = DEFAULT_PIECE_TIMEOUT) -> dict[str, Counter]:
    """Export `styles` (names, or "all") into `out/<style>/` and rewrite `out/manifest.csv`.

    `limit` takes at most that many pieces per style (the first in `list_pieces` order);
    `jobs` is the number of worker processes (default: all cores); `piece_timeout` the
    seconds one piece may take (wall clock), past which it is skipped. Existing files
    written by this `EXPORTER_VERSION` are kept; stale ones (another version, or none
    recorded) are exported again, those past `limit` too, and a stale file whose piece now
    fails is removed. Pieces listed in `out/skipped.csv` as failed with this music21 and
    exporter are not retried (those that ran out of time are, under a longer limit).
    Returns per style a Counter of `written` (new files), `reexported` (stale files
    replaced), `existing`, `failed` (failed now or before). Prints a progress bar on
    stderr and one summary line per style on stdout.
    """
    styles = resolve_styles(styles)
    if limit is not None and limit < 0:
        raise MidigenError(f"--limit must be 0 or more, not {limit}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise MidigenError(f"--jobs must be 1 or more, not {jobs}")
    if not piece_timeout > 0:
        raise MidigenError(f"--piece-timeout must be more than 0 seconds, not {piece_timeout:g}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MidigenError(f"corpus folder {out} is a file: pass --out a folder")

    catalogue = {style: list_pieces(style) for style in styles}
    skipped_before = _read_skipped(out)
    music21_version = _music21_version()
    written_since = _read_exported(out)  # by builds that stopped before rewriting the manifest
    # file -> the exporter version that wrote it ("" when not recorded: before versions were)
    exporter_of = {**{row["file"]: row.get("exporter") or "" for row in read_manifest(out) if row.get("file")},
                   **written_since}
    current = str(EXPORTER_VERSION)
    counts = {style: Counter(written=0, reexported=0, existing=0, failed=0) for style in styles}
    todo: list[tuple[Piece, Path]] = []
    stale: set[int] = set()  # indices into todo of pieces whose file is replaced
    not_retried = out_of_time = 0
    for style in styles:
        (out / style).mkdir(parents=True, exist_ok=True)
        for i, piece in enumerate(catalogue[style]):
            dest = out / style / piece.name
            within_limit = limit is None or i < limit
            if dest.exists():
                if exporter_of.get(f"{style}/{piece.name}") != current:
                    stale.add(len(todo))
                    todo.append((piece, dest))
                elif within_limit:
                    counts[style]["existing"] += 1
            elif not within_limit:
                continue
            elif _still_skipped(skipped_before.get((style, piece.source)), music21_version, piece_timeout):
                counts[style]["failed"] += 1
                not_retried += 1
                out_of_time += bool(skipped_before[(style, piece.source)].get("timeout"))
            else:
                todo.append((piece, dest))

    failures: list[tuple[Piece, str]] = []
    removed = 0
    if todo:
        with (out / EXPORTED).open("a", encoding="utf-8") as log:
            def record(i: int, error: str | None) -> None:  # as each piece ends: an interrupted build keeps it
                if error is None:
                    log.write(f"{todo[i][0].style}/{todo[i][0].name},{current}\n")
                    log.flush()

            results = _export_all(todo, jobs, piece_timeout, record)
        for i, ((piece, dest), error) in enumerate(zip(todo, results)):
            file = f"{piece.style}/{piece.name}"
            counts[piece.style]["failed" if error else "reexported" if i in stale else "written"] += 1
            skipped_before.pop((piece.style, piece.source), None)
            if not error:
                exporter_of[file] = current
                continue
            failures.append((piece, error))
            if error != WORKER_DIED:  # not the piece's fault, perhaps: retried next time
                skipped_before[(piece.style, piece.source)] = {
                    "style": piece.style, "source": piece.source, "reason": error, "music21": music21_version,
                    "exporter": current, "timeout": f"{piece_timeout:g}" if error == _timeout_reason(piece_timeout)
                    else ""}
                if i in stale:  # what an older exporter made of a piece this one cannot export
                    dest.unlink(missing_ok=True)
                    exporter_of.pop(file, None)
                    removed += 1
        _write_skipped(out, skipped_before)
    rows = _write_manifest(out, catalogue, exporter_of)
    _keep_exported(out, {file: version for file, version in written_since.items()  # other styles' files
                         if file.split("/")[0] not in catalogue and (out / file).is_file()})

    for piece, error in failures:
        print(f"skipped {piece.source}: {error}", file=sys.stderr)
    if removed:
        print(f"removed {removed} stale files whose pieces this exporter skips (reasons above)", file=sys.stderr)
    if not_retried:
        longer = f"; a longer --piece-timeout retries the {out_of_time} that ran out of time" if out_of_time else ""
        print(f"{not_retried} pieces that failed before were not retried: {out / SKIPPED} gives each reason "
              f"(delete it to retry them{longer})", file=sys.stderr)
    reexported = sum(c["reexported"] for c in counts.values())
    if reexported:
        print(f"re-exported {reexported} stale files (written by an older exporter; this is version "
              f"{EXPORTER_VERSION})")
    for style in styles:
        c = counts[style]
        n_files = sum(1 for row in rows if row["style"] == style)
        again = f"{c['reexported']} re-exported (stale), " if c["reexported"] else ""
        print(f"{style}: {c['written']} written, {again}{c['existing']} already present, {c['failed']} failed "
              f"({n_files} files in {out / style})")
    if not todo:
        print(f"nothing new to export; {out / MANIFEST} lists {len(rows)} files")
    return counts


def _still_skipped(skip: dict | None, music21_version: str, piece_timeout: float) -> bool:
    """Whether a piece that failed before (its skipped.csv row, or None) would fail again: not worth a try."""
    if skip is None or skip.get("music21") != music21_version or skip.get("exporter") != str(EXPORTER_VERSION):
        return False
    try:
        return not skip.get("timeout") or piece_timeout <= float(skip["timeout"])
    except ValueError:
        return False


def resolve_styles(styles) -> list[str]:
    """Style names, with "all" standing for every style in `STYLES`, checked and without repeats."""
    names: list[str] = []
    for name in (s.strip() for s in styles):
        names.extend(ALL_STYLE_NAMES if name == "all" else [name] if name else [])
    known = ", ".join(ALL_STYLE_NAMES)
    unknown = [s for s in names if s not in STYLES]
    if unknown:
        raise MidigenError(f"unknown style {unknown[0]!r}: choose from {known}, or all "
                           "(`midigen data styles` describes them)")
    if not names:
        raise MidigenError(f"no style given: choose from {known}, or all")
    return list(dict.fromkeys(names))


WORKER_DIED = "the export process died (out of memory?); retried on the next build"


def _export_all(todo: list[tuple[Piece, Path]], jobs: int, piece_timeout: float | None = None,
                record: Callable[[int, str | None], None] = lambda i, error: None) -> list[str | None]:
    """Export every (piece, destination); the error message of each piece that failed, else None.

    Each piece has `piece_timeout` seconds (None: no limit); `record(i, error)` is called in
    this process as soon as `todo[i]` is done.
    """
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    # In a log (not a terminal) a redraw every 0.1 s is thousands of characters: update every 10 s there.
    bar = tqdm(total=len(todo), desc="exporting", unit="piece", file=sys.stderr, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)
    results: list[str | None] = [WORKER_DIED] * len(todo)
    try:
        if jobs == 1 or len(todo) == 1:
            for i, task in enumerate(todo):
                results[i] = export_piece(task, piece_timeout)
                record(i, results[i])
                bar.update()
            return results
        # Piece costs vary 1000-fold (a 4-bar folksong vs a 40-minute quartet): start the largest
        # first, one at a time, so that no worker is left with a long piece at the end.
        order = _largest_first([piece for piece, _ in todo])
        pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)))
        try:
            futures = {pool.submit(export_piece, todo[i], piece_timeout): i for i in order}  # started in this order
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except BrokenProcessPool:  # a worker was killed: the pieces left undone say so
                    continue
                record(i, results[i])
                bar.update()
        finally:  # on Ctrl-C, start no more pieces
            pool.shutdown(cancel_futures=True)
        return results
    finally:
        bar.close()


def _largest_first(pieces: list[Piece]) -> list[int]:
    """Indices of `pieces` by estimated export cost, largest first: score bytes per piece of the file."""
    import zipfile

    per_file = Counter(piece.path for piece in pieces)
    size: dict[Path, int] = {}
    for path in per_file:
        try:
            if path.suffix == ".mxl":  # compressed: its XML is 10-50 times larger
                with zipfile.ZipFile(path) as archive:
                    size[path] = sum(info.file_size for info in archive.infolist())
            else:
                size[path] = path.stat().st_size
        except (OSError, zipfile.BadZipFile):
            size[path] = 0
    return sorted(range(len(pieces)), key=lambda i: -size[pieces[i].path] / per_file[pieces[i].path])


def export_piece(task: tuple[Piece, Path], timeout: float | None = None) -> str | None:
    """Parse one piece with music21 and write it to its destination as MIDI; an error message or None.

    All parts go into the file (one track each; an unpitched part on the drum channel);
    repeats are written out as played; tempo marks and changes are the score's own, else
    music21's default of 120 BPM; a pickup gets its own short bar (see `_mark_pickup`).
    A piece still parsing after `timeout` seconds (None: no limit) is given up, its message
    `export took over <timeout> s`. Runs in a worker process.
    """
    piece, dest = task
    try:
        with _time_limit(timeout):
            data = _midi_bytes(piece)
    except _OutOfTime:
        return _timeout_reason(timeout)
    except _Unusable as reason:
        return str(reason)
    except Exception as exc:  # music21 raises many kinds on odd scores; a bad piece never stops a build
        return _first_line(exc) or type(exc).__name__
    part = dest.with_name(f".{dest.name}.part")  # hidden and not *.mid: never mistaken for a corpus file
    part.write_bytes(data)
    os.replace(part, dest)
    return None


def _timeout_reason(seconds: float | None) -> str:
    return f"export took over {seconds:g} s"


class _OutOfTime(BaseException):
    """A piece past its time limit: not an `Exception`, so that music21's `except Exception:` lets it through."""


@contextmanager
def _time_limit(seconds: float | None):
    """Raise `_OutOfTime` in the block once it has run `seconds` (wall clock), and each second after.

    By SIGALRM, so only where there is one (Linux, macOS) and in a main thread (a pool
    worker's, or the build's own with one job); elsewhere, or for None or more than a
    million seconds (`inf`; the timer takes no more), there is no limit. Python runs the
    handler between bytecodes: code stuck in one C call stops when it returns.
    """
    if (seconds is None or seconds > 1e6 or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return
    running = True

    def out_of_time(signum, frame):
        if running:  # not once the block is over: the alarm may ring as it ends
            signal.setitimer(signal.ITIMER_REAL, 1.0)  # again in a second, should the piece's code catch this one
            raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, out_of_time)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        running = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Unusable(Exception):
    """A piece that parses but has nothing to train on; the message is the reason."""


def _midi_bytes(piece: Piece) -> bytes:
    """The piece as a standard MIDI file (bytes); raises `_Unusable` when it has no pitched notes."""
    from music21 import converter, harmony, repeat, stream
    from music21.midi import translate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # music21 warns per odd symbol; it would tear the progress bar
        # no pickle cache: each piece is parsed once, and writing pickles costs more than it saves
        with _no_beaming():
            voices_grouped = _abc_voices_grouped(piece) if piece.path.suffix == ".abc" else None
            if voices_grouped is not None:
                score = converter.parseData(voices_grouped, format="abc")
            else:
                score = converter.parseFile(piece.path, number=piece.number, forceSource=True, storePickle=False)
        if isinstance(score, stream.Opus):  # a collection file parsed whole: its first piece
            if not score.scores:
                raise _Unusable("no notes (an empty collection)")
            score = score.scores[0]
        notes = [n for n in score.recurse().notes if not isinstance(n, harmony.Harmony)]  # chord symbols: silent
        if not notes:
            raise _Unusable("no notes")
        if not any(n.pitches for n in notes):
            raise _Unusable("no pitched notes (percussion only)")
        measured = [part for part in score.parts if part.getElementsByClass(stream.Measure)]
        if measured:  # a part music21 read without bars is a fragment of a voice it could not follow
            score.remove([part for part in score.parts if part not in measured])
        _unshare_context_objects(score)
        # chord symbols are analysis, not notes: music21 would write each as a chord that never ends
        score.remove(list(score.recurse().getElementsByClass(harmony.Harmony)), recurse=True)
        _untie_different_pitches(score)
        _play_grace_notes(score)
        _open_each_repeat(score)
        pickup = _pickup_quarters(score)
        try:
            midi = translate.streamToMidiFile(score)  # expands repeats as played
        except repeat.ExpanderException:  # repeats music21 cannot follow: play the music once, as written
            _drop_repeats(score)
            midi = translate.streamToMidiFile(score)
        data = midi.writestr()
    return _mark_pickup(data, pickup) if pickup else data


_VOICE_FIELD = re.compile(r"^\s*V:\s*(\S+)")
_VOICE_INLINE = re.compile(r"^\s*\[V:\s*([^\]\s]+)[^\]]*\]\s?(.*)$")


def _abc_voices_grouped(piece: Piece) -> str | None:
    """The piece's ABC tune with each voice's lines gathered under one `V:` field; None if it has one voice.

    Multi-voice ABC alternates voices line by line (`V:1` ... `V:2` ... `V:1` ...);
    music21 reads each such stretch as a part of its own, all starting at the beginning.
    Gathered, each voice is one part and the voices sound together.
    """
    text = piece.path.read_text(encoding="utf-8", errors="replace")
    if "V:" not in text:
        return None
    lines, inside = [], piece.number is None
    for line in text.splitlines():
        match = _TUNE_NUMBER.match(line)
        if match and piece.number is not None:
            if inside:
                break
            inside = int(match.group(1)) == piece.number
        if inside:
            lines.append(line)
    key_line = next((i for i, line in enumerate(lines) if line.startswith("K:")), None)
    if key_line is None:
        return None
    header = [line for line in lines[:key_line + 1] if not _VOICE_FIELD.match(line)]  # voice declarations
    voices: dict[str, list[str]] = {}
    current, before_voices = None, []
    for line in lines[key_line + 1:]:
        inline = _VOICE_INLINE.match(line)
        field = _VOICE_FIELD.match(line)
        if inline:
            current = inline.group(1)
            voices.setdefault(current, []).append(inline.group(2))
        elif field:
            current = field.group(1)
            voices.setdefault(current, [])
        else:
            (voices[current] if current is not None else before_voices).append(line)
    if len(voices) < 2:
        return None
    body = before_voices + [line for voice, music in voices.items() for line in (f"V:{voice}", *music)]
    return "\n".join(header + body) + "\n"


def _open_each_repeat(score) -> None:
    """Give each end repeat (`:|`) that follows another, with no start repeat between, its start.

    Folk tunes written as sections each ending `:|` mean "play each section twice" (the
    common reading, abc2midi's too); music21 goes back to the top of the tune at every
    one, recursively: Aird's "Yanky Doodle", ten sections, came out 6.5 hours long. So a
    start repeat goes where the section began: after the previous end repeat, or after its
    endings (`[1 ... :|[2 ...`). A first end repeat with no start still goes to the top.
    """
    from music21 import bar, spanner, stream

    for part in score.parts if score.parts else [score]:
        measures = list(part.getElementsByClass(stream.Measure))
        section_start: int | None = 0  # None: inside the endings of the repeat just closed
        opened = False
        for i, measure in enumerate(measures):
            in_ending = any(isinstance(site, spanner.RepeatBracket) for site in measure.getSpannerSites())
            if section_start is None and not in_ending:
                section_start = i
            if isinstance(measure.leftBarline, bar.Repeat) and measure.leftBarline.direction == "start":
                opened = True
            right = measure.rightBarline
            if isinstance(right, bar.Repeat) and right.direction == "end":
                if not opened and section_start and section_start <= i:
                    measures[section_start].leftBarline = bar.Repeat(direction="start")
                opened = False
                section_start = None if in_ending else i + 1


def _untie_different_pitches(score) -> None:
    """Drop each tie between two notes of different pitch, in parts of one voice.

    ABC transcribers often write a slur as a tie (`G3-A`, over 700 times in O'Neill's);
    music21 would merge the two into one long G and lose the A.
    """
    from music21 import note, stream, tie

    for part in score.parts if score.parts else [score]:
        if part.recurse().getElementsByClass(stream.Voice).first() is not None:
            continue  # which note follows which is a question of voices: leave such parts as written
        notes = [n for n in part.recurse().notes if not n.duration.isGrace]
        for before, after in zip(notes, notes[1:]):
            if (isinstance(before, note.Note) and isinstance(after, note.Note) and before.tie is not None
                    and before.tie.type in ("start", "continue") and before.pitch.ps != after.pitch.ps):
                before.tie = tie.Tie("stop") if before.tie.type == "continue" else None
                if after.tie is not None:
                    after.tie = tie.Tie("start") if after.tie.type == "continue" else None


def _play_grace_notes(score) -> None:
    """Give each grace note a length: a 32nd (less before a short note) taken from the note it ornaments.

    music21 writes a grace note to MIDI with no length, its note-off before its note-on,
    which MIDI readers take as a note held until that pitch sounds again: every cut and
    roll of a fiddle tune would become a long stray note. A grace note with no note after
    it in its bar is dropped.
    """
    from fractions import Fraction

    from music21 import duration

    for container in list(score.recurse(streamsOnly=True, includeSelf=True)):
        graces = []
        for element in list(container.notesAndRests):
            if element.duration.isGrace:
                graces.append(element)
                continue
            if graces and not element.isRest and element.quarterLength > 0:
                each = min(Fraction(1, 8), Fraction(element.quarterLength) / (2 * len(graces)))
                onset = container.elementOffset(element)
                for k, grace in enumerate(graces):
                    grace.duration = duration.Duration(each)
                    container.setElementOffset(grace, onset + k * each)
                element.quarterLength = Fraction(element.quarterLength) - each * len(graces)
                container.setElementOffset(element, onset + each * len(graces))
            else:
                for grace in graces:
                    container.remove(grace)
            graces = []
        for grace in graces:
            container.remove(grace)


def _pickup_quarters(score) -> float:
    """The length in quarter notes of the score's pickup (anacrusis) bar, or 0 when it starts on a full bar."""
    from music21 import stream

    first = score.recurse().getElementsByClass(stream.Measure).first()
    if first is None or not first.paddingLeft:
        return 0.0
    try:
        return float(first.barDuration.quarterLength - first.paddingLeft)
    except Exception:  # no time signature to measure the bar by
        return 0.0


def _mark_pickup(data: bytes, quarters: float) -> bytes:
    """Give the pickup its own short bar in the MIDI file (bytes in, bytes out).

    music21 starts the file with the pickup's notes under the piece's time signature,
    which puts every later bar line `quarters` early in a DAW. This writes a time signature
    as long as the pickup (1/4 for one beat before 4/4) at tick 0 and moves the piece's own
    to the first full bar; no note moves. Left as is when the pickup is no whole number of
    64ths (a triplet pickup has no MIDI time signature) or the file is not as expected.
    """
    import io
    from fractions import Fraction

    import mido

    length = Fraction(quarters).limit_denominator(64) / 4  # in whole notes: numerator / denominator
    if length <= 0 or length >= 4 or length.denominator & (length.denominator - 1):
        return data
    midi = mido.MidiFile(file=io.BytesIO(data))
    first_bar = round(quarters * midi.ticks_per_beat)
    conductor = midi.tracks[0]
    timed, tick = [], 0
    for msg in conductor:
        tick += msg.time
        timed.append((tick, msg))
    signatures = [(tick, msg) for tick, msg in timed if msg.type == "time_signature"]
    if not signatures or signatures[0][0] != 0 or timed[-1][0] < first_bar:
        return data
    start_signature = signatures[0][1]
    restated = any(tick == first_bar for tick, _ in signatures[1:])  # the first full bar has its own already
    if any(0 < tick < first_bar for tick, _ in signatures):
        return data
    moved = [(0, start_signature.copy(numerator=length.numerator, denominator=length.denominator))]
    for tick, msg in timed:
        if msg is start_signature:
            if restated:
                continue
            tick = first_bar
        moved.append((tick, msg))
    moved.sort(key=lambda pair: pair[0])  # stable: same-tick events keep their order, end_of_track stays last
    conductor[:] = [msg.copy(time=tick - previous)
                    for (tick, msg), previous in zip(moved, [0] + [tick for tick, _ in moved[:-1]])]
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


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


def _write_manifest(out: Path, catalogue: dict[str, list[Piece]], exporter_of: dict[str, str]) -> list[dict]:
    """Rewrite `out/manifest.csv`: every file of the built styles, plus rows kept for other styles.

    Rows of styles not built now are kept while their files exist. `notes` and `seconds`
    are read back from each file with symusic; a file that cannot be read is left out.
    `exporter_of` gives the exporter version of each file of the built styles ("" if unknown).
    """
    from symusic import Score

    rows = [row for row in read_manifest(out)
            if row.get("style") not in catalogue and (out / row.get("file", "")).is_file()]
    for row in rows:  # a manifest written before the licence column
        if not row.get("licence") and row.get("style") in STYLES:
            row["licence"] = STYLES[row["style"]].licence
    for style, pieces in catalogue.items():
        source_of = {piece.name: piece.source for piece in pieces}
        for midi in sorted((out / style).glob("*.mid")):
            try:
                score = Score(str(midi), ttype="second")
            except Exception:  # not ours to judge here: `midigen.data.cache` reports unreadable files
                continue
            rows.append({"file": f"{style}/{midi.name}", "style": style, "source": source_of.get(midi.name, ""),
                         "notes": sum(len(track.notes) for track in score.tracks),
                         "seconds": f"{score.end():.2f}", "licence": STYLES[style].licence,
                         "exporter": exporter_of.get(f"{style}/{midi.name}", "")})
    rows.sort(key=lambda row: row["file"])
    _write_csv(out / MANIFEST, MANIFEST_COLUMNS, rows)
    return rows


def read_manifest(root: Path) -> list[dict]:
    """The rows of `root/manifest.csv` (none when there is no manifest)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _read_exported(out: Path) -> dict[str, str]:
    """The files `out/.exported` says were written (file -> exporter version), the last line of each winning."""
    path = out / EXPORTED
    if not path.is_file():
        return {}
    exported = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        file, _, version = line.rpartition(",")
        if file:
            exported[file] = version
    return exported


def _keep_exported(out: Path, exported: dict[str, str]) -> None:
    """Rewrite `out/.exported` with just `exported` (files the manifest does not record yet), or remove it."""
    path = out / EXPORTED
    if exported:
        part = path.with_name(f"{path.name}.part")
        part.write_text("".join(f"{file},{version}\n" for file, version in sorted(exported.items())), encoding="utf-8")
        os.replace(part, path)
    else:
        path.unlink(missing_ok=True)


def _read_skipped(out: Path) -> dict[tuple[str, str], dict]:
    """The pieces `out/skipped.csv` says failed before: (style, source) -> its row."""
    path = out / SKIPPED
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {(row["style"], row["source"]): row for row in csv.DictReader(fh)
                if row.get("style") and row.get("source")}


def _write_skipped(out: Path, skipped: dict[tuple[str, str], dict]) -> None:
    path = out / SKIPPED
    if skipped:
        _write_csv(path, SKIPPED_COLUMNS, sorted(skipped.values(), key=lambda row: (row["style"], row["source"])))
    elif path.exists():
        path.unlink()


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    part = path.with_name(f".{path.name}.part")
    with part.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(part, path)


def _music21_version() -> str:
    try:
        return importlib.metadata.version("music21")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def print_styles(root: str | Path = "data/corpus") -> None:
    """`midigen data styles`: each style's name, pieces in music21's corpus, files and notes built, description.

    The built counts come from `root/manifest.csv`; without one they read "-".
    """
    root = Path(root)
    rows = read_manifest(root)
    files, notes = Counter(), Counter()
    for row in rows:
        files[row["style"]] += 1
        notes[row["style"]] += int(row.get("notes") or 0)
    table = [("style", "in music21", "built", "notes", "description")]
    for name, style in STYLES.items():
        built = (f"{files[name]:,}", f"{notes[name]:,}") if rows else ("-", "-")
        table.append((name, f"{len(list_pieces(name)):,}", *built, style.description))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for line in table:
        print(f"{line[0]:<{widths[0]}}  {line[1]:>{widths[1]}}  {line[2]:>{widths[2]}}  {line[3]:>{widths[3]}}  "
              f"{line[4]}")
    if rows:
        print(f"built: {root / MANIFEST} ({len(rows):,} files; its licence column gives each source's terms)")
    else:
        print(f"no corpus built in {root}: `midigen data build --out {root}` builds the default styles, "
              "`--styles all` every one")
