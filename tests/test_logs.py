"""The access log's line: the entry's keys in order, then "time" (UTC, to the millisecond, the
second's text cached between lines), then a newline."""

from __future__ import annotations

import io
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import logs
from gateway.logs import AccessLog


def spelled(now: float) -> str:
    """The time as the access log has always spelled it, formatted from scratch."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def written(monkeypatch: pytest.MonkeyPatch, log: AccessLog, now: float) -> dict[str, object]:
    out = io.BytesIO()
    log._out = out
    monkeypatch.setattr(logs.time, "time", lambda: now)
    log.write({"request_id": "r"})
    log.flush()
    line = out.getvalue()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    parsed: dict[str, object] = orjson.loads(line)
    return parsed


def test_a_line_is_the_entry_then_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.BytesIO()
    monkeypatch.setattr(logs.time, "time", lambda: 1_700_000_000.25)
    entry: dict[str, object] = {"request_id": "r", "status": 200, "error": None}
    log = AccessLog(out)
    log.write(entry)
    log.flush()
    assert out.getvalue() == (
        b'{"request_id":"r","status":200,"error":null,"time":"2023-11-14T22:13:20.250Z"}\n'
    )
    assert entry["time"] == "2023-11-14T22:13:20.250Z"  # the caller's dict, as before


def test_the_cached_second_follows_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    log = AccessLog()
    base = 1_700_000_000.0
    for now in (
        base + 0.999,
        base + 0.0005,  # the clock may step back: the second is still recomputed
        base + 1.0,
        base + 1.0,  # the same second twice
        base + 1.9999,
        base + 2.001,
        base + 86_400 * 400 + 0.5,
        base - 0.001,
        0.5,  # the epoch itself
        0.0,
    ):
        assert written(monkeypatch, log, now)["time"] == spelled(now)


@given(st.lists(st.floats(min_value=0, max_value=4_102_444_800), min_size=1, max_size=20))
def test_times_are_spelled_as_from_scratch(times: list[float]) -> None:
    log = AccessLog()
    with pytest.MonkeyPatch.context() as monkeypatch:
        for now in sorted(times) + times:
            assert written(monkeypatch, log, now)["time"] == spelled(now)


class Counted(io.BytesIO):
    """A stream that counts the calls that wrote to it (each one a syscall on stderr)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: object) -> int:
        self.writes += 1
        return super().write(data)  # type: ignore[arg-type]


def test_lines_are_written_together_not_one_call_each() -> None:
    """stderr's binary stream is unbuffered: a write per line was a syscall per request. Lines
    wait for ``flush`` (every second) or for ``ACCESS_BUFFER`` bytes, whole lines at once."""
    out = Counted()
    log = AccessLog(out)
    for n in range(100):
        log.write({"request_id": f"r{n}"})
    assert out.writes == 0
    log.flush()
    assert out.writes == 1 and out.getvalue().count(b"\n") == 100
    big = {"request_id": "x" * 1000}
    for _ in range(logs.ACCESS_BUFFER // 1000 + 1):  # past the bound: written without a flush
        log.write(big)
    assert out.writes == 2 and out.getvalue().endswith(b"\n")
