"""Server-sent events: an incremental splitter of a byte stream into events, and the encoder.

The splitter keeps only the bytes of an unfinished event; every complete event is handed out as
soon as its blank line arrives, so the relay never waits for more than one event. Pure.
"""

from __future__ import annotations

DONE = b"[DONE]"
# Single bytes looked for by their value (``b"\n" in event`` first tries the needle as an integer
# and formats the TypeError it raises, CPython 3.11: six times the cost); longer needles by
# ``find``, half the cost of ``in``. Every relay searches with these.
BACKSLASH, CR, LF = ord("\\"), ord("\r"), ord("\n")


class SSESplitter:
    """Feed bytes as they come; get back the complete events (without their blank line)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        if CR in data or (self._buffer and self._buffer.endswith(b"\r")):
            data = (self._buffer + data).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            self._buffer = b""
        buffer = self._buffer + data if self._buffer else data
        if buffer.find(b"\n\n") < 0:
            self._buffer = buffer
            return []
        *events, self._buffer = buffer.split(b"\n\n")
        return [e for e in events if e]

    def rest(self) -> bytes:
        """What is left unfinished when the stream ends."""
        return self._buffer


def event_data(event: bytes) -> bytes | None:
    """The event's data (data lines joined by newlines), or None if it has no data line."""
    if event.startswith(b"data:") and LF not in event:
        data = event[5:]
        return data[1:] if data.startswith(b" ") else data
    parts = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None


def encode_data(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def encode_event(name: str, payload: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"
