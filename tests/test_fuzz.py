"""Fuzzing the codec's two edges.

Reading: any bytes named .mid either tokenize or raise MidiReadError - never another
exception, which would be a crash in `midigen tokenize`, a primer or a corpus build.
Writing: any id sequence a sampler could emit decodes to a MIDI file that mido reads back,
with every note closed.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import vlq as _vlq, CORPUS

from midigen.errors import MidiReadError
from midigen.data.events import PAD_ID, EventParams, count_tokens, encode_notes
from midigen.data.midi_io import TICKS_PER_BEAT, ids_to_ticks, read_notes, write_midi

PARAMS = {"seed": EventParams.seed(), "beat": EventParams.beat()}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKEN_BUDGET = 200_000  # larger files are counted, not built, as the corpus builder does
A_REAL_FILE = (CORPUS / "fiddle" / "AcaciaReel.mid").read_bytes()[:1500]


def _smf_header(kind: int, tracks: int, division: int) -> bytes:
    return b"MThd" + struct.pack(">IHHH", 6, kind, tracks, division)


@st.composite
def midi_like_bytes(draw) -> bytes:
    """Bytes from four families: noise, a real file cut and bit-flipped, a valid header over a
    random track, and random events behind a valid header and track chunk."""
    family = draw(st.sampled_from(["noise", "mutated", "random_track", "random_events"]))
    if family == "noise":
        return draw(st.binary(max_size=300))
    if family == "mutated":
        data = bytearray(A_REAL_FILE[: draw(st.integers(0, len(A_REAL_FILE)))])
        for _ in range(draw(st.integers(0, 8))):
            if data:
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    head = _smf_header(draw(st.integers(0, 2)), 1, draw(st.integers(0, 0xFFFF)))
    if family == "random_track":
        body = draw(st.binary(max_size=200))
        return head + b"MTrk" + struct.pack(">I", draw(st.sampled_from([len(body), len(body) + 7, 0]))) + body
    events = draw(st.lists(st.tuples(st.integers(0, 0x0FFFFFFF), st.sampled_from([0x80, 0x90, 0xB0, 0xFF]),
                                     st.integers(0, 127), st.integers(0, 127)), max_size=30))
    body = b""
    for delta, status, a, b in events:
        body += _vlq(delta) + (bytes([0xFF, 0x51, 0x03, a, b, a]) if status == 0xFF else bytes([status, a, b]))
    body += b"\x00\xff\x2f\x00"
    return head + b"MTrk" + struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("mode", PARAMS)
@FUZZ
@given(data=midi_like_bytes())
def test_any_bytes_tokenize_or_raise_midi_read_error(mode, data):
    params = PARAMS[mode]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.mid"
        path.write_bytes(data)
        try:
            on, off, pitch = read_notes(path, params)
        except MidiReadError:
            return
    assert on.size == off.size == pitch.size > 0
    assert ((pitch >= 0) & (pitch <= 127)).all() and (off >= on).all() and (on >= 0).all()
    n = count_tokens(on, off, pitch, params)
    if n <= TOKEN_BUDGET:
        ids = encode_notes(on, off, pitch, params)
        assert ids.size == n  # the size check the corpus builder trusts is exact
        assert ids.min() > PAD_ID and ids.max() < params.vocab_size


@pytest.mark.parametrize("mode", PARAMS)
@FUZZ
@given(ids=st.lists(st.integers(0, 400), max_size=400), bpm=st.floats(20, 400),
       bars=st.one_of(st.none(), st.integers(1, 8)))
def test_any_ids_decode_to_a_valid_midi_file_with_every_note_closed(mode, ids, bpm, bars):
    params = PARAMS[mode]  # ids past the vocabulary (up to 400) are what a broken sampler would emit
    end_tick = None if bars is None else bars * 4 * TICKS_PER_BEAT
    on, off, pitch = ids_to_ticks(np.array(ids, dtype=np.int64), params, bpm, end_tick)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_midi(Path(tmp) / "out.mid", on, off, pitch, bpm=bpm, end_tick=end_tick)
        midi = mido.MidiFile(str(path))  # raises on a malformed file
    assert midi.type == 0 and len(midi.tracks) == 1
    sounding: dict[int, int] = {}
    now, notes = 0, 0
    for msg in midi.tracks[0]:
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            assert msg.note not in sounding, f"pitch {msg.note} started twice at tick {now}"
            sounding[msg.note] = now
            notes += 1
        elif msg.type in ("note_off", "note_on"):
            assert sounding.pop(msg.note) < now  # closes a note that sounded, after it began
    assert not sounding, f"hanging notes: {sorted(sounding)}"
    assert notes == on.size
    if end_tick is not None:
        assert now == end_tick  # end-of-track exactly at the bar line, so the clip loops
