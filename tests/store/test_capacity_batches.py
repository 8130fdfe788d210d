"""Upstream lease acquisitions asked for in one turn of the loop go to Redis as one script call
(``store.capacity_batch``), each decided exactly as it would be alone, one after the other; and
a lease Redis took for a caller that no longer waits (its reply late, lost with the connection,
or its caller gone) is given back at once, not held for its lease time."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clock import SystemClock
from gateway.config.schema import Scheduling, Upstream
from gateway.metrics import Metrics
from gateway.routing.balancer import Balancer
from gateway.routing.capacity import Capacity
from gateway.store.base import StoreError, StoreLost
from gateway.store.capacity import Bound
from gateway.store.capacity_batch import BATCH
from gateway.store.capacity_redis import PREFIX, RedisLeaseStore, queue_key
from tests.faultproxy import FaultProxy
from tests.redis_server import RedisServer
from tests.store.test_admission_batches import evalsha_calls

HYPOTHESIS = settings(
    deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
UPSTREAMS = ("a", "b", "c")
LONG = 60.0  # seconds: a lease that comes back within the test was given back, not expired
_ids = itertools.count()

Ask = tuple[list[str], str | None]  # its upstreams in its order, the model it may not pass

_ask = st.tuples(
    st.lists(st.sampled_from(UPSTREAMS), min_size=1, max_size=3, unique=True),
    st.sampled_from([None, "idle", "busy"]),  # "busy": its model's queue has someone waiting
)
_caps = st.fixed_dictionaries({u: st.integers(0, 3) for u in UPSTREAMS})
_seeded = st.fixed_dictionaries(  # per upstream: leases live, and leases a dead process left
    {u: st.tuples(st.integers(0, 2), st.integers(0, 2)) for u in UPSTREAMS}
)


def reference(
    asks: list[Ask], caps: dict[str, int], live: dict[str, int]
) -> tuple[list[int], dict[str, int]]:
    """The contract, one request after the other: the first of its upstreams with a free slot
    (expired leases not counted), none while its model's queue has someone waiting."""
    held, got = dict(live), []
    for upstreams, queue in asks:
        index = -1
        if queue != "busy":
            for i, name in enumerate(upstreams):
                if held[name] < caps[name]:
                    held[name] += 1
                    index = i
                    break
        got.append(index)
    return got, held


async def seed(store: RedisLeaseStore, seeded: dict[str, tuple[int, int]]) -> None:
    seconds, _ = await store.transport.call("TIME")
    now = int(seconds) * 1000
    for name, (live, dead) in seeded.items():
        for i in range(live):
            await store.transport.call("ZADD", PREFIX + name, now + 60_000, f"live{i}")
        for i in range(dead):
            await store.transport.call("ZADD", PREFIX + name, now - 1000 - i, f"dead{i}")
    await store.transport.call("ZADD", queue_key("busy"), 0, "someone")


async def live_leases(store: RedisLeaseStore) -> dict[str, set[str]]:
    seconds, micros = await store.transport.call("TIME")
    now = int(seconds) * 1000 + int(micros) // 1000
    out = {}
    for name in UPSTREAMS:
        members = await store.transport.call("ZRANGEBYSCORE", PREFIX + name, now + 1, "+inf")
        out[name] = {m.decode() for m in members}
    return out


async def warm(store: RedisLeaseStore) -> None:
    """Connected and the script loaded, on an upstream of its own: what is counted next is the
    batch alone."""
    assert await store.acquire([("warm-up", 1)], "warm") == 0


@HYPOTHESIS
@given(asks=st.lists(_ask, min_size=1, max_size=12), caps=_caps, seeded=_seeded)
async def test_a_batch_decides_as_one_by_one(
    redis_process: RedisServer,
    asks: list[Ask],
    caps: dict[str, int],
    seeded: dict[str, tuple[int, int]],
) -> None:
    expected, counts = reference(asks, caps, {u: live for u, (live, _) in seeded.items()})
    outcomes = []
    for together in (True, False):
        assert redis_process.call("FLUSHALL") == "OK"
        store = RedisLeaseStore(redis_process.url, 5000, LONG)
        try:
            await warm(store)
            await seed(store, seeded)
            calls = [([(u, caps[u]) for u in ups], f"l{i}", q) for i, (ups, q) in enumerate(asks)]
            before = evalsha_calls(redis_process)
            if together:
                got = list(await asyncio.gather(*(store.acquire_now(*c) for c in calls)))
                assert evalsha_calls(redis_process) - before == 1
            else:
                got = [await store.acquire(*c) for c in calls]  # each in a turn of its own
                assert evalsha_calls(redis_process) - before == len(asks)
            assert got == expected
            leases = await live_leases(store)
            assert {u: len(held) for u, held in leases.items()} == counts
            outcomes.append(leases)
        finally:
            await store.close()
    assert outcomes[0] == outcomes[1]  # the same leases, in the same sets


