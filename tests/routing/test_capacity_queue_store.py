"""The waiting room in Redis (standalone and Cluster), held to the fair queue's order: released
slots go to the head of the model's queue in the same call, in weighted fair order by owner
(shares), a higher priority first, FIFO within an owner; a newcomer does not pass the waiting;
a ticket that leaves hands its place or its slot on; a dead process's tickets expire."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.limits.fairqueue import Entry, FairQueue
from gateway.store.capacity_redis import RedisLeaseStore


@pytest.fixture(params=["redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisLeaseStore]:
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    s = RedisLeaseStore(url, 2000, 0.5)
    yield s
    await s.close()


def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"m-{tag}", f"gpu-{tag}"


async def grants(store: RedisLeaseStore, model: str, up: str, first: str, count: int) -> list[str]:
    """Release ``first``'s lease, then each granted ticket's in turn: the order of grants."""
    order: list[str] = []
    holder = first
    for _ in range(count):
        await store.release([(up, holder)])
        holder = await granted(store, up, exclude=set(order))
        order.append(holder)
    return order


async def granted(store: RedisLeaseStore, up: str, exclude: set[str]) -> str:
    members = await store.transport.call("ZRANGE", f"gw:{{cap}}:{up}", "0", "-1")
    fresh = [m.decode() for m in members if m.decode() not in exclude]
    assert len(fresh) == 1, fresh
    return fresh[0]


async def test_released_slots_go_by_shares_then_arrival(store: RedisLeaseStore) -> None:
    model, up = names()
    spec = [(up, 1)]
    assert await store.acquire(spec, "p:holder", model) == 0
    for i in range(5):
        assert (await store.join(model, f"p:a{i}", "a", 1.0, 0, None, spec))[:2] == (0, i)
    for i in range(10):
        assert (await store.join(model, f"p:b{i}", "b", 4.0, 0, None, spec))[0] == 0
    assert await store.acquire(spec, "p:newcomer", model) == -1  # never passes the waiting
    order = await grants(store, model, up, "p:holder", 10)
    rate = (await store.join(model, "p:late", "a", 1.0, 0, None, spec))[2]
    assert rate > 0  # the slots the waiting got per second, for a Retry-After
    assert [t[2] for t in order].count("b") == 8, order
    assert [t for t in order if t[2] == "b"] == [f"p:b{i}" for i in range(8)]  # FIFO per owner
    assert [t for t in order if t[2] == "a"] == ["p:a0", "p:a1"]


async def test_a_higher_priority_goes_first_and_a_leaver_passes_its_slot_on(
    store: RedisLeaseStore,
) -> None:
    model, up = names()
    spec = [(up, 1)]
    assert await store.acquire(spec, "p:holder", model) == 0
    await store.join(model, "p:low", "a", 1.0, 0, None, spec)
    await store.join(model, "p:leaves", "b", 1.0, 0, None, spec)
    await store.join(model, "p:high", "c", 1.0, 5, None, spec)
    assert (await store.join(model, "p:over", "a", 1.0, 0, 1, spec))[:2] == (-1, 1)
    assert await grants(store, model, up, "p:holder", 1) == ["p:high"]
    assert await store.leave(model, "p:leaves") == 0  # still waiting: taken out
    assert await store.leave(model, "p:high") == 1  # granted: its slot goes to the next
    assert await granted(store, up, exclude=set()) == "p:low"
    assert await store.leave(model, "p:nobody") == -1


async def test_a_dead_process_tickets_expire_and_a_free_slot_is_granted_at_once(
    store: RedisLeaseStore,
) -> None:
    model, up = names()
    spec = [(up, 1)]
    assert await store.acquire(spec, "p:holder", model) == 0
    await store.join(model, "dead:1", "a", 1.0, 0, None, spec)
    await store.join(model, "live:1", "b", 1.0, 0, None, spec)
    deadline = time.monotonic() + 5
    fates = [""]
    while fates != [up]:  # live vouches; dead does not; the holder's lease expires too
        assert time.monotonic() < deadline, fates
        fates = await store.sweep(model, ["live:1"])
        await asyncio.sleep(0.05)
    assert await store.sweep(model, ["dead:1"]) == ["-"]
    other, up2 = names()
    assert (await store.join(other, "p:x", "a", 1.0, 0, None, [(up2, 1)]))[:2] == (1, up2)


async def test_a_grant_reaches_the_waiting_process_within_10_ms(store: RedisLeaseStore) -> None:
    """The release that frees a slot grants it to the head of the queue and publishes it: the
    waiting process hears of it over its subscription (median of 20 under 10 ms)."""
    model, up = names()
    spec = [(up, 1)]
    heard: asyncio.Queue[tuple[str, str, float]] = asyncio.Queue()
    listener = store.listen(
        "proc", lambda t, u: heard.put_nowait((t, u, time.monotonic())), lambda: None
    )
    try:
        assert await listener.ready(5)
        holder, delays = "proc:holder", []
        assert await store.acquire(spec, holder, model) == 0
        for i in range(20):
            assert (await store.join(model, f"proc:{i}", "a", 1.0, 0, None, spec))[0] == 0
            released = time.monotonic()
            await store.release([(up, holder)])
            ticket, upstream, at = await asyncio.wait_for(heard.get(), 5)
            assert (ticket, upstream) == (f"proc:{i}", up)
            delays.append(at - released)
            holder = ticket
        delays.sort()
        assert delays[10] < 0.010, delays
    finally:
        await listener.close()


@pytest.mark.parametrize("seed", range(4))
async def test_the_store_queue_keeps_the_fair_queues_order(
    store: RedisLeaseStore, seed: int
) -> None:
    """Random joins (owners of shares 0.5 to 8, two priority classes), leaves and grants: the
    store's queue grants in exactly the order of the pure fair queue (``limits.fairqueue``)."""
    rng = random.Random(seed)
    model, up = names()
    spec = [(up, 1)]
    holder = "p:holder"
    assert await store.acquire(spec, holder, model) == 0
    pure: FairQueue[str] = FairQueue()
    waiting: dict[str, Entry[str]] = {}
    for n in range(150):
        roll = rng.random()
        if roll < 0.5 or not waiting:
            owner = rng.choice("abcd")
            share = {"a": 0.5, "b": 1.0, "c": 4.0, "d": 8.0}[owner]
            priority = 1 if rng.random() < 0.1 else 0
            ticket = f"p:{n}"
            assert (await store.join(model, ticket, owner, share, priority, None, spec))[0] == 0
            waiting[ticket] = pure.push(owner, share, priority, ticket)
        elif roll < 0.65:
            ticket = rng.choice(sorted(waiting))
            assert await store.leave(model, ticket) == 0
            pure.remove(waiting.pop(ticket))
        else:
            expected = pure.pop()
            assert expected is not None
            del waiting[expected.item]
            await store.release([(up, holder)])
            holder = await granted(store, up, exclude=set())
            assert holder == expected.item, n
