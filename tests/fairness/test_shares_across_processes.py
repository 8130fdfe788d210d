"""The figures of fair admission over two gateway processes on one Redis, in front of one
worker with capacity 8 (counted at the worker): owners with shares 1 and 4, each with far more
demand than capacity, are served 1:4 within ±10 %; a third owner with light traffic waits
p99 ≤ 1 s meanwhile; the worker never holds more than 8. A gateway process killed mid-run gives
its slots back within 5 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from tests.fairness.conftest import KEYS, Worker
from tests.multiprocess.conftest import Gateway

HEAVY_CLIENTS = 24  # per heavy owner: three times the capacity each


async def chat(http: aiohttp.ClientSession, gateway: Gateway, owner: str) -> int:
    async with http.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEYS[owner]}"},
        json={"model": "m", "messages": [{"role": "user", "content": owner}]},
    ) as reply:
        await reply.read()
        return reply.status


async def heavy(
    http: aiohttp.ClientSession, gateway: Gateway, owner: str, running: Callable[[], bool]
) -> list[int]:
    statuses = []
    while running():
        statuses.append(await chat(http, gateway, owner))
    return statuses


async def until(check: Callable[[], bool], seconds: float) -> float:
    """Seconds until ``check`` held, polled; fails past ``seconds``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, "condition not reached in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_shares_split_one_to_four_and_a_light_owner_waits_little(
    gateways: list[Gateway], worker: Worker
) -> None:
    stop = False
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = [
            asyncio.create_task(heavy(http, gateways[i % 2], owner, lambda: not stop))
            for owner in ("one", "four")
            for i in range(HEAVY_CLIENTS)
        ]
        await until(lambda: worker.held == 8, 10)  # saturated; queues fill
        await asyncio.sleep(1.0)  # the queues reach their steady depth
        before = worker.served.copy()
        waits = []
        for i in range(30):  # the light owner: one request at a time, every 0.1 s
            started = time.monotonic()
            assert await chat(http, gateways[i % 2], "light") == 200
            waits.append(time.monotonic() - started)
            await asyncio.sleep(0.1)
        served = worker.served - before
        stop = True
        statuses = [
            s for batch in await asyncio.wait_for(asyncio.gather(*tasks), 30) for s in batch
        ]
    assert set(statuses) == {200}
    assert worker.peak == 8
    ratio = served["four"] / served["one"]
    assert 3.6 <= ratio <= 4.4, served
    waits.sort()
    assert waits[int(len(waits) * 0.99) - 1] <= 1.0, waits  # p99 of 30: the 29th
    light = f"light waits p50 {waits[15]:.3f} s, max {waits[-1]:.3f} s"
    print(f"served {dict(served)}, ratio {ratio:.2f}; {light}")


async def test_a_killed_process_gives_its_slots_back_within_five_seconds(
    gateways: list[Gateway], worker: Worker
) -> None:
    doomed = gateways[0]
    stop = False
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def loop(gateway: Gateway, owner: str) -> None:
            while not stop:
                try:
                    await chat(http, gateway, owner)
                except aiohttp.ClientError:
                    if gateway is doomed:
                        return
                    raise

        tasks = [
            asyncio.create_task(loop(g, owner))
            for g in gateways
            for owner in ("one", "four")
            for _ in range(HEAVY_CLIENTS // 2)
        ]
        await until(lambda: worker.held == 8, 10)
        await asyncio.sleep(0.5)
        doomed.process.kill()
        await doomed.process.wait()
        killed = time.monotonic()
        await until(lambda: worker.held < 8, 2)  # its requests at the worker went with it
        await until(lambda: worker.held == 8, 5.0 - (time.monotonic() - killed))
        back = time.monotonic() - killed
        stop = True
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert worker.peak == 8
    print(f"slots back {back:.2f} s after the kill")
