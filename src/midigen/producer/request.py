"""A producer's request: what to generate, with every default and every check in one place.

`GenerateRequest` owns the defaults (its field defaults, nowhere else) and the checks (run
once, when a request is built): the CLI's options (`add_request_arguments`), the MLflow pyfunc's
params and the training callback (`GenerateRequest.from_fields`), `interpolate`, the bench and
the studies all build one. An impossible value is one `RequestError` line that names the field
and what to use; nothing is clamped silently. The limits (LIMITS) bound what one request may
ask of the machine and are stated in `--help`.

Not for: sampling (`sampling.py`), the music theory of keys (`theory.py`), writing files
(`output.py`).
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
import secrets
from dataclasses import dataclass, field, fields, replace

from midigen.errors import MidigenError
from midigen.producer.form import MAX_SECTIONS, form_text, parse_form
from midigen.producer.theory import SCALES, parse_key

# What one request may ask for: about 0.5 GB of sampler state at the most, minutes not hours.
MAX_NUM = 128  # files per request
MAX_BARS = 256  # 8.5 minutes at 120 bpm: a DAW idea is 4 to 64 bars
MAX_EVENTS = 20_000  # per file, with --events
EVENTS_PER_BAR = 256  # the event budget of a bar: 10x a dense four-voice chorale bar
MAX_SEED = 2**32 - 1
# The nucleus mass of a style the model carries no setting for (a fine-tune measures one for
# its new style and stores it with the model: `Bundle.top_p`).
DEFAULT_TOP_P = 0.95
# How far a style the model carries no setting for leans into itself (`--style-strength`; 0: as
# trained; `midigen models calibrate` measures one per style: `Bundle.style_strength`).
DEFAULT_STYLE_STRENGTH = 0.0
MAX_STYLE_STRENGTH = 8.0  # as `sampling.MAX_STYLE_STRENGTH`; useful leans are 0.5-2


def is_nucleus_mass(value: object) -> bool:
    """A number in (0, 1]: what --top-p, a model's per-style setting and a calibration candidate take."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and 0 < value <= 1


