"""`midigen data build`: music21's bundled scores exported as a MIDI corpus, one folder per style."""

from __future__ import annotations

import csv
import re

import mido
import pytest

from midigen.cli import main
from midigen.data.corpus import (ALL_STYLE_NAMES, ALL_STYLES, DEFAULT_PIECE_TIMEOUT, DEFAULT_STYLES, EXPORTER_VERSION,
                                  MANIFEST_COLUMNS, STYLES, build_corpus, export_piece, list_pieces, resolve_styles)
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


NEW_STYLES = ("irish", "scottish", "northumbrian", "fife", "madrigal", "classical", "medieval")


def test_the_default_is_every_style_but_the_slow_quartets():
    assert DEFAULT_STYLES == tuple(s for s in ALL_STYLE_NAMES if s != "classical") and len(DEFAULT_STYLES) >= 6
    assert ALL_STYLE_NAMES == tuple(ALL_STYLES) == ("chorale", "fiddle", "folk", "renaissance", *NEW_STYLES)


def test_limit_takes_the_first_pieces_of_each_style_by_source_name(built):
    root, counts = built
    assert sorted(p.name for p in (root / "chorale").iterdir()) == ["bwv1.6.mid", "bwv10.7.mid"]
    assert sorted(p.name for p in (root / "fiddle").iterdir()) == ["42dHighlandRegimentStrathspey.mid",
                                                                   "7thRegimentReel.mid"]
    assert counts == {"chorale": {"written": 2, "reexported": 0, "existing": 0, "failed": 0},
                      "fiddle": {"written": 2, "reexported": 0, "existing": 0, "failed": 0}}


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
    assert list(rows[0]) == list(MANIFEST_COLUMNS) == ["file", "style", "source", "notes", "seconds", "licence",
                                                      "exporter"]
    assert sorted(row["file"] for row in rows) == sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.mid"))
    by_file = {row["file"]: row for row in rows}
    assert by_file["chorale/bwv1.6.mid"]["source"] == "bach/bwv1.6.mxl"
    assert by_file["fiddle/7thRegimentReel.mid"]["source"] == "ryansMammoth/7thRegimentReel.abc"
    for row in rows:
        assert row["style"] == row["file"].split("/")[0]
        assert int(row["notes"]) == sum(_notes(root / row["file"]))
        assert 5 < float(row["seconds"]) < 600
        assert row["exporter"] == str(EXPORTER_VERSION)


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
    assert counts["fiddle"] == {"written": 1, "reexported": 0, "existing": 2, "failed": 0}
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
    assert counts["fiddle"] == {"written": 1, "reexported": 0, "existing": 0, "failed": 2}
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


# --- every style music21 ships: "all", the listing, the new sources and their odd files ----------------------------


def _meta(path) -> list[tuple[int, str, object]]:
    """(tick, type, value) of the tempo and time-signature events: tempo in BPM, signature as "n/d"."""
    midi = mido.MidiFile(str(path))
    events = []
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                events.append((tick, "tempo", round(mido.tempo2bpm(msg.tempo), 3)))
            elif msg.type == "time_signature":
                events.append((tick, "time", f"{msg.numerator}/{msg.denominator}"))
    return sorted(events)


