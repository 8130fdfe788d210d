"""The alert store's contract (``store.events``), one suite over ``memory``, ``redis`` (a real
server) and ``cluster`` (a real 3-master Redis Cluster). Due times follow a ``FakeClock`` in
every backend; the lapse of a lease, marker or shared value is Redis' own (real milliseconds),
so those tests advance the fake clock and poll with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.clock import FakeClock
from gateway.store.events import HISTORY, EventStore
from gateway.store.events_memory import MemoryEventStore

T0 = 1_700_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(params=["memory", "redis", "cluster"])
async def events(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        made: EventStore = MemoryEventStore(clock)
    else:
        from gateway.store.events_redis import RedisEventStore

        url = str(request.getfixturevalue(f"{request.param}_url"))
        made = RedisEventStore(url, 2000, clock=clock)
    yield made
    await made.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], clock: FakeClock, every: float = 0.02
) -> None:
    """Poll ``check`` every ``every`` seconds (moving the fake clock on as much) until it
    holds, within 3 s."""
    deadline = asyncio.get_running_loop().time() + 3.0
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        clock.advance(every)
        await asyncio.sleep(every)


async def test_enqueue_claim_ack(events: EventStore, clock: FakeClock) -> None:
    assert await events.enqueue([("a", b"1"), ("b", b"\x00\xff")])
    assert await events.depth() == 2
    claimed = await events.claim(10, lease=30)
    assert sorted(claimed) == [("a", b"1"), ("b", b"\x00\xff")]
    assert await events.claim(10, lease=30) == []  # hidden while leased
    await events.ack("a")
    assert await events.depth() == 1
    clock.advance(31)
    assert await events.claim(10, lease=30) == [("b", b"\x00\xff")]  # the lease lapsed
    await events.ack("b")
    await events.ack("b")  # twice is harmless
    clock.advance(31)
    assert await events.claim(10, lease=30) == []
    assert await events.depth() == 0


async def test_claim_takes_at_most_count_oldest_first(events: EventStore, clock: FakeClock) -> None:
    for i in range(5):
        await events.enqueue([(f"i{i}", b"x")])
        clock.advance(1)
    assert [i for i, _ in await events.claim(2, lease=60)] == ["i0", "i1"]
    assert [i for i, _ in await events.claim(10, lease=60)] == ["i2", "i3", "i4"]


async def test_enqueue_of_a_queued_id_changes_nothing(events: EventStore, clock: FakeClock) -> None:
    await events.enqueue([("a", b"first")])
    claimed = await events.claim(1, lease=60)
    await events.enqueue([("a", b"second")])  # a retried enqueue: no new item, no reset lease
    assert claimed == [("a", b"first")]
    assert await events.claim(1, lease=60) == []
    assert await events.depth() == 1


async def test_retry_stores_the_new_payload_and_delays(
    events: EventStore, clock: FakeClock
) -> None:
    await events.enqueue([("a", b"v1")])
    await events.claim(1, lease=60)
    await events.retry("a", b"v2", delay=4)
    clock.advance(3.9)
    assert await events.claim(1, lease=60) == []
    clock.advance(0.2)
    assert await events.claim(1, lease=60) == [("a", b"v2")]
    await events.ack("a")
    await events.retry("a", b"v3", delay=0)  # a retry after an ack does not bring it back
    assert await events.claim(1, lease=60) == []
    assert await events.depth() == 0


async def test_once_adds_only_the_first_time(events: EventStore, clock: FakeClock) -> None:
    assert await events.enqueue([("e1", b"x")], once=("k1|dailyLimit|20240101|50", 3600))
    assert not await events.enqueue([("e2", b"x")], once=("k1|dailyLimit|20240101|50", 3600))
    assert await events.enqueue([("e3", b"x")], once=("k1|dailyLimit|20240101|80", 3600))
    assert sorted(i for i, _ in await events.claim(10, lease=60)) == ["e1", "e3"]


async def test_once_marker_lapses(events: EventStore, clock: FakeClock) -> None:
    assert await events.enqueue([], once=("m", 0.2))

    async def again() -> bool:
        return await events.enqueue([], once=("m", 0.2))

    assert not await again()
    await eventually(again, clock)


async def test_one_leader_at_a_time(events: EventStore, clock: FakeClock) -> None:
    assert await events.leader("a", ttl=5)
    assert not await events.leader("b", ttl=5)
    assert await events.leader("a", ttl=5)  # renewed
    await events.resign("b")  # not b's to give up
    assert not await events.leader("b", ttl=5)
    await events.resign("a")
    assert await events.leader("b", ttl=0.2)
    assert not await events.leader("a", ttl=5)

    async def a_takes_over() -> bool:
        return await events.leader("a", ttl=5)

    await eventually(a_takes_over, clock)  # b stopped renewing
    assert not await events.leader("b", ttl=5)


async def test_swap_returns_the_value_before(events: EventStore, clock: FakeClock) -> None:
    assert await events.swap("upstream:u", "down", ttl=60) is None
    assert await events.swap("upstream:u", "down", ttl=60) == "down"
    assert await events.swap("upstream:u", "up", ttl=60) == "down"
    assert await events.swap("upstream:v", "up", ttl=0.2) is None

    async def lapsed() -> bool:  # each look sets it again: look less often than it lapses
        return await events.swap("upstream:v", "up", ttl=0.2) is None

    await eventually(lapsed, clock, every=0.3)


async def test_expiry_index(events: EventStore) -> None:
    await events.watch_expiry("k1", T0 + 100)
    await events.watch_expiry("k2", T0 + 50)
    await events.watch_expiry("k3", T0 + 900)
    assert await events.expiring(T0 + 100) == [("k2", T0 + 50), ("k1", T0 + 100)]
    await events.watch_expiry("k2", T0 + 500)  # moved
    await events.unwatch_expiry("k1")
    await events.unwatch_expiry("nope")
    assert await events.expiring(T0 + 600) == [("k2", T0 + 500)]


async def test_the_history_keeps_the_last_record_of_each_item(
    events: EventStore, clock: FakeClock
) -> None:
    await events.enqueue([("a", b"a:queued")])
    clock.advance(1)
    await events.enqueue([("b", b"b:queued"), ("c", b"c:queued")], once=("hist", 60))
    clock.advance(1)
    assert not await events.enqueue([("d", b"d")], once=("hist", 60))  # not added: not listed
    await events.claim(10, lease=60)
    await events.retry("a", b"a:retrying", delay=5)
    await events.ack("b", b"b:sent")
    await events.ack("c")  # no record given: the history keeps what it had
    recent = await events.recent(10)
    assert recent[0] == ("c", b"c:queued") or recent[0] == ("b", b"b:sent")  # same instant
    assert sorted(recent) == [("a", b"a:retrying"), ("b", b"b:sent"), ("c", b"c:queued")]
    assert recent[-1] == ("a", b"a:retrying")  # the oldest last
    assert await events.recent(1) in ([("b", b"b:sent")], [("c", b"c:queued")])
    assert await events.recent(0) == []
    assert await events.records(["b", "zz", "a"]) == [b"b:sent", None, b"a:retrying"]
    assert await events.depth() == 1  # the history is not the queue


async def test_the_history_forgets_the_oldest_past_its_size(
    events: EventStore, clock: FakeClock
) -> None:
    batch = 100
    for n in range(0, HISTORY + batch, batch):
        await events.enqueue([(f"i{n + i:05}", b"x") for i in range(batch)])
        clock.advance(1)
    recent = await events.recent(HISTORY + batch)
    assert len(recent) == HISTORY
    assert recent[0][0] == f"i{HISTORY + batch - 1:05}" and recent[-1][0] == f"i{batch:05}"
    assert await events.records(["i00000", f"i{batch:05}"]) == [None, b"x"]
    await events.ack("i00000", b"late")  # forgotten: an ack does not bring it back
    assert await events.records(["i00000"]) == [None]
