"""The one error type for problems a user can cause (bad file, bad option, missing model).

The CLI prints such an error as one line and exits with status 2; anything else is our
bug and keeps its traceback.
"""

import re


class MidigenError(Exception):
    """A user-caused problem; the message names the thing and what to do about it."""


class MidiReadError(MidigenError):
    """A file that is not usable MIDI (unreadable, truncated, empty, drums only, ...)."""


def first_line(text: object) -> str:
    """The first non-blank line of an error's text (a one-line report of a longer message)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def not_valid_midi(name: str, exc: BaseException) -> str:
    """'NAME: not a readable MIDI file (why)': a MIDI parser's exception (symusic, mido), in our words.

    symusic (and so miditok) says "MiniMidi: Invaild midi file! File header is not MThd!:
    iostream error"; its typo, its class name and its stream jargon never reach a user.
    """
    why = first_line(exc)[:200] or type(exc).__name__
    why = re.sub(r"^MiniMidi:\s*", "", why)
    why = re.sub(r"(?i)invaild midi file!?\s*", "", why)
    why = re.sub(r"(?i)invaild", "invalid", why)
    why = re.sub(r"!?:?\s*iostream error$", "", why).rstrip("!").strip()
    return f"{name}: not a readable MIDI file" + (f" ({why[:1].lower()}{why[1:]})" if why else "")


def exit_status(command, *args) -> int:  # noqa: ANN001
    """Run a command function; a MidigenError is printed as one line and gives status 2."""
    import sys

    try:
        return int(command(*args) or 0)
    except MidigenError as exc:
        print(f"midigen: error: {exc}", file=sys.stderr)
        return 2
