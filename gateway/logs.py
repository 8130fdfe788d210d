"""Logging: one JSON object per line on stderr, with whatever ``extra`` fields a caller adds.

Callers never pass secrets or bodies; the access log line is built from the ``Exchange``.
"""

from __future__ import annotations

import logging
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


class AccessLog:
    """One JSON line per request, written to a buffered stream and flushed by ``flush`` (the
    server calls it every second and at exit): a syscall per request would cost more than the
    rest of the line."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._out = stream  # None: whatever sys.stderr is at the time of writing

    def _stream(self) -> IO[bytes]:
        return self._out if self._out is not None else sys.stderr.buffer

    def write(self, entry: dict[str, Any]) -> None:
        now = time.time()
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + (
            f".{int(now % 1 * 1000):03d}Z"
        )
        self._stream().write(orjson.dumps(entry) + b"\n")

    def flush(self) -> None:
        try:
            self._stream().flush()
        except (OSError, ValueError):
            pass  # a closed stream at exit is not worth a traceback
