"""The one error type for problems a user can cause (bad file, bad option, missing model).

The CLI prints such an error as one line and exits with status 2; anything else is our
bug and keeps its traceback.
"""


class MidigenError(Exception):
    """A user-caused problem; the message names the thing and what to do about it."""


class MidiReadError(MidigenError):
    """A file that is not usable MIDI (unreadable, truncated, empty, drums only, ...)."""


def first_line(text: object) -> str:
    """The first non-blank line of an error's text (a one-line report of a longer message)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def exit_status(command, *args) -> int:  # noqa: ANN001
    """Run a command function; a MidigenError is printed as one line and gives status 2."""
    import sys

    try:
        return int(command(*args) or 0)
    except MidigenError as exc:
        print(f"midigen: error: {exc}", file=sys.stderr)
        return 2
