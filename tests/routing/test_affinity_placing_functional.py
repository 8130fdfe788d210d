"""Affinity's bound across real gateway processes, placed by the shared store
(``routing.placing``): two ``gateway run`` processes on one real Redis, four real aiohttp
workers on loopback that hold every request until told and count what they hold. Requests of
one session (all wanting the same worker) are sent through both processes at once, in waves;
once the workers hold a wave, none holds more than ``ceil(load_factor x held / workers)``.
Before the store placed them, each process counted the other's requests only as told, and two
processes placing at once could both take a worker's last place under the bound.

(The check is made once the workers hold the whole wave, not at each arrival: a request placed
later may reach its worker before one placed earlier reaches its own, so the workers' count at
an arrival can lag the placements the store counted.)

A process that dies leaves its leases: the bound counts them until they expire, then the
fleet is empty again for the others."""

from __future__ import annotations

import asyncio
import math
import pathlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.store.capacity import LEASE_SECONDS
from gateway.store.capacity_redis import PREFIX
from tests.clients import AUTH
from tests.redis_server import RedisServer
from tests.routing.support import Worker, config, stop_all, until
from tests.routing.test_fleet_functional import Process, start

LOAD_FACTOR = 1.25
NAMES = ("w0", "w1", "w2", "w3")
BODY = {"model": "m", "session_id": "one", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Counting(Worker):
    """A worker that counts the chats it holds (arrived, not yet answered)."""

    held: int = 0

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if request.path.endswith("/health") or request.method == "GET":
            return await super()._answer(request, body)
        self.held += 1
        try:
            return await super()._answer(request, body)
        finally:
            self.held -= 1


@pytest.fixture
async def fleet() -> AsyncIterator[list[Counting]]:
    started = []
    for name in NAMES:
        worker = Counting(name=name, gate=asyncio.Event())
        await worker.start()
        started.append(worker)
    yield started
    for worker in started:
        assert worker.gate is not None
        worker.gate.set()
    await stop_all(list(started))


@pytest.fixture
async def two(
    tmp_path: pathlib.Path, fleet: list[Counting], redis_url: str
) -> AsyncIterator[tuple[Process, Process]]:
    timeouts = {"connect": 2, "first_byte": 60, "idle": 60}
    upstreams = {w.name: {"url": w.url, "timeouts": timeouts} for w in fleet}
    routing = {"policy": "affinity", "load_factor": LOAD_FACTOR}
    model = {"upstreams": list(NAMES), "routing": routing, "retry": {"attempts": 1}}
    text = config(upstreams, {"m": model}, f"store: {{url: '{redis_url}'}}\n")
    a, b = await asyncio.gather(start(tmp_path, text), start(tmp_path, text))
    yield a, b
    for p in (a, b):
        if p.process.returncode is None:
            p.process.terminate()
    for p in (a, b):
        await asyncio.wait_for(p.process.wait(), 20)


def bound(held: int) -> int:
    return math.ceil(LOAD_FACTOR * held / len(NAMES) - 1e-9)


async def send(http: aiohttp.ClientSession, p: Process) -> int:
    url = f"http://127.0.0.1:{p.port}/v1/chat/completions"
    async with http.post(url, json=BODY, headers=AUTH) as r:
        await r.read()
        return r.status


def live_leases(redis: RedisServer) -> int:
    """Leases not expired over the four workers' lease sets."""
    now = int(redis.call("TIME").split()[0]) * 1000
    return sum(int(redis.call("ZCOUNT", PREFIX + n, str(now), "+inf")) for n in NAMES)


async def settled(http: aiohttp.ClientSession, two: tuple[Process, Process]) -> None:
    """Every process counts nothing in flight anywhere (told, and in the store)."""

    async def idle(p: Process) -> bool:
        return not any((await p.fleet_loads(http)).values())

    for p in two:
        await until(lambda p=p: idle(p), 5, "the ends told")


async def test_requests_placed_at_once_through_two_processes_stay_under_the_fleet_bound(
    two: tuple[Process, Process], fleet: list[Counting], redis_process: RedisServer
) -> None:
    """Waves of one session's requests through both processes at once, each wave while the
    one before it is held (16, then 24 held...), then all answered and a wave from empty: at
    every wave's end the busiest worker is within the bound of what the workers hold."""
    async with aiohttp.ClientSession() as http:
        for round_ in range(3):
            sent: list[asyncio.Task[int]] = []
            for wave in (2, 6, 8, 16, 8):
                sent += [asyncio.create_task(send(http, two[i % 2])) for i in range(wave)]
                n = len(sent)
                await until(lambda n=n: sum(w.held for w in fleet) == n, 10, "wave held")
                counts = {w.name: w.held for w in fleet}
                assert max(counts.values()) <= bound(len(sent)), (round_, len(sent), counts)
            for worker in fleet:
                assert worker.gate is not None
                worker.gate.set()
            assert await asyncio.gather(*sent) == [200] * len(sent)
            for worker in fleet:
                worker.gate = asyncio.Event()
            await until(lambda: live_leases(redis_process) == 0, 5, "the leases given back")
            await settled(http, two)


async def test_a_dead_process_s_placements_count_until_their_leases_expire(
    two: tuple[Process, Process], fleet: list[Counting], redis_process: RedisServer
) -> None:
    """A process holding 8 requests of the session is killed: its leases still count in the
    other's bound (its next request of the session goes past the session's worker), and once
    they expire (a lease time) the other places on an empty fleet again: the session's
    worker."""
    a, b = two
    async with aiohttp.ClientSession() as http:
        first = asyncio.create_task(send(http, b))
        await until(lambda: sum(w.held for w in fleet) == 1, 10, "the first held")
        home = next(w for w in fleet if w.held)  # the session's worker on an empty fleet
        assert home.gate is not None
        home.gate.set()
        assert await first == 200
        home.gate = asyncio.Event()
        await until(lambda: live_leases(redis_process) == 0, 5, "its lease given back")

        held = [asyncio.create_task(send(http, a)) for _ in range(8)]
        await until(lambda: live_leases(redis_process) == 8, 10, "eight placed")
        a.process.send_signal(signal.SIGKILL)
        await a.process.wait()
        for task in held:
            with pytest.raises(aiohttp.ClientError):
                await task
        assert live_leases(redis_process) == 8  # the dead process's, not yet expired

        before = {w.name: w.chats for w in fleet}
        elsewhere = asyncio.create_task(send(http, b))
        await until(lambda: sum(w.chats for w in fleet) == sum(before.values()) + 1, 10)
        assert home.chats == before[home.name], "the dead process's leases did not count"

        loop = asyncio.get_running_loop()
        started = loop.time()
        await until(lambda: live_leases(redis_process) == 1, LEASE_SECONDS + 3, "expired")
        assert loop.time() - started <= LEASE_SECONDS + 1
        before = {w.name: w.chats for w in fleet}
        back = asyncio.create_task(send(http, b))
        await until(lambda: home.chats == before[home.name] + 1, 10, "placed at home again")
        for worker in fleet:
            assert worker.gate is not None
            worker.gate.set()
        assert await asyncio.gather(elsewhere, back) == [200, 200]
