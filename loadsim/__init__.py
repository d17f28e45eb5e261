"""loadsim: Gmail-send traffic and the relay's real metrics, on demand."""

__version__ = "0.1.0"
