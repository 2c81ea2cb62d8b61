"""`midigen data build`: music21's bundled scores exported as a MIDI corpus, one folder per style."""

from __future__ import annotations

import csv
import re

import mido
import pytest

from midigen.cli import main
from midigen.data.corpus import ALL_STYLES, DEFAULT_STYLES, MANIFEST_COLUMNS, build_corpus, export_piece, list_pieces
from midigen.errors import MidigenError


def _notes(path) -> list[int]:
    """Notes per track (note_on with velocity > 0)."""
    midi = mido.MidiFile(str(path))
    return [sum(1 for msg in track if msg.type == "note_on" and msg.velocity > 0) for track in midi.tracks]


def _manifest(root) -> list[dict]:
    with (root / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    counts = build_corpus(styles=["chorale", "fiddle"], out=root, limit=2, jobs=2)
    return root, counts


def test_default_styles_are_chorale_and_fiddle():
    assert DEFAULT_STYLES == ("chorale", "fiddle")
    assert set(ALL_STYLES) == {"chorale", "fiddle", "folk", "renaissance"}


def test_limit_takes_the_first_pieces_of_each_style_by_source_name(built):
    root, counts = built
    assert sorted(p.name for p in (root / "chorale").iterdir()) == ["bwv1.6.mid", "bwv10.7.mid"]
    assert sorted(p.name for p in (root / "fiddle").iterdir()) == ["42dHighlandRegimentStrathspey.mid",
                                                                   "7thRegimentReel.mid"]
    assert counts == {"chorale": {"written": 2, "existing": 0, "failed": 0},
                      "fiddle": {"written": 2, "existing": 0, "failed": 0}}


def test_files_are_midi_with_a_tempo_and_chorales_keep_all_four_voices(built):
    root, _ = built
    for path in (root / "chorale").glob("*.mid"):
        voices = [n for n in _notes(path) if n > 0]
        assert len(voices) >= 4, f"{path.name}: only {len(voices)} tracks with notes"
    for path in root.glob("*/*.mid"):
        midi = mido.MidiFile(str(path))
        assert any(msg.type == "set_tempo" for track in midi.tracks for msg in track), path.name
        assert sum(_notes(path)) > 20, path.name


def test_manifest_describes_every_file(built):
    root, _ = built
    rows = _manifest(root)
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert sorted(row["file"] for row in rows) == sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.mid"))
    by_file = {row["file"]: row for row in rows}
    assert by_file["chorale/bwv1.6.mid"]["source"] == "bach/bwv1.6.mxl"
    assert by_file["fiddle/7thRegimentReel.mid"]["source"] == "ryansMammoth/7thRegimentReel.abc"
    for row in rows:
        assert row["style"] == row["file"].split("/")[0]
        assert int(row["notes"]) == sum(_notes(root / row["file"]))
        assert 5 < float(row["seconds"]) < 600


def test_rerun_writes_nothing_and_says_so(built, capsys):
    root, _ = built
    before = {p: p.stat().st_mtime_ns for p in root.glob("*/*.mid")}
    counts = build_corpus(styles=["chorale", "fiddle"], out=root, limit=2, jobs=2)
    assert counts["chorale"]["written"] == counts["fiddle"]["written"] == 0
    assert counts["chorale"]["existing"] == counts["fiddle"]["existing"] == 2
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/*.mid")} == before
    out = capsys.readouterr().out
    assert "nothing new" in out and "chorale: 0 written, 2 already present, 0 failed" in out


def test_growing_one_style_keeps_the_manifest_rows_of_the_others(built, tmp_path):
    import shutil

    root = tmp_path / "corpus"
    shutil.copytree(built[0], root)
    counts = build_corpus(styles=["fiddle"], out=root, limit=3, jobs=1)
    assert counts["fiddle"] == {"written": 1, "existing": 2, "failed": 0}
    files = sorted(row["file"] for row in _manifest(root))
    assert len(files) == 5 and "chorale/bwv1.6.mid" in files


def test_unknown_style_names_the_known_ones(tmp_path):
    with pytest.raises(MidigenError, match="unknown style 'jazz'.*chorale, fiddle, folk, renaissance"):
        build_corpus(styles=["chorale", "jazz"], out=tmp_path)
    assert not (tmp_path / "chorale").exists()


def test_a_piece_that_fails_is_skipped_and_counted(tmp_path, monkeypatch, capsys):
    import midigen.data.corpus as corpus

    good = list_pieces("fiddle")[0]
    corrupt = tmp_path / "Corrupt.mxl"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    empty = tmp_path / "Empty.abc"
    empty.write_text("X:1\nT:No music\nM:4/4\nK:G\n")
    pieces = [corpus.Piece("fiddle", "bach/Corrupt.mxl", corrupt, None, "Corrupt.mid"),
              corpus.Piece("fiddle", "ryansMammoth/Empty.abc", empty, None, "Empty.mid"), good]
    monkeypatch.setattr(corpus, "list_pieces", lambda style: pieces)
    counts = build_corpus(styles=["fiddle"], out=tmp_path / "out", jobs=1)
    assert counts["fiddle"] == {"written": 1, "existing": 0, "failed": 2}
    assert [p.name for p in (tmp_path / "out" / "fiddle").iterdir()] == [good.name]
    err = capsys.readouterr().err
    assert "skipped bach/Corrupt.mxl: " in err and "skipped ryansMammoth/Empty.abc: no notes" in err


def test_collections_give_one_safe_uniquely_named_file_per_tune():
    folk = list_pieces("folk")
    assert [(p.name, p.source) for p in folk[:2]] == [("altdeu10_1.mid", "essenFolksong/altdeu10.abc#1"),
                                                      ("altdeu10_2.mid", "essenFolksong/altdeu10.abc#2")]
    assert len(folk) > 5000
    for style in ALL_STYLES:
        names = [p.name for p in list_pieces(style)]
        assert len(set(n.lower() for n in names)) == len(names), style
        assert all(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.mid", n) for n in names), style
    chorales = {p.name: p.source for p in list_pieces("chorale")}
    assert chorales["bwv277.mid"] == "bach/bwv277.mxl"  # not its duplicate bwv277.krn
    assert "bwv846.mid" not in chorales  # a keyboard prelude, not a chorale


@pytest.mark.parametrize("source", [
    "essenFolksong/altdeu10.abc#5",  # music21 shares one TimeSignature between measures
    "ryansMammoth/AbithaMugginsFavoriteReel.abc",  # repeats music21 cannot expand: played as written
])
def test_pieces_music21_cannot_export_as_is_are_still_exported(source, tmp_path):
    style = "folk" if source.startswith("essen") else "fiddle"
    piece = next(p for p in list_pieces(style) if p.source == source)
    assert export_piece((piece, tmp_path / piece.name)) is None
    assert sum(_notes(tmp_path / piece.name)) > 20


def test_cli_data_build(tmp_path, capsys):
    assert main(["data", "build", "--styles", "fiddle", "--limit", "1", "--out", str(tmp_path)]) == 0
    assert [p.name for p in (tmp_path / "fiddle").iterdir()] == ["42dHighlandRegimentStrathspey.mid"]
    assert "fiddle: 1 written" in capsys.readouterr().out
    assert main(["data", "build", "--styles", "polka", "--out", str(tmp_path)]) == 2
    assert "unknown style 'polka'" in capsys.readouterr().err
