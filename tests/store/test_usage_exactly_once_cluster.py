"""A Cluster's usage rows exactly once (issue 23, item 1) across its two steps of settlement
(``redis_usage.ClusterSettlement``): a first step whose reply was lost, a process that dies
between the steps, duplicate settlements. Real 3-node Cluster; the faults are injected between
the store and its transport (the commands run on the real Cluster, their replies are dropped,
or a pipeline is never sent, as a process that died would not send it)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import pytest
import redis as sync_redis

from gateway.clock import FakeClock
from gateway.records import Admission, Settlement
from gateway.store.base import StoreError
from gateway.store.redis import RedisStore
from gateway.store.redis_codec import script, stripe, tag
from gateway.store.redis_usage import ClusterSettlement
from gateway.store.transport import Command, RedisTransport, noscript
from tests.redis_server import RedisClusterProcesses
from tests.store.test_contract import T0

DAY = 20231114  # T0's UTC day
# settle.lua's: rows left this long in the owner's slot are adopted
ADOPT_AFTER = float(re.findall(r"local ADOPT_AFTER = (\d+)", script("settle"))[0])


class Faulty:
    """A store's transport that loses the replies of the settle calls of some owners (calls
    that ran: not those that met an unloaded script), or, once ``dead``, sends nothing (the
    process died)."""

    def __init__(self, inner: RedisTransport, settle_sha: str, usage_sha: str) -> None:
        self.inner, self.settle_sha, self.usage_sha = inner, settle_sha, usage_sha
        self.spans_slots = inner.spans_slots
        self.lose: set[str] = set()  # owners whose next settle call's reply is lost
        self.dead = False
        self.dies_before_usage = False  # dies as it would send the rows to their stripes
        self.stripes_unreachable = False  # its usage calls fail, unsent

    async def call(self, *args: Any) -> Any:
        if self.dead:
            raise StoreError("redis: the process died")
        return await self.inner.call(*args)

    async def pipeline(
        self, commands: Sequence[Command], bulk: bool = False, raising: bool = True
    ) -> list[Any]:
        usage = any(c[:2] == ("EVALSHA", self.usage_sha) for c in commands)
        if usage and self.dies_before_usage:
            self.dead = True
        if self.dead or (usage and self.stripes_unreachable):
            raise StoreError("redis: the process died")
        replies = await self.inner.pipeline(commands, bulk, raising)
        lost = [i for i, c in enumerate(commands) if self._loses(c) and not noscript(replies[i])]
        for i in lost:
            replies[i] = TimeoutError()
        self.lose -= {self._owner(commands[i]) for i in lost}
        return replies

    def _loses(self, command: Command) -> bool:
        return command[:2] == ("EVALSHA", self.settle_sha) and self._owner(command) in self.lose

    @staticmethod
    def _owner(command: Command) -> str:
        key = str(command[3])  # the first key: gw:{<owner>}:...
        return key[key.index("{") + 1 : key.index("}")]


def faulty(store: RedisStore) -> tuple[ClusterSettlement, Faulty]:
    two_steps = store._cluster
    assert isinstance(two_steps, ClusterSettlement)
    fault = Faulty(two_steps._io, two_steps._settle.sha, two_steps._usage.sha)
    two_steps._io = fault
    return two_steps, fault


def settlement(n: int, key: str = "k1", owner: str = "acme", concurrency: int = 5) -> Settlement:
    a = Admission(f"r{n}", key, owner, concurrency=concurrency, daily=10**6, reserve=10)
    return Settlement(a, DAY, 202311, "m", 3, 4, 12.5, finished_at=T0)


async def admitted(store: RedisStore, *settlements: Settlement) -> None:
    for s in settlements:
        assert (await store.admit(s.admission)).admitted


async def requests(store: RedisStore, owner: str, key: str) -> int:
    return sum(r.requests for r in await store.usage(owner, [key], DAY, DAY))


def kept(url: str, owner: str) -> dict[bytes, bytes]:
    """The owner's rows kept in its slot, not yet forgotten."""
    host = url.removeprefix("redis+cluster://").split(",")[0]
    with sync_redis.RedisCluster.from_url(f"redis://{host}") as client:
        return client.hgetall(f"{tag(owner)}pending")  # type: ignore[no-any-return]


def same_stripe_keys(count: int) -> list[str]:
    """Key ids whose usage rows share one stripe."""
    found: dict[int, list[str]] = {}
    for i in range(10_000):
        group = found.setdefault(stripe(f"k{i}"), [])
        group.append(f"k{i}")
        if len(group) == count:
            return group
    raise AssertionError("no stripe with enough keys")


