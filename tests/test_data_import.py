"""`midigen data import DIR --style NAME`: a producer's own MIDI files added to a corpus as a style."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from conftest import make_midi, snapshot
from midigen.cli import main
from midigen.data import imports
from midigen.data.cache import list_corpus

OTHER_ROW = {"file": "fiddle/reel.mid", "style": "fiddle", "source": "ryansMammoth/x.abc#1", "notes": "3",
             "seconds": "1.50", "licence": "public domain", "exporter": "1"}


def rows_of(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A corpus with one fiddle file and its manifest row, which an import must keep."""
    root = tmp_path / "corpus"
    (root / "fiddle").mkdir(parents=True)
    make_midi(root / "fiddle" / "reel.mid", [(60, 0, 1), (62, 1, 2), (64, 2, 3)])
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(OTHER_ROW))
        writer.writeheader()
        writer.writerow(OTHER_ROW)
    return root


@pytest.fixture
def producer_folder(tmp_path) -> Path:
    """A producer's folder: nested, mixed case, a duplicate, a name collision and each kind of bad file."""
    folder = tmp_path / "my midi"
    for sub in ("a/b", "copies", "x", ".hidden"):
        (folder / sub).mkdir(parents=True)
    make_midi(folder / "a" / "one.mid", [(60, 0, 1), (64, 1, 2)])
    make_midi(folder / "a" / "b" / "Two Tune.MIDI", [(67, 0, 2)], bpm=90)
    make_midi(folder / "x" / "y.mid", [(70, 0, 1)])
    make_midi(folder / "x__y.mid", [(72, 0, 1)])  # flattens to the same name as x/y.mid
    (folder / "copies" / "one again.mid").write_bytes((folder / "a" / "one.mid").read_bytes())
    (folder / "broken.mid").write_bytes(b"MThd this is not MIDI")
    (folder / "empty.mid").write_bytes(b"")
    make_midi(folder / "drums.mid", [(36, 0, 1), (38, 1, 2)], channel=9)
    make_midi(folder / "patterns.mid", [(60, 0, 1)], kind=2)
    make_midi(folder / "hours.mid", [(60, 0, 1), (62, 3700, 3701)])  # 3,701 beats at 120 bpm: 31 minutes
    make_midi(folder / ".hidden" / "x.mid", [(50, 0, 1)])
    (folder / "._one.mid").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (folder / "notes.txt").write_text("not music")
    return folder


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["data", "import", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_import_copies_the_usable_files_and_records_them(capsys, corpus, producer_folder):
    before = snapshot(producer_folder)
    status, out, err = run(capsys, str(producer_folder), "--style", "mine", "--root", str(corpus))
    assert status == 0, err

    style_dir = corpus / "mine"
    copies = sorted(p.name for p in style_dir.glob("*.mid"))
    assert copies == ["a__b__Two_Tune.mid", "a__one.mid", "x__y.mid", "x__y_2.mid"]
    assert (style_dir / "a__one.mid").read_bytes() == (producer_folder / "a" / "one.mid").read_bytes()
    assert (style_dir / "x__y.mid").read_bytes() == (producer_folder / "x" / "y.mid").read_bytes()
    assert (style_dir / "x__y_2.mid").read_bytes() == (producer_folder / "x__y.mid").read_bytes()
    assert not list(style_dir.glob(".*")), "a part file was left behind"

    rows = {row["file"]: row for row in rows_of(corpus / "manifest.csv")}
    assert rows["fiddle/reel.mid"] == OTHER_ROW
    ours = {file: row for file, row in rows.items() if row["style"] == "mine"}
    assert {file: row["source"] for file, row in ours.items()} == {
        "mine/a__b__Two_Tune.mid": "a/b/Two Tune.MIDI", "mine/a__one.mid": "a/one.mid",
        "mine/x__y.mid": "x/y.mid", "mine/x__y_2.mid": "x__y.mid"}
    assert {row["licence"] for row in ours.values()} == {"yours"}
    assert {row["exporter"] for row in ours.values()} == {"import"}
    assert ours["mine/a__one.mid"]["notes"] == "2" and ours["mine/a__one.mid"]["seconds"] == "1.00"
    assert ours["mine/a__b__Two_Tune.mid"]["seconds"] == "1.33"  # two beats at 90 bpm

    skipped = {row["source"]: row["reason"] for row in rows_of(style_dir / "import_skipped.csv")}
    assert set(skipped) == {"broken.mid", "empty.mid", "drums.mid", "patterns.mid", "hours.mid"}
    assert "not a readable MIDI file" in skipped["broken.mid"]
    assert "empty: 0 bytes" in skipped["empty.mid"]
    assert skipped["drums.mid"] == "drum tracks only (no pitched notes)"
    assert "type-2" in skipped["patterns.mid"]
    assert "31 minutes long" in skipped["hours.mid"]
    for source, reason in skipped.items():
        assert f"skipped {source}: {reason}" in err
    assert "duplicate copies/one again.mid: same bytes as a/one.mid" in err
    assert f"imported 4, duplicates 1, skipped 5; reasons above and in {style_dir / 'import_skipped.csv'}; " \
           f"into {style_dir} (4 files)" in out
    assert ".hidden" not in out + err and "._one" not in out + err

    assert snapshot(producer_folder) == before
    trained_on = {f.rel for f in list_corpus(corpus) if f.style == "mine"}
    assert trained_on == {f"mine/{name}" for name in copies}


def test_importing_again_adds_only_the_new_files(capsys, corpus, producer_folder):
    assert run(capsys, str(producer_folder), "--style", "mine", "--root", str(corpus))[0] == 0
    make_midi(producer_folder / "a" / "new idea.mid", [(65, 0, 3)])
    status, out, err = run(capsys, str(producer_folder), "--style", "mine", "--root", str(corpus))
    assert status == 0, err
    assert f"style mine was in {corpus} already (4 files): new files added beside them" in out
    assert "imported 1, duplicates 5, skipped 5" in out
    assert "duplicate a/one.mid: same bytes as mine/a__one.mid" in err
    files = [row["file"] for row in rows_of(corpus / "manifest.csv")]
    assert len(files) == len(set(files)) == 6
    assert "mine/a__new_idea.mid" in files

    # a third import from another folder of already-imported files: nothing new, nothing rewritten
    other = producer_folder.parent / "other"
    other.mkdir()
    (other / "same.mid").write_bytes((producer_folder / "x__y.mid").read_bytes())
    manifest = corpus / "manifest.csv"
    written = manifest.stat().st_mtime_ns
    status, out, _ = run(capsys, str(other), "--style", "mine", "--root", str(corpus))
    assert status == 0 and "imported 0, duplicates 1, skipped 0" in out
    assert manifest.stat().st_mtime_ns == written
    assert not (corpus / "mine" / "import_skipped.csv").exists()  # the latest import's: none skipped


def test_a_file_left_by_a_killed_import_gets_its_row(capsys, corpus, producer_folder):
    (corpus / "mine").mkdir()
    (corpus / "mine" / "a__one.mid").write_bytes((producer_folder / "a" / "one.mid").read_bytes())
    status, out, _ = run(capsys, str(producer_folder), "--style", "mine", "--root", str(corpus))
    assert status == 0
    assert "imported 4 (1 copied by an import that stopped early, now recorded), duplicates 1" in out
    rows = {row["file"]: row["source"] for row in rows_of(corpus / "manifest.csv")}
    assert rows["mine/a__one.mid"] == "a/one.mid"
    assert sorted(p.name for p in (corpus / "mine").glob("*.mid")) == [
        "a__b__Two_Tune.mid", "a__one.mid", "x__y.mid", "x__y_2.mid"]


def _no_midi(folder: Path) -> Path:
    (folder / "deeper").mkdir(parents=True)
    (folder / "deeper" / "read me.txt").write_text("lyrics")
    (folder / ".hidden.mid").write_bytes(b"")  # hidden: not looked at
    return folder


def _broken_only(folder: Path) -> Path:
    folder.mkdir()
    (folder / "broken.mid").write_bytes(b"garbage")
    (folder / "empty.midi").write_bytes(b"")
    return folder


BAD_INPUTS = {
    "missing folder": (lambda tmp: tmp / "nowhere", "mine", "no such folder"),
    "a file, not a folder": (lambda tmp: make_midi(tmp / "song.mid", [(60, 0, 1)]), "mine", "is a file, not a folder"),
    "no MIDI files": (lambda tmp: _no_midi(tmp / "docs"), "mine", "holds no MIDI files (.mid, .midi, .smf, at any "
                      "depth)"),
    "every file broken": (lambda tmp: _broken_only(tmp / "bad"), "mine",
                          "none of the 2 MIDI files in {folder} can be used, nothing imported (broken.mid: not a "
                          "readable MIDI file"),
    "one of music21's styles": (lambda tmp: tmp / "ok", "chorale", "is one of music21's styles"),
    "one of music21's styles, built": (lambda tmp: tmp / "ok", "fiddle", "is one of music21's styles"),
    "a path as style": (lambda tmp: tmp / "ok", "../escape", "not a safe folder name"),
    "spaces in the style": (lambda tmp: tmp / "ok", "my style", "not a safe folder name: use letters, digits, "
                            "'.', '_' and '-', not starting with '.' (e.g. 'my_style')"),
    "a hidden style": (lambda tmp: tmp / "ok", ".mine", "not a safe folder name"),
    "the manifest as style": (lambda tmp: tmp / "ok", "manifest.csv", "is the name of a corpus file"),
    "the corpus inside the folder": (lambda tmp: tmp, "mine", "is inside"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, corpus, case):
    make_folder, style, message = BAD_INPUTS[case]
    good = tmp_path / "ok"
    good.mkdir()
    make_midi(good / "fine.mid", [(60, 0, 1)])
    folder = make_folder(tmp_path)
    corpus_before = snapshot(corpus)
    folder_before = snapshot(folder) if folder.is_dir() else None

    status, out, err = run(capsys, str(folder), "--style", style, "--root", str(corpus))
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("midigen: error: ")
    assert message.format(folder=folder) in err
    assert snapshot(corpus) == corpus_before
    if folder_before is not None and folder != tmp_path:
        assert snapshot(folder) == folder_before


def test_a_new_corpus_root_is_made_and_nothing_is_made_on_error(capsys, tmp_path):
    folder = _broken_only(tmp_path / "bad")
    root = tmp_path / "new" / "corpus"
    assert run(capsys, str(folder), "--style", "mine", "--root", str(root))[0] == 2
    assert not (tmp_path / "new").exists()
    make_midi(folder / "good.mid", [(60, 0, 1)])
    status, out, _ = run(capsys, str(folder), "--style", "mine", "--root", str(root))
    assert status == 0 and "imported 1, duplicates 0, skipped 2" in out
    assert [row["file"] for row in rows_of(root / "manifest.csv")] == ["mine/good.mid"]


@pytest.mark.parametrize("failure, status", [(KeyboardInterrupt(), 130), (OSError(28, "No space left on device"), 2)],
                         ids=["ctrl-c", "disk full"])
def test_an_import_that_fails_while_writing_leaves_the_corpus_as_it_was(capsys, monkeypatch, corpus, producer_folder,
                                                                        failure, status):
    before = snapshot(corpus)

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(imports, "_write_csv", fail)  # the manifest, written after every copy
    assert main(["data", "import", str(producer_folder), "--style", "mine", "--root", str(corpus)]) == status
    err = capsys.readouterr().err
    assert snapshot(corpus) == before
    if status == 2:
        assert f"cannot copy into {corpus / 'mine'} (No space left on device); nothing imported" in err


def test_names_are_flat_safe_and_never_clash_without_case():
    taken = {"song.mid"}
    assert imports._free_name("Song.MID", taken) == "Song_2.mid"
    assert imports._free_name("dir/sub dir/Café.midi", taken) == "dir__sub_dir__Cafe.mid"
    assert imports._free_name("DIR/sub_dir/cafe.mid", taken) == "DIR__sub_dir__cafe_2.mid"
    assert {"song_2.mid", "dir__sub_dir__cafe.mid", "dir__sub_dir__cafe_2.mid"} <= taken
    assert os.sep not in imports._free_name("../../etc/passwd.mid", set())
