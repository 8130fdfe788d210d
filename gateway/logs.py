"""Logging: one JSON object per line on stderr, with whatever ``extra`` fields a caller adds.

Callers never pass secrets or bodies; the access log line is built from the ``Exchange``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import IO, Any

import orjson

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").disabled = True


# ".000Z" to ".999Z" (and ".1000Z", which ``now % 1 * 1000`` can round up to in principle):
# the milliseconds of an access-log time without formatting an int per line.
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1001))
_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE


# Access lines held before they are written at once (besides every ``flush``).
ACCESS_BUFFER = 65536


class AccessLog:
    """One JSON line per request, gathered here and written by ``flush`` (the server calls it
    every second and at exit) or once ``ACCESS_BUFFER`` bytes wait: a syscall per request would
    cost more than the rest of the line (stderr's binary stream is unbuffered: every write
    there was a syscall).

    The time's text to the second is formatted once a second, not once a line."""

    __slots__ = ("_out", "_pending", "_second")

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._out = stream  # None: whatever sys.stderr is at the time of writing
        self._pending = bytearray()
        # The last whole second written and its text, in one tuple so they are read together.
        self._second: tuple[float, str] = (math.nan, "")  # nan: equal to no second

    def _stream(self) -> IO[bytes]:
        return self._out if self._out is not None else sys.stderr.buffer

    def write(self, entry: dict[str, Any]) -> None:
        now = time.time()
        fraction = now % 1
        second = now - fraction  # exact: floor(now), the second gmtime(now) spells
        last, text = self._second
        if second != last:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            self._second = (second, text)
        entry["time"] = text + _MILLIS[math.floor(fraction * 1000)]  # (int() costs 3x more)
        pending = self._pending
        pending += orjson.dumps(entry, option=_APPEND_NEWLINE)
        if len(pending) >= ACCESS_BUFFER:
            self.flush()

    def flush(self) -> None:
        """Write what waits, whole lines only, in one call."""
        lines = bytes(self._pending)
        self._pending.clear()
        try:
            stream = self._stream()
            view = memoryview(lines)
            while view:  # stderr's raw stream may take part of it
                written = stream.write(view)
                view = view[written or len(view) :]
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed stream at exit is not worth a traceback
