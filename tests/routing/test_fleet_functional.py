"""The fleet's loads across real gateway processes: two ``gateway run`` processes on one real
Redis, four real aiohttp workers that hold every request until told, the requests counted at
the workers. Each process tells the other its requests in flight per worker
(``routing.loads``), so affinity's bound is the fleet's: a conversation's requests sent through
both processes never crowd one worker past ``ceil(load_factor x mean)``, and both processes
agree on every worker's load with what the workers hold. Without the tells each process saw
only its own requests and both filled the conversation's worker."""

from __future__ import annotations

import asyncio
import math
import pathlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.clients import AUTH
from tests.redis_server import free_port
from tests.routing.support import Worker, config, stop_all, until, workers

LOAD_FACTOR = 1.25
ADMIN_TOKEN = "admin-token-for-tests-0123456789"


@dataclass
class Process:
    port: int
    admin: int
    process: asyncio.subprocess.Process
    log: pathlib.Path

    async def fleet_loads(self, http: aiohttp.ClientSession) -> dict[str, float]:
        """``gateway_upstream_fleet_in_flight`` per upstream, as this process sees it."""
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with http.get(f"http://127.0.0.1:{self.admin}/metrics", headers=headers) as r:
            text = await r.text()
        out = {}
        for line in text.splitlines():
            if line.startswith("gateway_upstream_fleet_in_flight{"):
                name = line.split('upstream="', 1)[1].split('"', 1)[0]
                out[name] = float(line.rsplit(" ", 1)[1])
        return out


async def start(tmp: pathlib.Path, text: str) -> Process:
    port, admin = free_port(), free_port()
    text = text.replace(
        "listen: {host: 127.0.0.1, port: 0}", f"listen: {{host: 127.0.0.1, port: {port}}}"
    )
    text = text.replace(
        "admin: {host: 127.0.0.1, port: 0}",
        f"admin: {{host: 127.0.0.1, port: {admin}, token: {ADMIN_TOKEN}}}",
    )
    path = tmp / f"gateway-{port}.yaml"
    path.write_text(text)
    log = tmp / f"gateway-{port}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", "--config", str(path),
            stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    made = Process(port, admin, process, log)

    async def ready() -> bool:
        if process.returncode is not None:
            raise AssertionError(log.read_text()[-2000:])
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{admin}/readyz") as r,
            ):
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await until(ready, 20, "the gateway ready")
    return made


@pytest.fixture
async def held() -> AsyncIterator[list[Worker]]:
    """Four workers holding every chat until their gate is set."""
    started = await workers("w0", "w1", "w2", "w3", gate=None)
    for worker in started:
        worker.gate = asyncio.Event()
    yield started
    for worker in started:
        assert worker.gate is not None
        worker.gate.set()
    await stop_all(started)


@pytest.fixture
async def two(
    tmp_path: pathlib.Path, held: list[Worker], redis_url: str
) -> AsyncIterator[tuple[Process, Process]]:
    upstreams = {w.name: {"url": w.url, "timeouts": {"connect": 2, "first_byte": 30,
                 "idle": 30}} for w in held}  # fmt: skip
    routing = {"policy": "affinity", "load_factor": LOAD_FACTOR}
    model = {"upstreams": [w.name for w in held], "routing": routing}
    extra = f"store: {{url: '{redis_url}'}}\n"
    text = config(upstreams, {"m": model}, extra)
    a, b = await asyncio.gather(start(tmp_path, text), start(tmp_path, text))
    yield a, b
    for p in (a, b):
        p.process.terminate()
    for p in (a, b):
        await asyncio.wait_for(p.process.wait(), 20)


async def test_one_conversation_through_two_processes_stays_within_the_fleet_bound(
    two: tuple[Process, Process], held: list[Worker]
) -> None:
    """Eight requests of one session (one ring worker), alternating between the processes:
    after each, the busiest worker holds at most ``ceil(load_factor x requests / workers)``,
    counted at the workers; each process's fleet load of every worker is what the worker
    holds, before and after the requests end."""
    body = {"model": "m", "session_id": "one", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:

        async def send(p: Process) -> int:
            url = f"http://127.0.0.1:{p.port}/v1/chat/completions"
            async with http.post(url, json=body, headers=AUTH) as r:
                await r.read()
                return r.status

        def counts() -> dict[str, float]:
            return {w.name: float(w.chats) for w in held}

        async def agree(p: Process, expected: dict[str, float]) -> bool:
            loads = await p.fleet_loads(http)
            return all(loads.get(name, 0.0) == n for name, n in expected.items())

        sent = []
        for k in range(1, 9):
            sender, other = two[k % 2], two[(k + 1) % 2]
            sent.append(asyncio.create_task(send(sender)))
            await until(lambda k=k: sum(w.chats for w in held) == k, 10, f"request {k} held")
            busiest = max(w.chats for w in held)
            assert busiest <= math.ceil(LOAD_FACTOR * k / len(held)), counts()
            # The next request goes through the other process: once it has been told.
            await until(lambda o=other: agree(o, counts()), 5, "the other process told")
        for p in two:
            assert await agree(p, counts()), (await p.fleet_loads(http), counts())
        for worker in held:
            assert worker.gate is not None
            worker.gate.set()
        assert await asyncio.gather(*sent) == [200] * 8
        zero = {w.name: 0.0 for w in held}
        for p in two:
            await until(lambda p=p: agree(p, zero), 5, "the releases told")
