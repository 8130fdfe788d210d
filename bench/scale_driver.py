"""The scale bench drives the store as a gateway process does: a ``Limiter`` over a
``RedisStore`` whose scripts read a fake clock, admissions and settlements at a given
concurrency, admission latencies at concurrency 1."""

from __future__ import annotations

import asyncio
import gc
import os
import time

from scale_base import (
    COMPLETION,
    COST,
    LOAD_CONCURRENCY,
    MODEL,
    PROMPT,
    RESERVE,
    RESERVE_COST,
    START,
    TIMEOUT_MS,
)

from gateway.clock import FakeClock
from gateway.config.schema import Config
from gateway.errors import TooManyRequests
from gateway.limits.limiter import Limiter
from gateway.records import KeyRecord
from gateway.store.redis import RedisStore


class Driver:
    """One gateway process's limiter over a ``RedisStore`` whose scripts read a fake clock,
    advanced ``step`` seconds per request."""

    def __init__(self, url: str, config: Config, step: float, records: list[KeyRecord]) -> None:
        self.clock = FakeClock(START)
        self.store = RedisStore(url, TIMEOUT_MS, self.clock)
        self.limiter = Limiter(self.store, config, self.clock)
        self.step = step
        self.records = records
        self.sent = 0  # every request, the probes' too
        self.loaded = 0  # the load's requests (the checkpoints count these)
        self.refused = 0
        self._next = 0
        self._ids = "req_" + os.urandom(6).hex()

    async def start(self) -> None:
        await self.store.ping()
        await self.limiter.start()

    async def one(self, records: list[KeyRecord], times: list[float] | None = None) -> None:
        record = records[self._next % len(records)]
        self._next += 1
        self.sent += 1
        self.clock.advance(self.step)
        started = time.perf_counter()
        try:
            ticket = await self.limiter.admit(
                f"{self._ids}{self.sent:08x}", record, RESERVE, False, MODEL, RESERVE_COST
            )
        except TooManyRequests:
            self.refused += 1
            return
        if times is not None:
            times.append(time.perf_counter() - started)
        self.limiter.settle(ticket, MODEL, PROMPT, COMPLETION, False, False, cost=COST)

    async def load(self, count: int, concurrency: int = LOAD_CONCURRENCY) -> float:
        """``count`` requests, ``concurrency`` at a time, every settlement written; seconds."""
        started = time.monotonic()
        left = count
        self.loaded += count

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await self.one(self.records)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await self.flush()
        return time.monotonic() - started

    async def probe(self, count: int, records: list[KeyRecord] | None = None) -> list[float]:
        """Admission latencies (seconds) of ``count`` requests one at a time (concurrency 1).
        The bench's own heap (records, census) is frozen first, as a gateway freezes what it
        made at start: a full collection of it would land in the p99."""
        gc.collect()
        gc.freeze()
        times: list[float] = []
        for _ in range(count):
            await self.one(records or self.records, times)
        await self.flush()
        return times

    async def flush(self) -> None:
        await drained(self.limiter)

    async def close(self) -> None:
        await self.limiter.stop()
        await self.store.close()


async def drained(limiter: Limiter, seconds: float = 60.0) -> None:
    """Wait until the limiter's writer has written every settlement."""
    deadline = time.monotonic() + seconds
    while limiter.buffer.pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"settlements were not written within {seconds:g} s")
        await asyncio.sleep(0.005)
