"""Settlement exactly once across a Redis failover (issue 23, item 1). A primary and its replica,
real redis-servers; the store reaches "the primary" through a TCP proxy it knows nothing about,
as it reaches a managed Redis's endpoint. Failover is what such an endpoint does: the replica
promoted (``REPLICAOF NO ONE``), the endpoint re-pointed to it, the old connections cut.

Each scenario checks, on the new primary, the key's day tokens (reserved at admission, moved by
used - reserved at settlement), its lease and its usage rows against what was served: counted
once, never twice, and nothing lost but what the failover itself lost (writes the replica never
had). A write is known replicated by a fence written after it and ``WAIT 1`` on the primary
(the replication stream is in order); one is known not replicated by promoting the replica
before it runs (the link is cut synchronously), as happens to a write that reaches the old
primary after the promotion and before the endpoint moves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest
import redis as sync_redis

from gateway.clock import FakeClock
from gateway.records import Admission, Settlement
from gateway.store.base import LEASE_SECONDS, StoreError
from gateway.store.redis import RedisStore
from gateway.store.redis_codec import settle_calls
from tests.faultproxy import FaultProxy
from tests.redis_server import RedisServer, start_redis
from tests.store.test_contract import T0

DAY = 20231114  # T0's UTC day
RESERVE, PROMPT, COMPLETION = 10, 3, 4  # each request reserves 10 tokens and uses 7
DEADLINE = 10.0
T = TypeVar("T")


@dataclass
class Pair:
    """A primary, its replica, and the endpoint (a proxy) the store knows."""

    primary: RedisServer
    replica: RedisServer
    endpoint: FaultProxy

    def replicated(self) -> None:
        """Everything the primary ran so far is on the replica: a fence written after it,
        acknowledged by the replica (``WAIT``)."""
        with sync_redis.Redis(port=self.primary.port) as client:
            client.incr("test:fence")
            assert client.wait(1, 1000) == 1

    def promote(self) -> None:
        """The replica becomes a primary; what the old one runs from now on is not replicated."""
        assert self.replica.call("REPLICAOF", "NO", "ONE") == "OK"

    def repoint(self) -> None:
        """The endpoint leads to the new primary; its open connections are cut."""
        self.endpoint.target_port = self.replica.port
        self.endpoint.set("reset")
        self.endpoint.set("pass")

    def failover(self) -> None:
        self.promote()
        self.repoint()


def _linked(replica: RedisServer) -> bool:
    return "master_link_status:up" in replica.call("INFO", "replication")


@pytest.fixture
async def pair(redis_process: RedisServer) -> AsyncIterator[Pair]:
    """A fresh primary and replica (``redis_process``, the session's server, only for its
    check that redis-server is installed)."""
    primary = start_redis("--repl-diskless-sync-delay", "0")
    replica = start_redis("--replicaof", "127.0.0.1", str(primary.port))
    endpoint = FaultProxy(primary.port)
    try:
        deadline = time.monotonic() + DEADLINE
        while not _linked(replica):
            assert time.monotonic() < deadline, "the replica never linked to its primary"
            await asyncio.sleep(0.02)
        await endpoint.start()
        yield Pair(primary, replica, endpoint)
    finally:
        await endpoint.stop()
        replica.stop()
        primary.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(pair: Pair, clock: FakeClock) -> AsyncIterator[RedisStore]:
    """The gateway's store, through the endpoint; 500 ms per call (a lost reply fails it)."""
    s = RedisStore(f"redis://127.0.0.1:{pair.endpoint.port}", 500, clock)
    yield s
    await s.close()


def settlement(a: Admission, day: int = DAY, month: int = 202311) -> Settlement:
    return Settlement(a, day, month, "m", PROMPT, COMPLETION, 12.5, finished_at=T0)


async def admitted(store: RedisStore, n: int) -> Settlement:
    """Request ``n`` admitted; its settlement once served. The settle script is loaded first
    (a settlement of a request never admitted, which counts nothing): a reply lost later is
    the settle's own, not a NOSCRIPT's (which ran nothing)."""
    await store.settle(settlement(Admission("never", "k0", "acme")))
    a = Admission(f"r{n}", "k1", "acme", concurrency=5, daily=10**6, reserve=RESERVE)
    v = await store.admit(a)
    assert v.admitted and (v.day, v.month) == (DAY, 202311)
    return settlement(a, v.day, v.month)


