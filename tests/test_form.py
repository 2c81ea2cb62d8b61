"""`midigen generate --form`: a clip of sections (AA', AB, AABA) on the shipped model.

A repeated section is its source note for note, moved in time; A' keeps every note of A below
its top line and changes the top line; a new letter is new music; a bad form is one line."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO, make_midi

PRETRAINED = REPO / "models" / "pretrained"
BAR = 4 * 960


@pytest.fixture(scope="module")
def bundle():
    from midigen.producer.bundle import load_bundle

    return load_bundle(PRETRAINED)


def clips(bundle, form: str, bars: int, num: int = 3, seed: int = 11, **fields) -> list[dict]:
    from midigen.producer.generate import generate_batch
    from midigen.producer.request import GenerateRequest

    req = GenerateRequest.from_fields({"num": num, "bars": bars, "form": form, "seed": seed, "style": "chorale",
                                       **fields})
    return generate_batch(bundle, req)


def section(result: dict, k: int, bars: int) -> set[tuple[int, int, int]]:
    """Section k's notes (each `bars` long) as (on, off, pitch), timed from the section's start."""
    start, stop = k * bars * BAR, (k + 1) * bars * BAR
    return {(on - start, off - start, p) for on, off, p in zip(*(a.tolist() for a in result["notes"]))
            if start <= on < stop}


def split_top(notes: set) -> tuple[set, set]:
    """(top line, the rest): the top line is the highest note at each onset (the beat model's onsets are exact)."""
    highest: dict[int, int] = {}
    for on, _, p in notes:
        highest[on] = max(highest.get(on, -1), p)
    top = {n for n in notes if n[2] == highest[n[0]]}
    return top, notes - top


def sounding_at_most(notes, cap: int) -> bool:
    on, off, _ = notes
    return all(int(((on <= t) & (off > t)).sum()) <= cap for t in on.tolist())


# --- the grammar -------------------------------------------------------------------------------


@pytest.mark.parametrize("text,sections", [("AA'", "AA'"), ("aaba", "AABA"), ("A B A C", "ABAC"),
                                           ("AA\u2019", "AA'"), ("ABA'B'", "ABA'B'"), ("A", "A")])
def test_forms_are_read_and_written_back(text, sections):
    from midigen.producer.request import GenerateRequest

    assert GenerateRequest.from_fields({"form": text, "bars": 8, "seed": 0}).form == sections


BAD_FORMS = [
    (["--form", "A'A"], "first section cannot be a variation"),
    (["--form", "'A"], "first section cannot be a variation"),
    (["--form", "AB'"], "B' varies B, which does not come before it"),
    (["--form", "AA''"], "one ' per letter"),
    (["--form", "A-B"], "'-' is not a section"),
    (["--form", "AÉ"], "is not a section"),
    (["--form", " "], "name the sections"),
    (["--form", "A" * 17, "--bars", "17"], "at most 16"),
    (["--form", "AABA", "--bars", "6"], "--bars 6: --form AABA has 4 sections"),
    (["--form", "AABA", "--bars", "2"], "e.g. --bars 4"),
    (["--form", "AB", "--events", "100"], "give its length with --bars, not --events"),
]


@pytest.mark.parametrize("args,needle", BAD_FORMS, ids=[" ".join(a) for a, _ in BAD_FORMS])
def test_bad_forms_are_one_line_and_write_nothing(capsys, tmp_path, args, needle):
    from midigen.cli import main

    status = main(["generate", "--model", str(PRETRAINED), "--num", "1", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("midigen: error: ") and "Traceback" not in err, err
    assert needle in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_primer_as_long_as_a_section_is_refused_in_one_line(capsys, tmp_path):
    from midigen.cli import main

    primer = make_midi(tmp_path / "long.mid", [(60, 0, 4), (62, 4, 8)])  # 2 bars
    status = main(["generate", "--model", str(PRETRAINED), "--num", "1", "--bars", "4", "--form", "AB",
                   "--primer", str(primer), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "as long as a section of --form AB" in err, err


# --- the sections ------------------------------------------------------------------------------


def test_aa_repeats_the_first_half_note_for_note(bundle):
    for r in clips(bundle, "AA", bars=4):
        first, second = section(r, 0, 2), section(r, 1, 2)
        assert first and second == first
        assert len(r["notes"][0]) == 2 * len(first)  # nothing else in the clip
        assert r["end_tick"] == 4 * BAR


def test_aa_prime_keeps_a_below_its_top_line_and_changes_the_top_line(bundle):
    changed = 0
    for r in clips(bundle, "AA'", bars=4, voices="3"):
        a, a_prime = section(r, 0, 2), section(r, 1, 2)
        top, below = split_top(a)
        assert below, "a chorale's first half has notes below its top line"
        assert below <= a_prime  # every one of them, unchanged
        new_top = a_prime - below
        assert new_top != top  # the top line is not A's
        assert new_top - top  # at least one note of A' is not in A
        changed += len(new_top - top)
        assert sounding_at_most(r["notes"], 3)  # --voices holds across the variation
        on, off, pitch = r["notes"]
        for p in set(pitch.tolist()):  # no pitch sounds twice at once (a DAW would cut one)
            o, f = on[pitch == p], off[pitch == p]
            assert (o[1:] >= f[:-1]).all()
    assert changed > 0


def test_aaba_repeats_a_three_times_and_b_is_new(bundle):
    for r in clips(bundle, "AABA", bars=4):
        a = section(r, 0, 1)
        assert a and section(r, 1, 1) == a and section(r, 3, 1) == a
        assert section(r, 2, 1) != a


def test_ab_continues_with_new_music(bundle):
    for r in clips(bundle, "AB", bars=4):
        a, b = section(r, 0, 2), section(r, 1, 2)
        assert a and b  # notes in both halves
        assert b != a
        assert len(b & a) < len(b)  # B is not a copy of A


def test_the_primer_opens_the_first_section(bundle, tmp_path):
    primer = make_midi(tmp_path / "clip.mid", [(60, 0, 1), (64, 1, 1.5), (67, 1.5, 2)], bpm=120)
    for r in clips(bundle, "AA'", bars=4, primer=str(primer), bpm="120"):
        head = sorted((p, on, off) for on, off, p in section(r, 0, 2) if on < 2 * 960)
        assert head == [(60, 0, 960), (64, 960, 1440), (67, 1440, 1920)]


def test_same_seed_same_bytes(capsys, tmp_path):
    from midigen.cli import main

    def run(out: str, seed: str) -> list[bytes]:
        status = main(["generate", "--model", str(PRETRAINED), "--num", "2", "--bars", "4", "--form", "ABA'C",
                       "--style", "chorale=0.5,fiddle=0.5", "--key", "D major", "--note-range", "40-84",
                       "--seed", seed, "--out", str(tmp_path / out)])
        assert status == 0, capsys.readouterr().err
        return [p.read_bytes() for p in sorted((tmp_path / out).glob("*.mid"))]

    first = run("a", "5")
    assert len(first) == 2
    assert run("b", "5") == first
    assert run("c", "6") != first
