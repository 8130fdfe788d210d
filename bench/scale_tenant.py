"""One owner on one Redis node, for the scale bench: its keys admitted and settled
as fast as one process can on Redis ``TIME``, and the rate one fully busy core would give."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from procs import Stack
from scale_base import (
    COMPLETION,
    COST,
    LOAD_CONCURRENCY,
    MODEL,
    PROMPT,
    RESERVE,
    RESERVE_COST,
    TIMEOUT_MS,
    Redis,
    insert,
    make_record,
    per_request,
)
from scale_driver import drained

from gateway.clock import SystemClock
from gateway.config.schema import Config
from gateway.limits.limiter import Limiter
from gateway.store.redis import RedisStore


@dataclass
class Tenant:
    keys: int
    seconds: float
    requests: int
    rate: float
    redis_us: float  # redis-server CPU per request (admission + its share of settlement)
    busy: float  # share of one CPU redis-server used
    calls: dict[str, float]

    @property
    def ceiling(self) -> float:
        """Requests per second when redis-server is the only limit (one core, 100 % busy)."""
        return 1e6 / self.redis_us if self.redis_us else 0.0


async def hot_tenant(stack: Stack, workdir: Path, config: Config, seconds: float) -> Tenant:
    """One owner (10 governed keys, plan with rpm) admitting and settling as fast as one
    process can, on Redis ``TIME`` (no fake clock): every one of its keys is in one slot."""
    r = Redis(stack, workdir, "scale-tenant")
    records = [make_record(i, "hot-tenant", "rpm+plan", "sk_gw")[0] for i in range(10)]
    await insert(r.url, records, ["hot-tenant"])
    store = RedisStore(r.url, TIMEOUT_MS)
    limiter = Limiter(store, config, SystemClock())
    await store.ping()
    await limiter.start()
    ids, sent, stop = "req_" + os.urandom(6).hex(), 0, 0.0

    async def worker() -> None:
        nonlocal sent
        while time.monotonic() < stop:
            sent += 1
            ticket = await limiter.admit(
                f"{ids}{sent:08x}", records[sent % 10], RESERVE, False, MODEL, RESERVE_COST
            )
            limiter.settle(ticket, MODEL, PROMPT, COMPLETION, False, False, cost=COST)

    try:
        stop = time.monotonic() + 1.0  # warm-up
        await asyncio.gather(*(worker() for _ in range(LOAD_CONCURRENCY)))
        before, first = r.stats(), sent
        started = time.monotonic()
        stop = started + seconds
        await asyncio.gather(*(worker() for _ in range(LOAD_CONCURRENCY)))
        await drained(limiter)
        wall = time.monotonic() - started
        after = r.stats()
    finally:
        await limiter.stop()
        await store.close()
    n = sent - first
    return Tenant(
        keys=len(records),
        seconds=wall,
        requests=n,
        rate=n / wall,
        redis_us=(after.cpu - before.cpu) / n * 1e6,
        busy=(after.cpu - before.cpu) / wall,
        calls=per_request(before, after, n),
    )
