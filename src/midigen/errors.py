"""The one error type for problems a user can cause (bad file, bad option, missing model).

The CLI prints such an error as one line and exits with status 2; anything else is our
bug and keeps its traceback.
"""


class MidigenError(Exception):
    """A user-caused problem; the message names the thing and what to do about it."""


class MidiReadError(MidigenError):
    """A file that is not usable MIDI (unreadable, truncated, empty, drums only, ...)."""
