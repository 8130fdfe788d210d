"""The pool of idle leases (``routing.capacity_pool``): a process keeps a lease its request freed
for its next request to the same upstream, with no store call, only while the store says the
upstream has room to spare and nobody waits for it; the first request that starts to wait, in
any process, makes every process give its idle leases back at once, so the cap stays exact
and a freed slot still goes to the head of the queue."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.server import Server
from gateway.store.capacity import ROOMY
from gateway.store.capacity_grants import WANTED
from gateway.store.capacity_redis import PREFIX, RedisLeaseStore
from tests.clients import TEST_KEY
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream, completion
from tests.redis_server import RedisServer


@pytest.fixture(params=["redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisLeaseStore]:
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    s = RedisLeaseStore(url, 2000, 30.0)
    yield s
    await s.close()


async def test_the_store_tells_room_to_spare_with_a_lease(store: RedisLeaseStore) -> None:
    """ROOMY while a quarter of the cap (and 2) stays free after the slot and nobody waits;
    a renewal says the same when asked again."""
    up = f"gpu-{uuid.uuid4().hex[:6]}"
    got = [await store.acquire_now([(up, 8)], f"p:{i}", None, True) for i in range(8)]
    assert got == [ROOMY] * 6 + [0, 0]  # 6 held leave 2 (a quarter of 8) free
    assert await store.acquire_now([(up, 8)], "p:x", None, False) == -1
    assert (await store.renew([], [(up, 8), (up, 100)])).room == [False, True]
    await store.release([(up, "p:7"), (up, "p:6"), (up, "p:5")])
    assert (await store.renew([(up, "p:0")], [(up, 8)])).room == [True]
    assert await store.acquire_now([(up, 8)], "p:plain", None, False) == 0  # not asked: plain


async def test_nobody_has_room_to_spare_while_a_request_waits(store: RedisLeaseStore) -> None:
    """A request waiting for the upstream (any model's): no ROOMY, and a renewal says no."""
    model, up = f"m-{uuid.uuid4().hex[:6]}", f"gpu-{uuid.uuid4().hex[:6]}"
    assert await store.acquire([(up, 1)], "p:holder", model) == 0
    assert (await store.join(model, "p:t1", "o", 1.0, 0, None, [(up, 1)]))[0] == 0
    assert await store.acquire_now([(up, 100)], "p:other", None, True) == 0
    assert (await store.renew([], [(up, 100)])).room == [False]
    await store.release([(up, "p:holder"), (up, "p:t1"), (up, "p:other")])
    assert (await store.renew([], [(up, 100)])).room == [True]


async def test_the_first_request_to_wait_for_an_upstream_is_published(
    store: RedisLeaseStore,
) -> None:
    """``gw:wanted`` names the upstreams a request started to wait for, once per busy spell
    (the next waiter of the same upstream publishes nothing)."""
    model, up = f"m-{uuid.uuid4().hex[:6]}", f"gpu-{uuid.uuid4().hex[:6]}"
    heard: asyncio.Queue[list[str]] = asyncio.Queue()
    listener = store.listen("proc", lambda t, u: None, lambda: None, heard.put_nowait)
    try:
        assert await listener.ready(5)
        assert await store.acquire([(up, 1)], "p:holder", model) == 0
        assert (await store.join(model, "p:t1", "o", 1.0, 0, None, [(up, 1)]))[0] == 0
        assert await asyncio.wait_for(heard.get(), 5) == [up]
        assert (await store.join(model, "p:t2", "o", 1.0, 0, None, [(up, 1)]))[0] == 0
        await store.release([(up, "p:holder")])  # granted to t1: still busy, t2 waits
        assert await store.leave(model, "p:t2") == 0
        await store.release([(up, "p:t1")])  # nobody waits any more
        assert (await store.join(model, "p:t3", "o", 1.0, 0, None, [(up, 1)]))[0] == 1
        assert await store.acquire([(up, 1)], "p:t4", None) == -1
        assert (await store.join(model, "p:t5", "o", 1.0, 0, None, [(up, 1)]))[0] == 0
        assert await asyncio.wait_for(heard.get(), 5) == [up]  # a new busy spell
        assert heard.empty()
    finally:
        await listener.close()


async def test_a_notice_reaches_every_process_within_10_ms(store: RedisLeaseStore) -> None:
    """Between a request starting to wait and a process keeping idle leases hearing of it:
    the median of 20 busy spells under 10 ms."""
    model, up = f"m-{uuid.uuid4().hex[:6]}", f"gpu-{uuid.uuid4().hex[:6]}"
    heard: asyncio.Queue[float] = asyncio.Queue()
    listener = store.listen(
        "proc", lambda t, u: None, lambda: None, lambda _: heard.put_nowait(time.monotonic())
    )
    try:
        assert await listener.ready(5)
        delays = []
        for i in range(20):
            assert await store.acquire([(up, 1)], f"p:h{i}", model) == 0
            joined = time.monotonic()
            assert (await store.join(model, f"p:w{i}", "o", 1.0, 0, None, [(up, 1)]))[0] == 0
            delays.append(await asyncio.wait_for(heard.get(), 5) - joined)
            assert await store.leave(model, f"p:w{i}") == 0
            await store.release([(up, f"p:h{i}")])
        delays.sort()
        assert delays[10] < 0.010, delays
    finally:
        await listener.close()


# -- over real sockets: gateways, a worker that reads the lease set while it holds a request --


class Worker:
    """Answers at once, or holds requests whose message is ``hold`` until ``gate``; records
    the lease ids in the upstream's lease set while each request is held, and the peak."""

    def __init__(self, redis: RedisServer, upstream: str) -> None:
        self.redis, self.key = redis, PREFIX + upstream
        self.gate = asyncio.Event()
        self.held = self.peak = 0
        self.seen: list[set[str]] = []
        self.arrived: dict[str, float] = {}

    async def __call__(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        who = str(body["messages"][0]["content"])
        self.held += 1
        self.peak = max(self.peak, self.held)
        self.arrived[who] = time.monotonic()
        try:
            self.seen.append(set(self.redis.call("ZRANGE", self.key, "0", "-1").split()))
            if who.startswith("hold"):
                await self.gate.wait()
        finally:
            self.held -= 1
        return web.json_response(completion("done"))


def capped(url: str, upstream: str, cap: int, store: str) -> str:
    text = gateway_yaml(
        {upstream: url}, {"m": {"upstreams": [upstream]}}, extra=f"store: {{url: '{store}'}}\n"
    )
    return text.replace(f"url: '{url}',", f"url: '{url}', max_concurrency: {cap},")


async def chat(http: aiohttp.ClientSession, server: Server, who: str) -> int:
    async with http.post(
        f"http://127.0.0.1:{server.port}/v1/chat/completions",
        headers={"Authorization": f"Bearer {TEST_KEY}"},
        json={"model": "m", "messages": [{"role": "user", "content": who}]},
    ) as reply:
        orjson.loads(await reply.read())
        return reply.status


async def subscribed(redis: RedisServer, processes: int) -> None:
    """Every gateway hears the store's notices (its subscription is up)."""
    deadline = time.monotonic() + 5
    while int(redis.call("PUBSUB", "NUMSUB", WANTED).split()[-1]) < processes:
        assert time.monotonic() < deadline, "the gateways did not subscribe"
        await asyncio.sleep(0.01)


async def test_sequential_requests_reuse_one_lease_with_no_store_call(
    gateway_factory: GatewayFactory, fake: FakeUpstream, redis_process: RedisServer
) -> None:
    """A capped upstream far from full: 30 requests one after the other hold the same lease
    (a store call would have made a new one: 30 ids without the pool)."""
    assert redis_process.call("FLUSHALL") == "OK"
    up = f"gpu-{uuid.uuid4().hex[:6]}"
    worker = Worker(redis_process, up)
    fake.script = worker
    server = await gateway_factory(capped(fake.url, up, 64, redis_process.url))
    await subscribed(redis_process, 1)
    async with aiohttp.ClientSession() as http:
        for i in range(32):
            assert await chat(http, server, f"q{i}") == 200
    leases = set().union(*worker.seen[2:])  # the first reply may come before the subscription
    assert len(leases) <= 3, leases
    assert all(len(seen) == 1 for seen in worker.seen)


async def test_an_idle_lease_goes_back_at_once_when_a_request_starts_to_wait(
    gateway_factory: GatewayFactory, fake: FakeUpstream, redis_process: RedisServer
) -> None:
    """Two gateways, cap 8: the first keeps one lease busy or idle (requests one after the
    other); the second holds 7 and sends an 8th, which waits: the first gives its lease back
    at once and the 8th reaches the worker well within the second the pool would have kept it
    without the store's notice (until its renewal asked again; everything here shares one
    loop); the first's next request waits behind it, and the worker never holds more than 8."""
    assert redis_process.call("FLUSHALL") == "OK"
    up = f"gpu-{uuid.uuid4().hex[:6]}"
    worker = Worker(redis_process, up)
    fake.script = worker
    first, second = [
        await gateway_factory(capped(fake.url, up, 8, redis_process.url)) for _ in range(2)
    ]
    await subscribed(redis_process, 2)
    async with aiohttp.ClientSession() as http:
        for i in range(4):  # the first gateway now keeps its lease between requests
            assert await chat(http, first, f"warm{i}") == 200
        stop = asyncio.Event()

        async def steady() -> int:
            n = 0
            while not stop.is_set():
                assert await chat(http, first, f"quick{n}") == 200
                n += 1
            return n

        loop = asyncio.create_task(steady())
        holders = [asyncio.create_task(chat(http, second, f"hold{i}")) for i in range(7)]
        deadline = time.monotonic() + 10
        while sum(who.startswith("hold") for who in worker.arrived) < 7:
            assert time.monotonic() < deadline, worker.arrived
            await asyncio.sleep(0.005)
        sent = time.monotonic()
        waiter = asyncio.create_task(chat(http, second, "hold-waiter"))
        while "hold-waiter" not in worker.arrived:
            assert time.monotonic() - sent < 5, "the waiting request was never served"
            await asyncio.sleep(0.002)
        assert worker.arrived["hold-waiter"] - sent < 0.4  # ~0.93 s without the notice
        stop.set()
        worker.gate.set()
        assert await asyncio.wait_for(asyncio.gather(*holders, waiter), 10) == [200] * 8
        await asyncio.wait_for(loop, 10)
    assert worker.peak <= 8


async def test_a_kept_lease_that_redis_lost_is_dropped_at_the_next_renewal(
    gateway_factory: GatewayFactory, fake: FakeUpstream, redis_process: RedisServer
) -> None:
    """Redis loses its data (a restart without persistence, a failover) while a gateway keeps
    a lease: the renewal finds it gone, and the next requests take a lease Redis counts again
    (kept, the forgotten lease would serve uncounted for as long as it is reused)."""
    assert redis_process.call("FLUSHALL") == "OK"
    up = f"gpu-{uuid.uuid4().hex[:6]}"
    worker = Worker(redis_process, up)
    fake.script = worker
    server = await gateway_factory(capped(fake.url, up, 64, redis_process.url))
    await subscribed(redis_process, 1)
    async with aiohttp.ClientSession() as http:
        for i in range(4):
            assert await chat(http, server, f"warm{i}") == 200
        assert len(worker.seen[-1]) == 1
        assert redis_process.call("FLUSHALL") == "OK"  # the subscription lives on
        deadline = time.monotonic() + 5
        n = 0
        while True:
            assert await chat(http, server, f"after{n}") == 200
            if len(worker.seen[-1]) == 1:
                break
            assert time.monotonic() < deadline, "the forgotten lease was still reused"
            n += 1