def is_style_strength(value: object) -> bool:
    """A number from 0 to MAX_STYLE_STRENGTH: what --style-strength and a model's per-style setting take."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and 0 <= value <= MAX_STYLE_STRENGTH


MAX_NAME_BYTES = 120  # the name prefix, in UTF-8 bytes: room left for _s<seed>_NN.mid under 255
KERNELS = ("auto", "native", "python")
# --grid: where notes start and end, as a DAW's quantize values: subdivisions of the beat
# (`sampling.SamplingOptions.grid`); "auto" is DEFAULT_GRID for a model that counts time in beats,
# "off" for one that counts milliseconds (the seed's).
GRIDS = {"1/16+1/8t": (4, 3), "1/16": (4,), "1/8t": (3,), "1/16t": (6,), "1/8": (2,), "1/4": (1,), "off": None}
DEFAULT_GRID = "1/16+1/8t"
STARTS = ("model", "random")
MAX_LEAD_IN = 4  # bars of --lead-in
RANDOM_START_RANGE = (36, 99)  # the seed's uniform first pitch, where --note-range does not say
# --meter: the clip's time signature. A bar of whole quarter-note beats (6/8: 3 beats, as the
# training positions count it), at most MAX_BAR_BEATS (a position-aware model knows bars of up to
# its `position_bar_beats`, 8 by default: checked against the model when it samples).
DEFAULT_METER = "4/4"
MAX_BAR_BEATS = 8
METER_DENOMINATORS = (1, 2, 4, 8, 16)


class RequestError(MidigenError):
    """One field of a request that cannot be: `field`, `value`, `reason` (what to use instead)."""

    def __init__(self, name: str, value: object, reason: str, flag: bool = True):
        self.field, self.value, self.reason, self.flag = name, value, reason, flag
        label = f"--{name.replace('_', '-')}" if flag else name
        super().__init__(f"{label} {value!r}: {reason}" if value is not None else f"{label}: {reason}")

    def relabel(self, flag: bool) -> RequestError:
        return RequestError(self.field, self.value, self.reason, flag)


def _opt(default, help: str, *, cli: bool = True, metavar: str | None = None):  # noqa: A002, ANN001, ANN202
    return field(default=default, metadata={"help": help, "cli": cli, "metavar": metavar})


@dataclass
class GenerateRequest:
    """A producer's request. Lengths: `bars` (exact, in `meter` at `bpm`) or `events` (a cap).

    `seed` None draws a fresh seed when the request is built (`fresh_seed` says so), so each
    run writes new ideas and prints the seed that writes them again."""

    num: int = _opt(8, f"files to write (1-{MAX_NUM})")
    bars: int | None = _opt(8, f"length in bars of --meter, exact (1-{MAX_BARS}; default 8)")
    events: int | None = _opt(None, f"length in events instead of bars, a cap (1-{MAX_EVENTS})")
    form: str | None = _opt(None, "shape the clip from sections of equal length, --bars split among them "
                                  "(a multiple of their number): a new letter continues the music, a letter "
                                  "again repeats its section note for note, A' repeats A with a new top line; "
                                  f"e.g. AA', AB, AABA, ABAC (at most {MAX_SECTIONS} sections)")
    bpm: float = _opt(120.0, "tempo written to the file (20-400)")
    meter: str = _opt(DEFAULT_METER, "time signature written to the file and played in: 4/4, 3/4, 6/8, 2/4, ... "
                                     "(a bar of whole quarter-note beats, at most 8; a 6/8 bar is 3 beats)")
    temperature: float = _opt(1.0, "sharpness of the draw: < 1 safer, > 1 wilder (1 = as trained)")
    top_k: int = _opt(0, "sample from the k likeliest events (0 = off)")
    top_p: float | None = _opt(None, f"nucleus sampling mass, in (0, 1] (1 = off; default: the model's setting for "
                                     f"the style, {DEFAULT_TOP_P} unless a fine-tune chose another)")
    style_strength: float | None = _opt(None, "how far each step leans into the style, away from what all the "
                                              "model's styles share (0 = as trained; 1 = twice the difference; "
                                              "default: the model's setting for the style, 0 unless calibrated; "
                                              "an interpolation is drawn as trained)")
    style: dict[str, float] | None = _opt(None, "style weights, e.g. chorale=0.6,fiddle=0.4 (default: an even blend)")
    key: str | None = _opt(None, "restrict notes to a key, e.g. 'F# minor'")
    scale: str | None = _opt(None, f"scale of --key: {', '.join(SCALES)}")
    primer: str | None = _opt(None, "a MIDI clip to continue; kept verbatim at the start")
    seed: int | None = _opt(None, "same seed + model + options = identical files (default: a fresh seed, printed)")
    note_range: tuple[int, int] | None = _opt(None, "bound every note to LOW-HIGH MIDI pitches, e.g. 36-84", metavar="LOW-HIGH")
    voices: int | None = _opt(None, "at most this many notes sounding at once (1 = a single melody line)")
    start: str = _opt("model", "how a clip opens: model (the style's own opening) or random (the seed's "
                               "uniform first pitch within --note-range, default 36-99)")
    lead_in: int = _opt(1, f"bars the model plays before a clip it opens itself (--start model, no --primer), "
                           f"not written: the clip opens where the music has settled, as an excerpt cut from a "
                           f"longer piece (0-{MAX_LEAD_IN}; default 1; 0: the first note straight after a rest)",
                        metavar="BARS")
    grid: str = _opt("auto", f"where notes start and end: {', '.join(GRIDS)} (off: wherever the model puts them); "
                             f"auto: {DEFAULT_GRID}, the 16ths and 8th-note triplets, for a model that counts time "
                             "in beats, off for one that counts milliseconds")
    repetition_penalty: float = _opt(0.3, "anti-stuck: logit penalty per recent repeat of a pitch (0 = off)")
    max_note_beats: float | None = _opt(4.0, "end any note held this long, in beats ('off' = no cap)")
    velocity: int = _opt(64, "note velocity (1-127)")
    name: str = _opt("midigen", "file name prefix and track name")
    # Resample files whose copy ratio exceeds this: a number, "auto" (the bound the model's
    # originality index was calibrated to on held-out real music) or None (no check).
    max_copy: float | str | None = _opt("auto", "resample (up to 5x) files whose copy ratio against the training "
                                                "corpus exceeds this share; 'auto': the bound held-out real music "
                                                "sets, stored with the model; 'off'")
    kernels: str = _opt("auto", "sampling kernels: native (`midigen kernels build`), python, or auto (native where built)")
    # A MIDI file whose end warms the model's state without being written (follow on from it),
    # and a second conditioning the clip is drawn towards: {"context": path or None,
    # "style": {name: weight} or None, "weight": 0..1, "mix": ...} (see `sampling.Towards`).
    context: str | None = _opt(None, "", cli=False)
    towards: dict | None = _opt(None, "", cli=False)
    fresh_seed: bool = field(default=False, repr=False, compare=False, metadata={"cli": False, "internal": True})

    @property
    def time_signature(self) -> tuple[int, int]:
        """(numerator, denominator) of `meter`, checked when the request was built."""
        numerator, denominator = self.meter.split("/")
        return int(numerator), int(denominator)

    @property
    def bar_beats(self) -> int:
        """Quarter-note beats in a bar of `meter` (4/4: 4; 3/4 and 6/8: 3; whole, as checked)."""
        from midigen.data.midi_io import meter_beats

        return int(meter_beats(self.meter))

    def __post_init__(self) -> None:
        if self.seed is None:
            self.seed, self.fresh_seed = secrets.randbelow(MAX_SEED + 1), True
        _check(self)

    def but(self, **changes) -> GenerateRequest:
        """A copy with `changes`, checked again."""
        return replace(self, **changes)

    @property
    def event_budget(self) -> int:
        """Events each file may have after its start: `events`, or EVENTS_PER_BAR a bar."""
        return self.events if self.events is not None else self.bars * EVENTS_PER_BAR

    @property
    def scale_classes(self) -> list[int] | None:
        return parse_key(self.key, self.scale)

    @classmethod
    def from_fields(cls, values: dict, flags: bool = False) -> GenerateRequest:
        """A request from loosely typed values (JSON, a DataFrame row, CLI strings): every field
        parsed and checked; unknown fields are refused with the nearest known name.

        `flags`: name fields as command-line options (--top-p) in messages, else as keys (top_p)."""
        known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
        unknown = sorted(set(values) - set(known))
        if unknown:
            near = difflib.get_close_matches(unknown[0], list(known), n=1)
            hint = f" (did you mean {near[0]}?)" if near else f"; known: {', '.join(known)}"
            raise RequestError(unknown[0], None, f"not a request field{hint}", flags)
        parsed = {}
        try:
            for name, value in values.items():
                if value is not None:
                    parsed[name] = PARSERS.get(name, lambda n, v: v)(name, value)
            if parsed.get("events") is not None and "bars" not in parsed:
                parsed["bars"] = None
            return cls(**parsed)
        except RequestError as exc:
            raise exc.relabel(flags) from None


# --- parsing loosely typed values ----------------------------------------------------------


def _number_of(kind: type, words: str):  # noqa: ANN202 - a parser of `kind` (int or float) for PARSERS
    accepted = numbers.Integral if kind is int else numbers.Real

    def parse(name: str, value: object) -> int | float:
        if isinstance(value, accepted) and not isinstance(value, bool):
            return kind(value)
        if isinstance(value, str):
            try:
                return kind(value.strip())
            except ValueError:
                pass
        raise RequestError(name, value, words)

    return parse


_integer, _number = _number_of(int, "use a whole number"), _number_of(float, "use a number")


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise RequestError(name, value, "use text")
    return value


def parse_style(name: str, value: object) -> dict[str, float]:
    """'chorale=0.6,fiddle=0.4', 'chorale' or {"chorale": 0.6} -> {name: weight}, each name once."""
    if isinstance(value, dict):
        pairs = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        if not value.strip():
            raise RequestError(name, value, "name a style, e.g. chorale, or weights, e.g. chorale=0.6,fiddle=0.4")
        pairs = [(part.partition("=")[0], part.partition("=")[2] or 1.0) for part in value.split(",")]
    else:
        raise RequestError(name, value, "use style weights, e.g. chorale=0.6,fiddle=0.4")
    weights: dict[str, float] = {}
    for style, weight in pairs:
        style = style.strip()
        if not style:
            raise RequestError(name, value, "a style name is missing: use e.g. chorale=0.6,fiddle=0.4")
        if style in weights:
            raise RequestError(name, value, f"{style} is named twice")
        try:
            weights[style] = _number(name, weight)
        except RequestError:
            raise RequestError(name, value, "weights are numbers, e.g. chorale=0.6,fiddle=0.4") from None
    return weights


def parse_range(name: str, value: object) -> tuple[int, int]:
    """'36-84' or [36, 84] -> (36, 84)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
        if not m:
            raise RequestError(name, value, "use LOW-HIGH MIDI pitches within 0-127, e.g. 36-84")
        return int(m.group(1)), int(m.group(2))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return _integer(name, value[0]), _integer(name, value[1])
    raise RequestError(name, value, "use LOW-HIGH MIDI pitches within 0-127, e.g. 36-84")


