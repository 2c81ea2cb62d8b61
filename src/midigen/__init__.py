"""midigen: event-token LSTMs that write MIDI starting points for music producers."""

__version__ = "0.1.0"
