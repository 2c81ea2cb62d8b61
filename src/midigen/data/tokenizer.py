"""`OoreTokenizer`: the seed's NOTE_ON / NOTE_OFF / TIME_SHIFT vocabulary as a miditok tokenizer.

A miditok `MusicTokenizer` subclass, so it saves and loads its parameters as miditok's
JSON (`tokenizer.save(dir)`, `OoreTokenizer(params=file)`) and plugs into miditok's
tooling. Encoding does not go through miditok's per-event Python pipeline: it reads
symusic's note arrays and tokenizes them vectorised in `midigen.data.events` (the seed's
timing is in seconds through the tempo map, which miditok's beat-based preprocessing
would discard).
Not for: the producer path, which decodes with `midigen.data.events` without importing miditok.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from miditok import MusicTokenizer, TokenizerConfig, TokSequence
from symusic import Note, Score, Track

from midigen.data.events import (
    NUM_PITCHES,
    EventParams,
    decode_ids,
    encode_notes,
    event_names,
)
from midigen.data.midi_io import read_notes

MIDITOK_NAMES = (
    ["PAD_None"]
    + [f"NoteOn_{p}" for p in range(NUM_PITCHES)]
    + [f"NoteOff_{p}" for p in range(NUM_PITCHES)]
)


class OoreTokenizer(MusicTokenizer):
    """Oore et al.'s event vocabulary without velocity or pedal, in the seed's index order.

    Build with `OoreTokenizer.from_params(EventParams.seed())` (or `.beat()`), or load a
    saved one with `OoreTokenizer(params="tokenizer.json")`.
    """

    @classmethod
    def from_params(cls, params: EventParams) -> OoreTokenizer:
        config = TokenizerConfig(
            special_tokens=["PAD"],
            use_velocities=False,
            use_programs=False,
            use_sustain_pedals=False,
            use_tempos=False,
            use_time_signatures=False,
            **params.to_dict(),
        )
        return cls(tokenizer_config=config)

    @property
    def params(self) -> EventParams:
        return EventParams.from_dict(self.config.additional_params)

    # --- miditok's hooks -------------------------------------------------------------
    def _tweak_config_before_creating_voc(self) -> None:
        self._note_on_off = True
        self.config.special_tokens = ["PAD_None"]

    def _create_base_vocabulary(self) -> list[str]:
        shifts = [f"TimeShift_{k + 1}" for k in range(self.params.max_shift)]
        return MIDITOK_NAMES[1:] + shifts

    def _create_token_types_graph(self) -> dict[str, set[str]]:
        every = {"NoteOn", "NoteOff", "TimeShift"}
        return {kind: set(every) for kind in every}

    def _add_time_events(self, events, time_division):  # noqa: ANN001
        # miditok calls this only from its own event pipeline, which encode() replaces.
        raise NotImplementedError("OoreTokenizer encodes from note arrays; call encode()")

    def _tokens_to_score(self, tokens, programs=None) -> Score:  # noqa: ANN001
        seq = tokens[0] if isinstance(tokens, list) else tokens
        ids = np.asarray(seq.ids, dtype=np.int64)
        return self.ids_to_score(ids)

    # --- encoding --------------------------------------------------------------------
    def encode(self, score, encode_ids: bool = True, no_preprocess_score: bool = False,
               attribute_controls_indexes=None) -> TokSequence:  # noqa: ANN001
        """A MIDI file path (or symusic Score) -> one TokSequence of all tracks merged."""
        ids = self.encode_file(score) if not isinstance(score, Score) else self.encode_score(score)
        tokens = [self[int(i)] for i in ids]
        return TokSequence(tokens=tokens, ids=ids.tolist())

    def encode_file(self, path: str | Path) -> np.ndarray:
        """A MIDI file -> token ids (uint16). Raises MidiReadError for unusable files."""
        on, off, pitch = read_notes(path, self.params)
        return encode_notes(on, off, pitch, self.params)

    def encode_score(self, score: Score) -> np.ndarray:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "score.mid"
            score.dump_midi(str(path))
            return self.encode_file(path)

    # --- decoding --------------------------------------------------------------------
    def decode(self, tokens, programs=None, output_path=None) -> Score:  # noqa: ANN001
        """Ids (list, array, tensor or TokSequence) -> Score; written if `output_path`."""
        ids = tokens.ids if isinstance(tokens, TokSequence) else tokens
        score = self.ids_to_score(np.asarray(ids, dtype=np.int64).ravel())
        if output_path:
            score.dump_midi(str(output_path))
        return score

    def ids_to_score(self, ids, bpm: float = 120.0) -> Score:
        """Token ids -> a one-track symusic Score at 960 ticks per beat, velocity 64."""
        from midigen.data.midi_io import TICKS_PER_BEAT, steps_to_ticks

        on, off, pitch = decode_ids(ids, self.params)
        score = Score(TICKS_PER_BEAT)
        track = Track("midigen", 0, False)
        on_t = steps_to_ticks(on, self.params, bpm)
        off_t = steps_to_ticks(off, self.params, bpm)
        for a, b, p in zip(on_t.tolist(), off_t.tolist(), pitch.tolist()):
            if b > a:
                track.notes.append(Note(a, b - a, p, 64))
        score.tracks.append(track)
        return score

    def event_names(self) -> list[str]:
        """Seed-style names for every id (`note_on_60`, `time_shift_29`)."""
        return event_names(self.params)
