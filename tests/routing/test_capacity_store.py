"""The lease stores (``store.capacity``): the memory twin and Redis (standalone and Cluster)
agree on taking, refusing, renewing, releasing and expiring upstream slots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.clock import FakeClock
from gateway.store.capacity import LeaseStore
from gateway.store.capacity_memory import MemoryLeaseStore
from gateway.store.capacity_redis import RedisLeaseStore

LEASE = 0.3  # seconds: short, so that expiry is seen within the test

Expire = Callable[[], Awaitable[None]]


@pytest.fixture(params=["memory", "redis", "cluster"])
async def leases(request: pytest.FixtureRequest) -> AsyncIterator[tuple[LeaseStore, Expire]]:
    if request.param == "memory":
        clock = FakeClock()
        memory = MemoryLeaseStore(clock, LEASE)

        async def advance() -> None:
            clock.advance(LEASE + 0.01)

        yield memory, advance
        return
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    store = RedisLeaseStore(url, 2000, LEASE)

    async def pass_lease_time() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # polled with a deadline: Redis expires by its clock
            if not await store.held("gpu"):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the lease did not expire within 5 s")

    yield store, pass_lease_time
    await store.close()


async def test_slots_are_taken_in_order_and_refused_when_full(
    leases: tuple[LeaseStore, Expire],
) -> None:
    store, _ = leases
    both = [("gpu", 1), ("cpu", 2)]
    assert [await store.acquire(both, f"l{i}") for i in range(4)] == [0, 1, 1, -1]
    assert (await store.held("gpu"), await store.held("cpu")) == (1, 2)
    await store.release([("cpu", "l1")])
    assert await store.acquire(both, "l4") == 1
    assert await store.acquire(both, "l5") == -1


async def test_a_lease_not_renewed_expires_and_its_slot_comes_back(
    leases: tuple[LeaseStore, Expire],
) -> None:
    """The slot of a process that stopped renewing (it died) is free again after one lease
    time; a renewal of an expired lease does not revive it."""
    store, expire = leases
    assert await store.acquire([("gpu", 1)], "dead") == 0
    assert await store.acquire([("gpu", 1)], "other") == -1
    await expire()
    await store.renew([("gpu", "dead")])
    assert await store.acquire([("gpu", 1)], "other") == 0


async def test_renewed_leases_stay_held(leases: tuple[LeaseStore, Expire]) -> None:
    store, _ = leases
    assert await store.acquire([("gpu", 1)], "alive") == 0
    await store.renew([("gpu", "alive")])
    assert await store.held("gpu") == 1
    assert await store.acquire([("gpu", 1)], "other") == -1