def parse_max_copy(name: str, value: object) -> float | str | None:
    """'auto', 'off' or a share between 0 and 1."""
    if isinstance(value, str) and value.strip().lower() in ("auto", "off", "none", "no"):
        return "auto" if value.strip().lower() == "auto" else None
    try:
        return _number(name, value)
    except RequestError:
        raise RequestError(name, value, "use a share between 0 and 1 (e.g. 0.3), 'auto' or 'off'") from None


def parse_note_beats(name: str, value: object) -> float | None:
    if isinstance(value, str) and value.strip().lower() in ("off", "none", "no"):
        return None
    beats = _number(name, value)
    return None if beats == 0 else beats  # 0: off, as documented


def parse_form_field(name: str, value: object) -> str:
    """"aa'" -> "AA'": the form's sections written back (`form.parse_form` owns the grammar)."""
    try:
        return form_text(parse_form(_text(name, value)))
    except ValueError as exc:
        raise RequestError(name, value, str(exc)) from None


def _towards(name: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise RequestError(name, value, "use {context, style, weight, mix}")
    return dict(value)


PARSERS = {
    **{n: _integer for n in ("num", "bars", "events", "top_k", "seed", "voices", "velocity", "lead_in")},
    **{n: _number for n in ("bpm", "temperature", "top_p", "style_strength", "repetition_penalty")},
    **{n: _text for n in ("key", "scale", "primer", "name", "start", "kernels", "context")},
    "grid": lambda n, v: _text(n, v).strip().lower(), "meter": lambda n, v: _text(n, v).strip().replace(" ", ""),
    "style": parse_style, "note_range": parse_range, "max_copy": parse_max_copy,
    "max_note_beats": parse_note_beats, "towards": _towards, "form": parse_form_field,
}


# --- the checks: once, when a request is built -------------------------------------------------


def _within(req: GenerateRequest, name: str, low: float, high: float, reason: str, optional: bool = False) -> None:
    value = getattr(req, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not low <= value <= high:
        raise RequestError(name, value, reason)


def _whole(req: GenerateRequest, name: str, low: int, high: int, reason: str, optional: bool = False) -> None:
    value = getattr(req, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise RequestError(name, value, reason)


def _check(req: GenerateRequest) -> None:  # noqa: C901 - a flat list of checks reads best
    _whole(req, "num", 1, MAX_NUM, f"ask for 1 to {MAX_NUM} files")
    _whole(req, "bars", 1, MAX_BARS, f"use 1 to {MAX_BARS} bars", optional=True)
    _whole(req, "events", 1, MAX_EVENTS, f"use 1 to {MAX_EVENTS} events", optional=True)
    if (req.bars is None) == (req.events is None):
        raise RequestError("bars", req.bars, "give a length in bars or in events, not both")
    _within(req, "bpm", 20, 400, "use a tempo between 20 and 400")
    _within(req, "temperature", 1e-3, 100, "use a number from 0.001 to 100, e.g. 0.8 (1.0 = as trained)")
    _whole(req, "top_k", 0, 10_000, "use 0 (off) or a positive number")
    _within(req, "top_p", 0, 1, "use a number in (0, 1]", optional=True)
    if req.top_p is not None and req.top_p <= 0:
        raise RequestError("top_p", req.top_p, "use a number in (0, 1]")
    _within(req, "style_strength", 0, MAX_STYLE_STRENGTH,
            f"use a number from 0 (as trained) to {MAX_STYLE_STRENGTH:g}, e.g. 1", optional=True)
    _whole(req, "seed", 0, MAX_SEED, f"use a whole number from 0 to {MAX_SEED}")
    _within(req, "repetition_penalty", 0, 100, "use a number >= 0 (0 disables it)")
    _within(req, "max_note_beats", 1 / 64, 1024, "use a length in beats > 0, or 'off'", optional=True)
    _whole(req, "velocity", 1, 127, "use 1-127")
    _whole(req, "voices", 1, 16, "use 1 (a single line) to 16", optional=True)
    if req.start not in STARTS:
        raise RequestError("start", req.start, f"use one of {', '.join(STARTS)}")
    _whole(req, "lead_in", 0, MAX_LEAD_IN, f"use 0 (none) to {MAX_LEAD_IN} bars")
    _check_meter(req)
    if req.grid not in GRIDS and req.grid != "auto":
        raise RequestError("grid", req.grid, f"use auto or one of {', '.join(GRIDS)}")
    if req.kernels not in KERNELS:
        raise RequestError("kernels", req.kernels, f"use one of {', '.join(KERNELS)}")
    if req.note_range is not None:
        low, high = req.note_range
        if not 0 <= low <= high <= 127:
            raise RequestError("note_range", f"{low}-{high}", "use LOW-HIGH MIDI pitches within 0-127, e.g. 36-84")
        req.note_range = (int(low), int(high))
    if req.style is not None:
        bad = [s for s, w in req.style.items() if not (isinstance(w, numbers.Real) and math.isfinite(w) and w >= 0)]
        if bad or sum(req.style.values()) <= 0:
            raise RequestError("style", _style_text(req.style), "weights must be finite, >= 0 and not all zero")
    if req.max_copy != "auto":
        _within(req, "max_copy", 0, 1, "use a share between 0 and 1 (e.g. 0.3), 'auto' or 'off'", optional=True)
    _check_name(req.name)
    parse_key(req.key, req.scale)  # a bad key or scale fails here, before any model loads
    if req.form is not None:
        _check_form(req)
    if req.primer and req.context:
        raise RequestError("primer", req.primer, "--primer and a context exclude each other: a primer is kept "
                                                 "in the clip, a context is not")
    if req.towards is not None:
        weight = req.towards.get("weight", 0.5)
        if not (isinstance(weight, numbers.Real) and 0.0 <= weight <= 1.0):
            raise RequestError("towards", weight, "the blend weight is a number between 0 and 1")


def _check_meter(req: GenerateRequest) -> None:
    """N/D with D a power of two up to 16 and a bar of 1 to MAX_BAR_BEATS whole quarter-note beats."""
    found = re.fullmatch(r"(\d{1,2})/(\d{1,2})", req.meter) if isinstance(req.meter, str) else None
    if not found or int(found[1]) < 1 or int(found[2]) not in METER_DENOMINATORS:
        raise RequestError("meter", req.meter, "use a time signature such as 4/4, 3/4, 6/8 or 2/4")
    from midigen.data.midi_io import meter_beats

    numerator, denominator = int(found[1]), int(found[2])
    beats = meter_beats(f"{numerator}/{denominator}")
    if beats != int(beats) or not 1 <= beats <= MAX_BAR_BEATS:
        raise RequestError("meter", req.meter, f"a bar must hold 1 to {MAX_BAR_BEATS} whole quarter-note beats "
                                               "(6/8: 3, 12/8: 6; not 5/8 or 9/8), e.g. 4/4, 3/4 or 6/8")
    req.meter = f"{numerator}/{denominator}"


def _check_form(req: GenerateRequest) -> None:
    """A form's grammar, and --bars split evenly among its sections, at least a bar each."""
    req.form = parse_form_field("form", req.form)
    n = len(parse_form(req.form))
    if req.bars is None:
        raise RequestError("form", req.form, "a form is made of bars: give its length with --bars, not --events")
    if req.bars % n:
        low = max(n, req.bars // n * n)
        near = low if req.bars - low <= n // 2 or low + n > MAX_BARS else low + n
        raise RequestError("bars", req.bars, f"--form {req.form} has {n} sections of equal length, at least a bar "
                                             f"each: use a multiple of {n}, e.g. --bars {near}")


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not file_stem(name):
        raise RequestError("name", name, "use letters, digits, - or _")
    if len(file_stem(name).encode()) > MAX_NAME_BYTES:
        raise RequestError("name", name[:40] + "...", f"use at most {MAX_NAME_BYTES} bytes (file names have a limit)")


def _style_text(style: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in style.items())


def file_stem(name: str) -> str:
    """A file-name stem that cannot leave --out: letters (any script), digits, - and _."""
    return re.sub(r"[^\w-]+", "_", name).strip("_")


# --- the command line, built from the request's fields --------------------------------------------

# The fields every clip-writing command offers (generate, interpolate); generate adds these:
CLIP_FIELDS = ("bpm", "meter", "temperature", "top_k", "top_p", "key", "scale", "seed", "note_range", "voices", "grid",
               "repetition_penalty", "max_note_beats", "velocity", "name", "max_copy", "kernels")
GENERATE_FIELDS = ("num", "bars", "events", "form", "style", "style_strength", "primer", "start", "lead_in")


def add_request_arguments(parser, names: tuple[str, ...], defaults: dict | None = None) -> None:  # noqa: ANN001
    """Add `--<field>` options for `names`, with the request's defaults in their help.

    Every option reads text and is parsed and checked by `GenerateRequest.from_fields`, so a
    value means the same on the command line, in a pyfunc call and in the studio. `defaults`
    overrides a default a command shows differently (interpolate's --num 1)."""
    by_name = {f.name: f for f in fields(GenerateRequest)}
    shown = {**{f.name: f.default for f in fields(GenerateRequest)}, **(defaults or {})}
    group = parser.add_mutually_exclusive_group() if {"bars", "events"} <= set(names) else None
    for name in names:
        meta = by_name[name].metadata
        default = shown[name]
        text = meta["help"] + ("" if default is None or "default" in meta["help"] else f" (default {_show(default)})")
        target = group if group is not None and name in ("bars", "events") else parser
        target.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar=meta["metavar"],
                            help=text.replace("%", "%%"))


def _show(value: object) -> str:
    return "off" if value is None else str(value)


def request_from_args(args, names: tuple[str, ...], **values) -> GenerateRequest:  # noqa: ANN001
    """The request the options `names` (as `add_request_arguments` added them) ask for, plus `values`."""
    given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return GenerateRequest.from_fields({**given, **values}, flags=True)