def test_all_means_every_style_and_cli_builds_them(tmp_path, capsys):
    assert resolve_styles(["all"]) == list(ALL_STYLE_NAMES)
    assert resolve_styles(["irish", "all"]) == ["irish", *(s for s in ALL_STYLE_NAMES if s != "irish")]
    with pytest.raises(MidigenError, match="unknown style 'jazz'.*, or all"):
        resolve_styles(["all", "jazz"])
    assert main(["data", "build", "--styles", "all", "--limit", "0", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(ALL_STYLE_NAMES)
    out = capsys.readouterr().out
    assert all(f"{style}: 0 written" in out for style in ALL_STYLE_NAMES)


def test_each_new_style_has_its_source_and_a_licence():
    expected_sources = {"irish": "oneills1850/", "scottish": "airdsAirs/", "northumbrian": "miscFolk/northumbrian",
                        "fife": "miscFolk/americanfife", "madrigal": "monteverdi/", "classical": "haydn/",
                        "medieval": "trecento/"}
    for style, prefix in expected_sources.items():
        pieces = list_pieces(style)
        assert pieces[0].source.startswith(prefix), style
        assert STYLES[style].licence, style
    assert len(list_pieces("irish")) == 1838  # O'Neill's overlapping files: each tune number once
    assert len({p.number for p in list_pieces("irish")}) == 1838
    assert len(list_pieces("scottish")) == 1180 and len(list_pieces("northumbrian")) == 129
    assert [p.number for p in list_pieces("fife")][-1] == 31  # not the untidied originals, X:101-131
    madrigals = [p.name for p in list_pieces("madrigal")]
    assert len(madrigals) == 48 and "madrigal.3.1_old.mid" not in madrigals
    classical = {p.source for p in list_pieces("classical")}
    assert "beethoven/opus18no1/movement1.mxl" in classical and "beethoven/opus18no1/movement1.krn" not in classical
    assert not any(s.startswith("mozart/k545") for s in classical)  # a piano sonata, not a quartet
    medieval = {p.source for p in list_pieces("medieval")}
    assert {"ciconia/quod_jactatur.xml", "luca/gloria.xml"} <= medieval
    assert not any(s.endswith("_bak.xml") for s in medieval)


@pytest.fixture(scope="module")
def folk_tunes(tmp_path_factory):
    """Two tunes of each single-line collection and a madrigal: all quick to export."""
    root = tmp_path_factory.mktemp("tunes")
    build_corpus(styles=["irish", "scottish", "northumbrian", "fife"], out=root, limit=2, jobs=2)
    build_corpus(styles=["madrigal"], out=root, limit=1, jobs=1)
    return root


def test_new_styles_export_with_limit_and_a_licence_per_row(folk_tunes):
    rows = _manifest(folk_tunes)
    assert sorted(row["file"] for row in rows) == [
        "fife/americanfifeopus_1.mid", "fife/americanfifeopus_5.mid",
        "irish/0001-0050_1.mid", "irish/0001-0050_2.mid", "madrigal/madrigal.3.1.mid",
        "northumbrian/northumbrianminstrelsyopus_1.mid", "northumbrian/northumbrianminstrelsyopus_2.mid",
        "scottish/book1_1.mid", "scottish/book1_2.mid"]
    for row in rows:
        assert row["licence"] == STYLES[row["style"]].licence
        assert int(row["notes"]) == sum(_notes(folk_tunes / row["file"])) > 20
        assert 5 < float(row["seconds"]) < 600
    assert "non-commercial" in STYLES["folk"].licence and "public domain" in STYLES["irish"].licence
    assert len([n for n in _notes(folk_tunes / "madrigal/madrigal.3.1.mid") if n]) == 5  # five voices, one file


def test_second_build_of_new_styles_is_a_no_op(folk_tunes, capsys):
    before = {p: p.stat().st_mtime_ns for p in folk_tunes.glob("*/*.mid")}
    counts = build_corpus(styles=["irish", "scottish", "northumbrian", "fife"], out=folk_tunes, limit=2, jobs=2)
    assert all(c == {"written": 0, "reexported": 0, "existing": 2, "failed": 0} for c in counts.values())
    assert {p: p.stat().st_mtime_ns for p in folk_tunes.glob("*/*.mid")} == before
    assert "nothing new to export" in capsys.readouterr().out
    assert len(_manifest(folk_tunes)) == 9  # the madrigal's row is kept


def test_pickups_get_their_own_short_bar_and_no_note_moves(built, folk_tunes):
    # bwv1.6 starts with a one-beat pickup; bwv10.7 on a full bar
    assert [e for e in _meta(built[0] / "chorale/bwv1.6.mid") if e[1] == "time"][:2] == [(0, "time", "1/4"),
                                                                                           (10080, "time", "4/4")]
    assert [e for e in _meta(built[0] / "chorale/bwv10.7.mid") if e[1] == "time"][0] == (0, "time", "4/4")
    # O'Neill's 2, "Fare You Well": 2/4 with an eighth-note pickup (two tied 16ths, f-g), first bar at tick 5040
    path = folk_tunes / "irish/0001-0050_2.mid"
    assert [e for e in _meta(path) if e[1] == "time"][:2] == [(0, "time", "1/8"), (5040, "time", "2/4")]
    onsets = sorted({tick for track in mido.MidiFile(str(path)).tracks
                     for tick, msg in zip(_ticks(track), track) if msg.type == "note_on" and msg.velocity})
    assert onsets[:3] == [0, 2520, 5040]  # f, g (the pickup), then the first bar's downbeat


def _ticks(track) -> list[int]:
    ticks, tick = [], 0
    for msg in track:
        tick += msg.time
        ticks.append(tick)
    return ticks


def test_a_tempo_change_is_exported_where_the_score_has_it(tmp_path):
    # Aird's 783 "Can ye Sew Cushions": Slow (quarter = 96) for 32 quarters, then Quick (128) in 2/4 for 16.5
    piece = next(p for p in list_pieces("scottish") if p.number == 783)
    assert export_piece((piece, tmp_path / piece.name)) is None
    tempos = [e for e in _meta(tmp_path / piece.name) if e[1] == "tempo"]
    assert tempos == [(0, "tempo", 96.0), (32 * 10080, "tempo", 128.0)]
    seconds, last_note_end = 0.0, 0.0
    for msg in mido.MidiFile(str(tmp_path / piece.name)):  # merged tracks, times in seconds by the tempo map
        seconds += msg.time
        if msg.type in ("note_off", "note_on"):
            last_note_end = seconds
    assert last_note_end == pytest.approx(32 * 60 / 96 + 16.5 * 60 / 128, abs=1e-3)


def test_two_voice_abc_tunes_keep_both_voices(tmp_path):
    piece = next(p for p in list_pieces("fife") if p.number == 8)  # Duke of York's March, V:1 and V:2
    assert export_piece((piece, tmp_path / piece.name)) is None
    assert len([n for n in _notes(tmp_path / piece.name) if n > 20]) == 2


_MUSICXML = """<?xml version="1.0" encoding="UTF-8"?>
<score-partwise version="3.1"><part-list>{parts}</part-list>{music}</score-partwise>"""


def _musicxml(path, *parts: str):
    """A one-bar 4/4 MusicXML file; each part is the <note> elements of its bar."""
    header = ("<attributes><divisions>1</divisions><time><beats>4</beats><beat-type>4</beat-type></time>"
              "</attributes>")
    path.write_text(_MUSICXML.format(
        parts="".join(f'<score-part id="P{i}"><part-name>P{i}</part-name></score-part>' for i in range(len(parts))),
        music="".join(f'<part id="P{i}"><measure number="1">{header}{notes}</measure></part>'
                      for i, notes in enumerate(parts))))
    return path


def test_odd_scores_are_exported_or_skipped_with_a_reason(tmp_path, monkeypatch, capsys):
    import midigen.data.corpus as corpus

    pitched = "".join(f"<note><pitch><step>{s}</step><octave>4</octave></pitch><duration>1</duration></note>"
                      for s in "CDEF")
    rests = "<note><rest/><duration>4</duration></note>"
    drums = ("<note><unpitched><display-step>C</display-step><display-octave>5</display-octave></unpitched>"
             "<duration>1</duration></note>") * 4
    files = {
        "EmptyPart.xml": _musicxml(tmp_path / "EmptyPart.xml", pitched, rests),  # exported: the other part
        "Drums.xml": _musicxml(tmp_path / "Drums.xml", drums),  # skipped: nothing pitched
        "Rests.xml": _musicxml(tmp_path / "Rests.xml", rests),  # skipped: no notes
        "Truncated.xml": tmp_path / "Truncated.xml",  # skipped: not XML
        "Two.abc": tmp_path / "Two.abc",  # a collection parsed whole: its first tune
    }
    files["Truncated.xml"].write_text(_musicxml(tmp_path / "t.xml", pitched).read_text()[:150])
    files["Two.abc"].write_text("X:1\nT:One\nM:4/4\nL:1/4\nK:C\nCDEF|GABc|]\n\nX:2\nT:Two\nM:4/4\nL:1/4\nK:C\nC4|]\n")
    pieces = [corpus.Piece("classical", f"test/{name}", path, None, f"{path.stem}.mid") for name, path in files.items()]
    monkeypatch.setattr(corpus, "list_pieces", lambda style: pieces)
    out = tmp_path / "out"
    counts = build_corpus(styles=["classical"], out=out, jobs=1)
    assert counts["classical"] == {"written": 2, "reexported": 0, "existing": 0, "failed": 3}
    assert _notes(out / "classical/EmptyPart.mid")[1:] == [4, 0]
    assert sum(_notes(out / "classical/Two.mid")) == 8
    err = capsys.readouterr().err
    assert "skipped test/Drums.xml: no pitched notes (percussion only)" in err
    assert "skipped test/Rests.xml: no notes" in err
    assert "skipped test/Truncated.xml: " in err
    with (out / "skipped.csv").open(newline="", encoding="utf-8") as fh:
        assert sorted(row["source"] for row in csv.DictReader(fh)) == ["test/Drums.xml", "test/Rests.xml",
                                                                        "test/Truncated.xml"]

    # a second build neither parses the failed pieces again nor re-exports the good ones
    monkeypatch.setattr(corpus, "_midi_bytes", lambda piece: pytest.fail(f"{piece.source} parsed again"))
    counts = build_corpus(styles=["classical"], out=out, jobs=1)
    assert counts["classical"] == {"written": 0, "reexported": 0, "existing": 2, "failed": 3}
    captured = capsys.readouterr()
    assert "3 pieces that failed before were not retried" in captured.err and "nothing new" in captured.out


def test_styles_lists_names_descriptions_and_counts_from_the_manifest(tmp_path, capsys):
    assert main(["data", "styles", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no corpus built" in out
    for style in ALL_STYLE_NAMES:
        line = next(line for line in out.splitlines() if line.split()[0] == style)
        assert line.split()[1:4] == [f"{len(list_pieces(style)):,}", "-", "-"]
        assert STYLES[style].description in line

    (tmp_path / "manifest.csv").write_text(
        "file,style,source,notes,seconds,licence\n"
        "chorale/a.mid,chorale,bach/a.mxl,1200,30.00,pd\n"
        "chorale/b.mid,chorale,bach/b.mxl,34,20.00,pd\n"
        "irish/c.mid,irish,oneills1850/c.abc#1,56,10.00,pd\n", encoding="utf-8")
    assert main(["data", "styles", "--root", str(tmp_path)]) == 0
    lines = {line.split()[0]: line.split()[1:4] for line in capsys.readouterr().out.splitlines()}
    assert lines["chorale"] == [f"{len(list_pieces('chorale')):,}", "2", "1,234"]
    assert lines["irish"] == ["1,838", "1", "56"]
    assert lines["folk"][1:] == ["0", "0"]


@pytest.mark.parametrize("style,voices", [("classical", 4), ("medieval", 2)])  # about 2 s and 1 s of CPU
def test_first_piece_of_the_score_styles_exports_all_parts(style, voices, tmp_path):
    counts = build_corpus(styles=[style], out=tmp_path, limit=1, jobs=1)
    assert counts[style] == {"written": 1, "reexported": 0, "existing": 0, "failed": 0}
    (path,) = (tmp_path / style).glob("*.mid")
    assert len([n for n in _notes(path) if n > 20]) >= voices
    assert 30 < mido.MidiFile(str(path)).length < 3600


def test_sections_that_each_end_in_a_repeat_are_each_played_twice(tmp_path):
    # Aird's 102 "Yanky Doodle": ten 8-bar sections of 2/4 at quarter = 84, each ending ":|" with no "|:";
    # music21 alone goes back to the top at every one, recursively (the file came out 6.5 hours long)
    piece = next(p for p in list_pieces("scottish") if p.number == 102)
    assert export_piece((piece, tmp_path / piece.name)) is None
    seconds, last_note_end = 0.0, 0.0
    for msg in mido.MidiFile(str(tmp_path / piece.name)):
        seconds += msg.time
        if msg.type in ("note_off", "note_on"):
            last_note_end = seconds
    assert last_note_end == pytest.approx(10 * 8 * 2 * 2 * 60 / 84, abs=1e-3)


def test_data_build_limit_takes_a_number_or_all(monkeypatch):
    from midigen import cli

    calls = []
    monkeypatch.setattr("midigen.data.corpus.build_corpus", lambda **kw: calls.append(kw))
    assert main(["data", "build"]) == 0
    assert main(["data", "build", "--styles", "fife", "--limit", "all"]) == 0
    assert main(["data", "build", "--styles", "fife", "--limit", "3"]) == 0
    assert [c["limit"] for c in calls] == [cli.DEFAULT_LIMIT, None, 3]
    assert calls[0]["styles"] == list(DEFAULT_STYLES)
    assert main(["data", "build", "--piece-timeout", "30"]) == 0
    assert [c["piece_timeout"] for c in calls] == [DEFAULT_PIECE_TIMEOUT] * 3 + [30.0]
    with pytest.raises(SystemExit):
        main(["data", "build", "--limit", "many"])


def test_each_section_ending_in_a_repeat_goes_back_to_its_own_start(tmp_path):
    import midigen.data.corpus as corpus

    abc = tmp_path / "Sections.abc"
    abc.write_text("X:1\nT:Sections\nM:4/4\nL:1/4\nK:C\nC D E F :| G A B c |[1 d4 :|[2 e4 || f g a b :|\n")
    piece = corpus.Piece("fiddle", "test/Sections.abc", abc, None, "Sections.mid")
    assert export_piece((piece, tmp_path / piece.name)) is None
    names = {0: "C", 2: "D", 4: "E", 5: "F", 7: "G", 9: "A", 11: "B"}
    played = [msg.note for msg in mido.MidiFile(str(tmp_path / piece.name)) if msg.type == "note_on" and msg.velocity]
    assert " ".join(names[n % 12] if n < 72 else names[n % 12].lower() for n in played) == (
        "C D E F C D E F "  # the first section goes back to the top
        "G A B c d G A B c e "  # the second to its own start, then takes its second ending
        "f g a b f g a b")  # the third to the bar after those endings


# --- an exporter version per file: a build exports stale files again; a time limit per piece --------------------


def _rewrite_manifest(root, rows, columns=MANIFEST_COLUMNS):
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_files_of_an_older_or_unrecorded_exporter_are_exported_again(built, tmp_path, capsys):
    import shutil

    root = tmp_path / "corpus"
    shutil.copytree(built[0], root)
    reel = root / "fiddle/7thRegimentReel.mid"
    exported = reel.read_bytes()
    # an older exporter wrote the reel (other music stands for what it got wrong); this one the other files
    reel.write_bytes((root / "chorale/bwv1.6.mid").read_bytes())
    rows = _manifest(root)
    for row in rows:
        if row["file"] == "fiddle/7thRegimentReel.mid":
            row["exporter"] = str(EXPORTER_VERSION - 1)
    _rewrite_manifest(root, rows)
    before = {p: p.stat().st_mtime_ns for p in root.glob("*/*.mid")}

    counts = build_corpus(styles=["chorale", "fiddle"], out=root, limit=2, jobs=1)
    assert counts["fiddle"] == {"written": 0, "reexported": 1, "existing": 1, "failed": 0}
    assert counts["chorale"] == {"written": 0, "reexported": 0, "existing": 2, "failed": 0}
    assert reel.read_bytes() == exported
    assert {p: t for p, t in before.items() if p != reel} == {p: p.stat().st_mtime_ns for p in before if p != reel}
    out = capsys.readouterr().out
    assert "re-exported 1 stale files" in out and "fiddle: 0 written, 1 re-exported (stale), 1 already present" in out
    rows = {row["file"]: row for row in _manifest(root)}
    assert {row["exporter"] for row in rows.values()} == {str(EXPORTER_VERSION)}
    assert int(rows["fiddle/7thRegimentReel.mid"]["notes"]) == sum(_notes(reel))  # the manifest reads the new file

    # a manifest from before exporter versions were recorded: every file of the styles built is stale
    _rewrite_manifest(root, rows.values(), columns=MANIFEST_COLUMNS[:-1])
    chorales = {p: p.stat().st_mtime_ns for p in root.glob("chorale/*.mid")}
    reel.write_bytes(b"MThd stale")
    counts = build_corpus(styles=["fiddle"], out=root, limit=2, jobs=1)
    assert counts["fiddle"] == {"written": 0, "reexported": 2, "existing": 0, "failed": 0}
    assert reel.read_bytes() == exported
    assert {p: p.stat().st_mtime_ns for p in chorales} == chorales
    assert {row["file"]: row["exporter"] for row in _manifest(root)} == {  # chorale: not built, not known
        "chorale/bwv1.6.mid": "", "chorale/bwv10.7.mid": "",
        "fiddle/42dHighlandRegimentStrathspey.mid": str(EXPORTER_VERSION),
        "fiddle/7thRegimentReel.mid": str(EXPORTER_VERSION)}


def test_an_interrupted_build_keeps_what_it_wrote(tmp_path, monkeypatch, capsys):
    import midigen.data.corpus as corpus

    def interrupted(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(corpus, "_write_manifest", interrupted)  # stopped after exporting, before the manifest
        with pytest.raises(KeyboardInterrupt):
            build_corpus(styles=["fiddle"], out=tmp_path, limit=1, jobs=1)
    (written,) = (tmp_path / "fiddle").glob("*.mid")
    assert not (tmp_path / "manifest.csv").exists()

    monkeypatch.setattr(corpus, "_midi_bytes", lambda piece: pytest.fail(f"{piece.source} exported again"))
    assert build_corpus(styles=["fiddle"], out=tmp_path, limit=1, jobs=1)["fiddle"]["existing"] == 1
    assert "nothing new to export" in capsys.readouterr().out
    assert [row["file"] for row in _manifest(tmp_path)] == [f"fiddle/{written.name}"]
    assert not (tmp_path / ".exported").exists()  # the manifest records it now


def _tiny_midi() -> bytes:
    import io

    midi = mido.MidiFile()
    midi.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=64, time=0),
                                       mido.Message("note_off", note=60, velocity=0, time=480)]))
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("jobs", [1, 2], ids=["in-process", "pool"])
def test_a_piece_past_the_time_limit_is_skipped_and_the_build_goes_on(jobs, tmp_path, monkeypatch, capsys):
    import time

    import midigen.data.corpus as corpus

    pieces = [corpus.Piece("fiddle", f"test/{name}.abc", tmp_path / f"{name}.abc", None, f"{name}.mid")
              for name in ("Endless", "Tune")]
    for piece in pieces:
        piece.path.write_text("X:1\n")
    midi, exported = _tiny_midi(), []

    def never_ends(piece):  # like music21 going round a repeat forever, and catching what it raises
        exported.append(piece.name)
        while piece.name == "Endless.mid":
            try:
                time.sleep(3600)
            except Exception:
                pass
        return midi

    monkeypatch.setattr(corpus, "list_pieces", lambda style: pieces)
    monkeypatch.setattr(corpus, "_midi_bytes", never_ends)  # the pool's workers are forked: they see it too
    out = tmp_path / "out"
    counts = build_corpus(styles=["fiddle"], out=out, jobs=jobs, piece_timeout=0.5)
    assert counts["fiddle"] == {"written": 1, "reexported": 0, "existing": 0, "failed": 1}
    assert [p.name for p in (out / "fiddle").iterdir()] == ["Tune.mid"]
    assert "skipped test/Endless.abc: export took over 0.5 s" in capsys.readouterr().err
    with (out / "skipped.csv").open(newline="", encoding="utf-8") as fh:
        (row,) = csv.DictReader(fh)
    assert (row["source"], row["reason"], row["exporter"], row["timeout"]) == (
        "test/Endless.abc", "export took over 0.5 s", str(EXPORTER_VERSION), "0.5")

    # not retried under the same limit; retried under a longer one, or when the exporter changes
    monkeypatch.setattr(corpus, "_midi_bytes", lambda piece: exported.append(piece.name) or midi)
    exported.clear()
    assert build_corpus(styles=["fiddle"], out=out, jobs=1, piece_timeout=0.5)["fiddle"]["failed"] == 1
    assert exported == []
    skipped = (out / "skipped.csv").read_text(encoding="utf-8")
    (out / "skipped.csv").write_text(skipped.replace(f",{EXPORTER_VERSION},0.5", ",0,0.5"), encoding="utf-8")
    assert build_corpus(styles=["fiddle"], out=out, jobs=1, piece_timeout=0.5)["fiddle"]["written"] == 1
    (out / "fiddle/Endless.mid").unlink()
    (out / "skipped.csv").write_text(skipped, encoding="utf-8")
    assert build_corpus(styles=["fiddle"], out=out, jobs=1, piece_timeout=1)["fiddle"]["written"] == 1
    assert exported == ["Endless.mid", "Endless.mid"] and not (out / "skipped.csv").exists()
    with pytest.raises(MidigenError, match="--piece-timeout must be more than 0 seconds, not 0"):
        build_corpus(styles=["fiddle"], out=out, piece_timeout=0)


def test_styles_outside_the_checkout_counts_the_checkouts_corpus(tmp_path, capsys, monkeypatch):
    from midigen import tracking

    checkout, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    (checkout / "data" / "corpus").mkdir(parents=True)
    elsewhere.mkdir()
    (checkout / "data" / "corpus" / "manifest.csv").write_text(
        "file,style,source,notes,seconds,licence\nchorale/a.mid,chorale,bach/a.mxl,1200,30.00,pd\n", encoding="utf-8")
    monkeypatch.setattr(tracking, "repo_root", lambda: checkout)
    monkeypatch.chdir(elsewhere)
    assert main(["data", "styles"]) == 0
    out = capsys.readouterr().out
    assert {line.split()[0]: line.split()[2:4] for line in out.splitlines()}["chorale"] == ["1", "1,200"]
    assert f"built: {checkout / 'data' / 'corpus' / 'manifest.csv'}" in out

    (checkout / "data" / "corpus" / "manifest.csv").unlink()  # nothing built: it says where it looked
    assert main(["data", "styles"]) == 0
    assert f"no corpus built in {checkout / 'data' / 'corpus'}:" in capsys.readouterr().out


def test_styles_run_from_another_folder_names_the_folder_it_read(tmp_path):
    from conftest import REPO, run_midigen

    proc = run_midigen("data", "styles", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    corpus = REPO / "data" / "corpus"
    assert f"built: {corpus / 'manifest.csv'}" in proc.stdout or f"no corpus built in {corpus}:" in proc.stdout