@pytest.mark.parametrize("count", [1, BATCH - 1, BATCH + 6])
async def test_leases_asked_together_go_in_one_call_per_batch(
    redis_process: RedisServer, count: int
) -> None:
    """``count`` requests for an upstream of 5 slots in one turn: the first 5 in the order asked
    get one, in ceil(count / BATCH) calls (one call each would be ``count``)."""
    assert redis_process.call("FLUSHALL") == "OK"
    store = RedisLeaseStore(redis_process.url, 5000, LONG)
    try:
        await warm(store)
        before = evalsha_calls(redis_process)
        got = await asyncio.gather(
            *(store.acquire_now([("gpu", 5)], f"l{i}") for i in range(count))
        )
        assert got == [0 if i < 5 else -1 for i in range(count)]
        assert evalsha_calls(redis_process) - before == -(-count // BATCH)
    finally:
        await store.close()


async def test_a_batch_that_meets_an_unloaded_script_is_sent_again(
    redis_process: RedisServer,
) -> None:
    """After a restart or SCRIPT FLUSH Redis does not know the script (NOSCRIPT: it ran
    nothing): the batch is loaded and sent again, and decided once."""
    assert redis_process.call("FLUSHALL") == "OK"
    store = RedisLeaseStore(redis_process.url, 5000, LONG)
    try:
        await warm(store)
        assert redis_process.call("SCRIPT", "FLUSH") == "OK"
        got = await asyncio.gather(*(store.acquire_now([("gpu", 2)], f"l{i}") for i in range(3)))
        assert list(got) == [0, 0, -1]
        assert redis_process.call("ZCARD", PREFIX + "gpu") == "2"
    finally:
        await store.close()


async def test_on_a_cluster_a_batch_decides_as_one_by_one(cluster_url: str) -> None:
    store = RedisLeaseStore(cluster_url, 5000, LONG)
    try:
        await store.transport.call("ZADD", queue_key("busy"), 0, "someone")
        asks: list[Ask] = [(["a", "b"], None)] * 3 + [(["b"], "busy"), (["b", "a"], "idle")] * 2
        caps = {"a": 2, "b": 1, "c": 0}
        expected, counts = reference(asks, caps, dict.fromkeys(UPSTREAMS, 0))
        got = await asyncio.gather(
            *(
                store.acquire_now([(u, caps[u]) for u in ups], f"l{i}", q)
                for i, (ups, q) in enumerate(asks)
            )
        )
        assert list(got) == expected
        assert {u: len(held) for u, held in (await live_leases(store)).items()} == counts
    finally:
        await store.close()


def service(leases: RedisLeaseStore) -> Capacity:
    clock = SystemClock()
    return Capacity(Balancer(clock), clock, Metrics(), Scheduling(), leases)


async def test_the_capacity_service_asks_for_its_leases_together(
    redis_process: RedisServer,
) -> None:
    """Requests of one turn of the loop that take a capped upstream's slot: one store call."""
    assert redis_process.call("FLUSHALL") == "OK"
    leases = RedisLeaseStore(redis_process.url, 5000, LONG)
    capacity = service(leases)
    gpu = Upstream(name="gpu", url="http://127.0.0.1:9", max_concurrency=8)
    try:
        await warm(leases)
        before = evalsha_calls(redis_process)
        taken = await asyncio.gather(*(capacity.take(gpu) for _ in range(12)))
        assert evalsha_calls(redis_process) - before == 1
        assert taken == [gpu] * 8 + [None] * 4
        assert redis_process.call("ZCARD", PREFIX + "gpu") == "8"
    finally:
        await capacity.close()


async def test_the_leases_freed_in_one_turn_go_back_in_one_call(
    redis_process: RedisServer,
) -> None:
    assert redis_process.call("FLUSHALL") == "OK"
    leases = RedisLeaseStore(redis_process.url, 5000, LONG)
    capacity = service(leases)
    gpu = Upstream(name="gpu", url="http://127.0.0.1:9", max_concurrency=8)
    try:
        await warm(leases)
        for taken in await asyncio.gather(*(capacity.take(gpu) for _ in range(8))):
            assert taken is gpu
            capacity.balancer.acquire(gpu)
        before = evalsha_calls(redis_process)
        for _ in range(8):
            capacity.balancer.release(gpu)
        await _given_back(leases, redis_process, taken=8)
        assert evalsha_calls(redis_process) - before == 2  # the release, and the check's take
    finally:
        await capacity.close()


async def test_a_turns_releases_ride_its_acquisitions_and_go_first(
    redis_process: RedisServer,
) -> None:
    """A lease given back and a slot asked for in the same turn: one call, the release first
    (so the newcomer gets the freed slot)."""
    assert redis_process.call("FLUSHALL") == "OK"
    leases = RedisLeaseStore(redis_process.url, 5000, LONG)
    try:
        await warm(leases)
        assert await leases.acquire([("gpu", 1)], "old") == 0
        before = evalsha_calls(redis_process)
        leases.release_now([("gpu", "old")])
        assert await leases.acquire_now([("gpu", 1)], "new") == 0
        assert evalsha_calls(redis_process) - before == 1
        assert redis_process.call("ZRANGE", PREFIX + "gpu", "0", "-1") == "new"
    finally:
        await leases.close()


async def test_a_slot_freed_in_a_turn_goes_to_the_waiting_not_to_its_newcomer(
    redis_process: RedisServer,
) -> None:
    """A request waits in the model's queue: the slot given back goes to it, and a newcomer
    asking in the same turn (the same call) does not pass it."""
    assert redis_process.call("FLUSHALL") == "OK"
    leases = RedisLeaseStore(redis_process.url, 5000, LONG)
    try:
        await warm(leases)
        assert await leases.acquire([("gpu", 1)], "old") == 0
        joined = await leases.join("m", "p1:t1", "o", 1.0, 0, None, [("gpu", 1)])
        assert joined[0] == 0  # waiting
        leases.release_now([("gpu", "old")])
        assert await leases.acquire_now([("gpu", 1)], "new", "m") == -1
        assert redis_process.call("ZRANGE", PREFIX + "gpu", "0", "-1") == "p1:t1"
    finally:
        await leases.close()


async def _ran(redis_process: RedisServer, upstream: str = "gpu") -> None:
    """Until Redis holds the lease (the script ran), within 5 s."""
    deadline = asyncio.get_running_loop().time() + 5
    while redis_process.call("ZCARD", PREFIX + upstream) != "1":
        assert asyncio.get_running_loop().time() < deadline, "the acquisition never ran"
        await asyncio.sleep(0.005)


async def _given_back(store: RedisLeaseStore, redis_process: RedisServer, taken: int = 1) -> None:
    """The slots are free again within 3 s (a lease would live ``LONG``)."""
    deadline = asyncio.get_running_loop().time() + 3
    while redis_process.call("ZCARD", PREFIX + "gpu") != "0":
        assert asyncio.get_running_loop().time() < deadline, "the lease was not given back"
        await asyncio.sleep(0.01)
    assert await store.acquire([("gpu", taken)], "next") == 0


@pytest.fixture
async def proxy(redis_process: RedisServer) -> AsyncIterator[FaultProxy]:
    assert redis_process.call("FLUSHALL") == "OK"
    relay = FaultProxy(redis_process.port)
    await relay.start()
    yield relay
    await relay.stop()


@pytest.mark.parametrize("timeout_ms", [5000, 100], ids=["caller_waiting", "caller_timed_out"])
async def test_a_lease_whose_reply_is_lost_is_given_back(
    redis_process: RedisServer, proxy: FaultProxy, timeout_ms: int
) -> None:
    """Redis takes the slot, then the connection dies before the reply reaches the gateway
    (its caller still waiting, or failed already by the store's time): the slot is given back,
    not held for the lease's life."""
    store = RedisLeaseStore(f"redis://127.0.0.1:{proxy.port}", timeout_ms, LONG)
    try:
        await warm(store)
        proxy.set("mute")
        asking = store.acquire_now([("gpu", 1)], "lost")
        await _ran(redis_process)
        if timeout_ms < 1000:
            with pytest.raises(StoreError):
                await asyncio.shield(asking)
        proxy.set("reset")  # the connection dies, the reply with it
        with pytest.raises(StoreError) as failed:
            await asking
        assert isinstance(failed.value, StoreLost) == (timeout_ms > 1000)
        proxy.set("pass")
        await _given_back(store, redis_process)
    finally:
        await store.close()


async def test_a_lease_whose_reply_comes_too_late_is_given_back(
    redis_process: RedisServer, proxy: FaultProxy
) -> None:
    """The reply comes after the store's time: the caller was told it failed (and went on
    without a lease), and the slot Redis took meanwhile is given back when the reply lands."""
    store = RedisLeaseStore(f"redis://127.0.0.1:{proxy.port}", 100, LONG)
    try:
        await warm(store)
        proxy.set("latency", delay=0.5)
        with pytest.raises(StoreError):
            await store.acquire([("gpu", 1)], "late")
        await _ran(redis_process)  # taken after the caller's time, the reply on its way
        proxy.set("pass")
        await _given_back(store, redis_process)
    finally:
        await store.close()


async def test_a_request_that_leaves_gives_its_lease_back(
    redis_process: RedisServer, proxy: FaultProxy
) -> None:
    """A request cancelled (its client left) while its slot is being taken: when the answer
    comes, the slot goes back."""
    leases = RedisLeaseStore(f"redis://127.0.0.1:{proxy.port}", 5000, LONG)
    capacity = service(leases)
    gpu = Upstream(name="gpu", url="http://127.0.0.1:9", max_concurrency=1)
    try:
        await warm(leases)
        proxy.set("latency", delay=0.3)
        leaving = asyncio.create_task(capacity.take(gpu))
        await _ran(redis_process)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        proxy.set("pass")
        await _given_back(leases, redis_process)
    finally:
        await capacity.close()


class LeavingAsAnswered(RedisLeaseStore):
    """The real store, whose caller is cancelled just as its answer arrives (the future done,
    the caller not yet resumed)."""

    leaving: asyncio.Task[object] | None = None

    def acquire_now(
        self,
        candidates: Sequence[tuple[str, int]],
        lease: str,
        queue: str | None = None,
        room: bool = False,
        bound: Bound | None = None,
    ) -> asyncio.Future[int]:
        asking = super().acquire_now(candidates, lease, queue, room, bound)
        asking.add_done_callback(lambda _: self.leaving and self.leaving.cancel())
        return asking


async def test_a_request_that_leaves_as_its_lease_arrives_gives_it_back(
    redis_process: RedisServer,
) -> None:
    assert redis_process.call("FLUSHALL") == "OK"
    leases = LeavingAsAnswered(redis_process.url, 5000, LONG)
    capacity = service(leases)
    gpu = Upstream(name="gpu", url="http://127.0.0.1:9", max_concurrency=1)
    try:
        await warm(leases)
        leases.leaving = asyncio.create_task(capacity.take(gpu))
        with pytest.raises(asyncio.CancelledError):
            await leases.leaving
        await _given_back(leases, redis_process)
    finally:
        await capacity.close()


async def test_a_give_back_that_meets_a_broken_connection_is_tried_again(
    redis_process: RedisServer, proxy: FaultProxy
) -> None:
    """A lease given back over a connection that dies before Redis gets it, the store refusing
    the next connection too: it is sent again a moment later, not left held for its life (found
    by review: a failed give-back was only logged)."""
    store = RedisLeaseStore(f"redis://127.0.0.1:{proxy.port}", 5000, LONG)
    try:
        await warm(store)
        assert await store.acquire([("gpu", 1)], "held") == 0
        proxy.set("blackhole")  # what is sent from now on never reaches Redis
        store.release_now([("gpu", "held")])
        await asyncio.sleep(0)  # the end of this turn: the release goes out (into the hole)
        tried = proxy.connections
        proxy.set("reset")  # the connection dies; the give-back's first try is refused
        deadline = asyncio.get_running_loop().time() + 5
        while proxy.connections == tried:  # until the give-back tried (and was refused)
            assert asyncio.get_running_loop().time() < deadline, "the give-back never tried"
            await asyncio.sleep(0.005)
        assert redis_process.call("ZCARD", PREFIX + "gpu") == "1"
        proxy.set("pass")
        await _given_back(store, redis_process)
    finally:
        await store.close()