async def taken(call: Callable[[], Awaitable[T]]) -> T:
    """``call`` tried again until the store answers (the first try after a failover may meet
    the connection the endpoint cut)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return await call()
        except StoreError:
            assert time.monotonic() < deadline, "the store never answered"
            await asyncio.sleep(0.05)


async def retried(store: RedisStore, batch: list[Settlement]) -> None:
    """As the limiter does: the same batch sent again until the store takes it, then once more
    (a duplicate)."""
    await taken(lambda: store.settle_many(batch))
    await store.settle_many(batch)


@dataclass(frozen=True)
class Counted:
    day_tokens: int  # the key's tokens of the day
    leases: set[str]  # the requests whose leases the key holds
    requests: int  # usage rows: requests counted
    tokens: int  # usage rows: prompt + completion tokens counted


async def counted(server: RedisServer, s: Settlement) -> Counted:
    """What ``server`` holds for the key of ``s`` (read directly, not through the endpoint)."""
    leases_key, counters_key = settle_calls([s], "")[0][:2]
    day_tokens = server.call("HGET", counters_key, "dt")
    leases = server.call("ZRANGE", leases_key, "0", "-1")
    direct = RedisStore(server.url, 5000, FakeClock(T0))
    try:
        rows = await direct.usage("acme", ["k1"], DAY, DAY)
    finally:
        await direct.close()
    return Counted(
        int(day_tokens or 0),
        set(leases.split("\n")) - {""},
        sum(r.requests for r in rows),
        sum(r.prompt_tokens + r.completion_tokens for r in rows),
    )


USED = PROMPT + COMPLETION
ONCE = Counted(USED, set(), 1, USED)  # one request served, settled once


async def test_a_settle_reply_lost_then_failover_after_it_replicated_counts_once(
    pair: Pair, store: RedisStore
) -> None:
    """The settle ran on the old primary and its reply was lost; its effects reached the
    replica; failover; the limiter's retries of the batch on the new primary find the lease
    gone (the settle-once marker): counted once."""
    s = await admitted(store, 1)
    pair.endpoint.set("mute")  # the command reaches the primary, its reply never comes back
    with pytest.raises(StoreError):
        await store.settle_many([s])
    pair.replicated()
    assert await counted(pair.primary, s) == ONCE  # it ran there
    assert await counted(pair.replica, s) == ONCE  # and is on the replica
    pair.failover()
    await retried(store, [s])
    assert await counted(pair.replica, s) == ONCE


async def test_a_settle_run_on_the_old_primary_and_not_replicated_counts_once(
    pair: Pair, store: RedisStore
) -> None:
    """The admission replicated; the settle ran on the old primary after the promotion (not
    replicated) and its reply was lost; the endpoint moves; the lease is still held on the new
    primary, and the retries count the request there once (its count on the old primary went
    with it: net once)."""
    s = await admitted(store, 1)
    pair.replicated()
    pair.promote()
    pair.endpoint.set("mute")
    with pytest.raises(StoreError):
        await store.settle_many([s])
    assert await counted(pair.primary, s) == ONCE  # it ran on the old primary
    held = Counted(RESERVE, {"r1"}, 0, 0)
    assert await counted(pair.replica, s) == held  # not on the new one: the lease is there
    pair.repoint()
    await retried(store, [s])
    assert await counted(pair.replica, s) == ONCE


async def test_a_settle_after_failover_counts_what_replicated_and_refuses_a_lost_lease(
    pair: Pair, store: RedisStore
) -> None:
    """r1 admitted before the failover (its lease replicated), settled after it: counted once.
    r2 admitted by the old primary after the promotion (its admission, lease and reservation
    lost with it), served, settled after the failover: refused as not held (no lease), so it
    is not counted at all (what the failover lost), and r1 is not counted twice."""
    first = await admitted(store, 1)
    pair.replicated()
    pair.promote()
    second = await admitted(store, 2)  # only the old primary has it
    assert (await counted(pair.primary, second)).leases == {"r1", "r2"}
    pair.repoint()
    await retried(store, [first, second])
    await retried(store, [second])  # settled again alone: still nothing
    assert await counted(pair.replica, first) == ONCE


async def test_a_settle_the_old_primary_answered_and_did_not_replicate_is_lost(
    pair: Pair, store: RedisStore, clock: FakeClock
) -> None:
    """What the failover itself loses: a settlement the old primary ran and answered after the
    promotion is not sent again. The new primary keeps the reservation (charged) and the lease,
    and no usage row; the lease stops counting after its 20 s, as a dead process's does."""
    s = await admitted(store, 1)
    pair.replicated()
    pair.promote()
    await store.settle_many([s])
    assert await counted(pair.primary, s) == ONCE
    pair.repoint()
    assert await counted(pair.replica, s) == Counted(RESERVE, {"r1"}, 0, 0)
    clock.advance(LEASE_SECONDS + 1)
    alone = Admission("r2", "k1", "acme", concurrency=1)
    assert (await taken(lambda: store.admit(alone))).admitted
