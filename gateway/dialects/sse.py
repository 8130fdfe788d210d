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
    """Feed bytes as they come; get back the complete events (without their blank line).

    An unfinished event is kept in pieces and joined once, when a piece that may end it comes:
    a large event (a completions stream's echoed prompt with its logprobs, ~1 KB a token) costs
    time linear in its size, where joining and searching it again at every piece was quadratic
    (32 MiB in 64 KiB pieces: 12.8 s of the event loop)."""

    __slots__ = ("_pieces",)

    def __init__(self) -> None:
        # the unfinished event, normalized to LF but for a last CR whose LF may follow
        self._pieces: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        pieces = self._pieces
        if pieces:
            tail = pieces[-1][-1]
            if (  # nothing in ``data`` can end the event: kept, searched no more
                CR not in data
                and tail != CR
                and not (tail == LF and data[:1] == b"\n")
                and data.find(b"\n\n") < 0
            ):
                if data:
                    pieces.append(data)
                return []
            pieces.append(data)
            data = b"".join(pieces)
            pieces.clear()
        cr = b""
        if CR in data:
            if data[-1] == CR:  # its LF (a CRLF) may be the next piece's first byte
                data, cr = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if data.find(b"\n\n") < 0:
            if data or cr:
                pieces.append(data + cr)
            return []
        *events, rest = data.split(b"\n\n")
        if rest or cr:
            pieces.append(rest + cr)
        return [e for e in events if e]

    def rest(self) -> bytes:
        """What is left unfinished when the stream ends."""
        return b"".join(self._pieces)


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