# -- the first step's reply lost ---------------------------------------------------------------
async def test_a_settle_reply_lost_then_sent_again_writes_the_row_once(cluster_url: str) -> None:
    """The settle call ran (the lease released, the counters moved) but its reply was lost: the
    batch sent again finds the lease gone and the row kept in the owner's slot, and writes it
    once; sent yet again, nothing more."""
    store = RedisStore(cluster_url, 5000, FakeClock(T0))
    try:
        _, fault = faulty(store)
        s = settlement(1)
        await admitted(store, s)
        fault.lose.add("acme")
        with pytest.raises(StoreError):
            await store.settle_many([s])
        assert await requests(store, "acme", "k1") == 0
        for _ in range(3):  # the limiter's retries of the batch
            await store.settle_many([s])
        assert await requests(store, "acme", "k1") == 1
        spent = await store.admit(settlement(2).admission)  # counted once: 7 - 10 + 10 reserved
        assert spent.spent is not None and spent.spent.day_tokens == 7 + 10
    finally:
        await store.close()
    assert kept(cluster_url, "acme") == {}  # forgotten once written (and the store closed)


async def test_a_lost_row_comes_after_later_rows_of_its_stripe(cluster_url: str) -> None:
    """Two owners' settlements in one batch, their keys in one stripe; the first owner's reply
    is lost, the second's row written (its number higher). The first's row, sent again later,
    is still written: the stripe's floor stays under a number whose fate is open."""
    x_key, y_key = same_stripe_keys(2)
    store = RedisStore(cluster_url, 5000, FakeClock(T0))
    try:
        _, fault = faulty(store)
        sx, sy = settlement(1, x_key, "x-owner"), settlement(2, y_key, "y-owner")
        await admitted(store, sx, sy)
        fault.lose.add("x-owner")
        with pytest.raises(StoreError):
            await store.settle_many([sx, sy])
        assert await requests(store, "y-owner", y_key) == 1
        await store.settle_many([sx, sy])
        assert await requests(store, "x-owner", x_key) == 1
        assert await requests(store, "y-owner", y_key) == 1
    finally:
        await store.close()


# -- a process that dies between the steps -----------------------------------------------------
@pytest.mark.parametrize("wrote", [False, True], ids=["before-step-2", "after-step-2"])
async def test_a_process_dead_between_the_steps_has_its_row_adopted_once(
    cluster_url: str, wrote: bool
) -> None:
    """Process A settles (its leases released) and dies before writing the row (or after
    writing it, before forgetting it in the owner's slot). Process B, settling for the same
    owner a minute later, adopts the row: written once."""
    clock = FakeClock(T0)
    a = RedisStore(cluster_url, 5000, clock)
    b = RedisStore(cluster_url, 5000, clock)
    try:
        _, fault = faulty(a)
        s1, s2 = settlement(1), settlement(2)
        await admitted(a, s1)
        if wrote:
            await a.settle_many([s1])
            assert await requests(b, "acme", "k1") == 1
        else:
            fault.dies_before_usage = True
            with pytest.raises(StoreError):
                await a.settle_many([s1])
            assert await requests(b, "acme", "k1") == 0
        fault.dead = True  # nothing more from A (its rows, its forgets)
        clock.advance(ADOPT_AFTER + 1)
        await admitted(b, s2)
        await b.settle_many([s2])
        assert await requests(b, "acme", "k1") == 2
        clock.advance(ADOPT_AFTER + 1)  # adopted again if still kept: nothing more
        s3 = settlement(3)
        await admitted(b, s3)
        await b.settle_many([s3])
        assert await requests(b, "acme", "k1") == 3
    finally:
        await b.close()
        await a._io.close()
    assert kept(cluster_url, "acme") == {}


async def test_a_dead_process_row_under_its_later_rows_is_adopted(cluster_url: str) -> None:
    """A's settle reply for one owner is lost while its later rows (another owner's, the same
    stripe) are written; A dies. B adopts the lost one: written, though A wrote higher numbers
    in that stripe before it died."""
    x_key, y_key = same_stripe_keys(2)
    clock = FakeClock(T0)
    a = RedisStore(cluster_url, 5000, clock)
    b = RedisStore(cluster_url, 5000, clock)
    try:
        _, fault = faulty(a)
        sx, sy = settlement(1, x_key, "x-owner"), settlement(2, y_key, "y-owner")
        await admitted(a, sx, sy)
        fault.lose.add("x-owner")
        with pytest.raises(StoreError):
            await a.settle_many([sx, sy])
        fault.dead = True
        clock.advance(ADOPT_AFTER + 1)
        s3 = settlement(3, x_key, "x-owner")
        await admitted(b, s3)
        await b.settle_many([s3])
        assert await requests(b, "x-owner", x_key) == 2
        assert await requests(b, "y-owner", y_key) == 1
    finally:
        await b.close()
        await a._io.close()


