"""Deadlines of the admissions waiting on the store: one timer for all of them.

Every admission waiting on the store shares one timeout (``store.timeout_ms``), so the waits go
in a deque in deadline order and one timer, armed for the earliest still waiting, fails each with
``StoreError`` once its deadline passed: a ``call_later`` made and cancelled per admission cost
~6k instructions under uvloop.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque

from gateway.records import Verdict
from gateway.store.base import StoreError


class Deadlines:
    """The waiting admissions' futures by deadline (all share one timeout: each goes last),
    each failed with ``StoreError`` once it passed, by one timer for the earliest still
    waiting (a timer each, made and cancelled per admission, cost ~6k instructions)."""

    def __init__(self) -> None:
        self.waits: deque[tuple[float, float, asyncio.Future[Verdict]]] = deque()
        self._timer: tuple[asyncio.TimerHandle, asyncio.AbstractEventLoop, float] | None = None

    def add(self, waiting: asyncio.Future[Verdict], seconds: float) -> None:
        loop, waits, timer = waiting.get_loop(), self.waits, self._timer
        at = loop.time() + seconds
        if timer is None or loop is not timer[1]:  # none waits (or a new loop: in tests)
            if timer is not None:
                timer[0].cancel()
            waits.clear()  # (the old loop's waits end with it)
            waits.append((at, seconds, waiting))
            self._arm(loop, at)
        elif at >= waits[-1][0]:  # the usual
            waits.append((at, seconds, waiting))
        else:  # a shorter timeout since (a new config): in its place, perhaps the first
            bisect.insort(waits, (at, seconds, waiting), key=lambda wait: wait[0])
            if at < timer[2]:
                timer[0].cancel()
                self._arm(loop, at)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        self._timer = (loop.call_at(at, self._expire, loop), loop, at)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, waits = None, self.waits
        now = loop.time() + 0.001  # (libuv's timers count whole ms: one may fire a little early)
        while waits:
            at, seconds, waiting = waits[0]
            if not waiting.done():
                if at > now:
                    self._arm(loop, at)
                    break
                waiting.set_exception(StoreError(f"store: no answer within {seconds * 1000:g} ms"))
            waits.popleft()