async def test_a_row_adopted_from_a_live_process_is_written_once(cluster_url: str) -> None:
    """A's usage calls fail for over a minute (its row waits in A); B, settling for the owner,
    adopts the row and writes it under A's name; A, its stripe back, sends it too: once."""
    clock = FakeClock(T0)
    a = RedisStore(cluster_url, 5000, clock)
    b = RedisStore(cluster_url, 5000, clock)
    try:
        two_steps, fault = faulty(a)
        s1, s2 = settlement(1), settlement(2)
        await admitted(a, s1)
        fault.stripes_unreachable = True
        with pytest.raises(StoreError):
            await a.settle_many([s1])
        clock.advance(ADOPT_AFTER + 1)
        await admitted(b, s2)
        await b.settle_many([s2])
        assert await requests(b, "acme", "k1") == 2
        fault.stripes_unreachable = False
        await a.settle_many([s1])  # the limiter's retry
        assert two_steps.waiting == {}
        assert await requests(b, "acme", "k1") == 2
    finally:
        await a.close()
        await b.close()
    assert kept(cluster_url, "acme") == {}


# -- duplicates ---------------------------------------------------------------------------------
async def test_duplicate_settlements_after_a_lost_reply_write_the_row_once(
    cluster_url: str,
) -> None:
    """A settlement whose settle reply was lost, then sent twice in one batch, by another
    process too (which finds the row kept and writes it under A's name), and again: once."""
    clock = FakeClock(T0)
    a = RedisStore(cluster_url, 5000, clock)
    b = RedisStore(cluster_url, 5000, clock)
    try:
        _, fault = faulty(a)
        s = settlement(1)
        await admitted(a, s)
        fault.lose.add("acme")
        with pytest.raises(StoreError):
            await a.settle_many([s, s])
        await b.settle_many([s, s])
        assert await requests(b, "acme", "k1") == 1
        await a.settle_many([s, s])
        await a.settle_many([s])
        await b.settle_many([s])
        assert await requests(b, "acme", "k1") == 1
    finally:
        await a.close()
        await b.close()
    assert kept(cluster_url, "acme") == {}


async def test_the_stripe_floor_keeps_no_numbers_in_steady_state(
    cluster_url: str, cluster_processes: RedisClusterProcesses
) -> None:
    """Settled in many batches without a fault, a stripe keeps one floor per process and no
    numbers above it; the owner's slot keeps no rows once the store is closed."""
    store = RedisStore(cluster_url, 5000, FakeClock(T0))
    try:
        for n in range(0, 40, 4):
            batch = [settlement(i, f"k{i % 3}") for i in range(n, n + 4)]
            await admitted(store, *batch)
            await store.settle_many(batch)
        assert sum([await requests(store, "acme", f"k{i}") for i in range(3)]) == 40
    finally:
        await store.close()
    names = []
    for node in cluster_processes.nodes:
        with sync_redis.Redis(port=node.port) as client:
            names += [n.decode() for n in client.scan_iter(b"gw:*")]
    assert not [n for n in names if ":above:" in n or n.endswith(":pending")], names
    assert len([n for n in names if ":floor:" in n]) == len({stripe(f"k{i}") for i in range(3)})


async def test_numbers_listed_above_a_stuck_floor_are_dropped_once_it_moves(
    cluster_url: str, cluster_processes: RedisClusterProcesses
) -> None:
    """While one owner's settle replies are lost (its row's fate open), the rows this process
    writes to the same stripe are listed above its floor there; once the reply comes, the
    floor passes them all and the list is gone (dropped 1,000 at a time)."""
    x_key, y_key = same_stripe_keys(2)
    store = RedisStore(cluster_url, 5000, FakeClock(T0))
    try:
        two_steps, fault = faulty(store)
        sx = settlement(0, x_key, "x-owner")
        await admitted(store, sx)
        fault.lose.add("x-owner")
        with pytest.raises(StoreError):
            await store.settle_many([sx])
        ys = [settlement(n, y_key, "y-owner", 2000) for n in range(1, 1201)]
        for at in range(0, len(ys), 64):
            await asyncio.gather(*(admitted(store, s) for s in ys[at : at + 64]))
        fault.lose.add("x-owner")  # lost again as it is sent with them
        with pytest.raises(StoreError):
            await store.settle_many(ys)
        assert len(listed(cluster_processes, two_steps.process)) == 1200
        await store.settle_many([settlement(1201, y_key, "y-owner")])  # (not admitted: no row)
        assert listed(cluster_processes, two_steps.process) == set()
        assert await requests(store, "x-owner", x_key) == 1
        assert await requests(store, "y-owner", y_key) == 1200
    finally:
        await store.close()


def listed(cluster: RedisClusterProcesses, process: str) -> set[bytes]:
    """The numbers of ``process`` listed above its floor, in any stripe."""
    found: set[bytes] = set()
    for node in cluster.nodes:
        with sync_redis.Redis(port=node.port) as client:
            for name in client.scan_iter(f"gw:*above:{process}".encode()):
                found |= set(client.hkeys(name))
    return found
