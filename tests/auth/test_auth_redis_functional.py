"""The failed-authentication limit on a real Redis: exact across two gateway processes sharing
it, and what guessing from a blocked address costs the store (read from Redis' own command
statistics, not from the gateway's word)."""

from __future__ import annotations

import asyncio
import pathlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.server import Server
from tests.auth.test_failed_auth_functional import LIMIT_OF_3, bearer, block, forged, issue, models
from tests.clients import KEYS_YAML, TEST_KEY
from tests.conftest import gateway_yaml
from tests.multiprocess.conftest import Gateway
from tests.redis_server import RedisServer, free_port
from tests.web import ADMIN_TOKEN

IDLE = {"ping", "info", "subscribe"}  # the store watch and the subscription, not requests


def commands(redis: RedisServer) -> dict[str, int]:
    """Calls per command so far, from INFO commandstats."""
    out = {}
    for line in redis.call("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line[8:].partition(":")
            out[name] = int(stats.split(",")[0].removeprefix("calls="))
    return out


def sent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        name: count - before.get(name, 0)
        for name, count in after.items()
        if count != before.get(name, 0) and name not in IDLE
    }


async def test_guessing_from_a_blocked_address_costs_at_most_one_read(
    gateway_factory: Any, mock: Any, redis_url: str, redis_process: RedisServer
) -> None:
    server: Server = await gateway_factory(
        gateway_yaml(
            {"mock": f"http://127.0.0.1:{mock[0]}"},
            extra=LIMIT_OF_3 + f"store: {{url: '{redis_url}'}}\n",
            admin_token=ADMIN_TOKEN,
        )
    )
    real = await issue(server)
    await block(server)

    start = commands(redis_process)
    for i in range(20):
        for key in (f"not-a-real-key-{i}", real[:-1] + ("A" if real[-1] != "A" else "B"), TEST_KEY):
            assert (await models(server, bearer(key)))[0] == 429
    blocked = commands(redis_process)
    assert sent(start, blocked) == {}  # refused before any lookup, and not counted again

    for i in range(20):
        for key in (forged(real), forged(real, key_id=f"k{i:07x}")):
            status, _, body = await models(server, bearer(key))
            assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    guessed = sent(blocked, commands(redis_process))
    assert set(guessed) <= {"get"} and guessed.get("get", 0) <= 40, guessed  # no write at all
    assert (await models(server, bearer(real)))[0] == 200


# -- two processes ------------------------------------------------------------------------------


def config_text(port: int, admin_port: int, redis_url: str, mock_port: int) -> str:
    return f"""\
listen: {{host: 127.0.0.1, port: {port}, drain_timeout: 2}}
admin: {{host: 127.0.0.1, port: {admin_port}, token: {ADMIN_TOKEN}}}
store: {{url: "{redis_url}", timeout_ms: 1000}}
upstreams: {{mock: {{url: "http://127.0.0.1:{mock_port}"}}}}
models: {{mock-model: {{upstreams: [mock]}}}}
auth: {{max_failures_per_minute: 4}}
log: {{level: warning, access: false}}
{KEYS_YAML}"""


async def start(tmp: pathlib.Path, redis_url: str, mock_port: int) -> Gateway:
    """``python -m gateway run`` on free ports, ready when its /readyz answers 200."""
    port, admin_port = free_port(), free_port()
    path = tmp / f"gateway-{port}.yaml"
    path.write_text(config_text(port, admin_port, redis_url, mock_port))
    log = tmp / f"gateway-{port}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", "--config", str(path), stdout=out, stderr=out
        )
    gateway = Gateway(port, admin_port, process, log)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{gateway.admin}/readyz") as r:
                    if r.status == 200:
                        return gateway
            except aiohttp.ClientError:
                pass
            if process.returncode is not None or loop.time() > deadline:
                raise AssertionError(f"gateway did not start: {log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def pair(
    tmp_path: pathlib.Path, redis_url: str, mock: Any
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    a, b = await asyncio.gather(
        start(tmp_path, redis_url, mock[0]), start(tmp_path, redis_url, mock[0])
    )
    yield a, b
    for gateway in (a, b):
        gateway.process.terminate()
    for gateway in (a, b):
        assert await gateway.process.wait() == 0, gateway.log.read_text()[-2000:]


async def status_of(http: aiohttp.ClientSession, gateway: Gateway, key: str) -> int:
    async with http.get(f"{gateway.url}/v1/models", headers=bearer(key)) as r:
        return r.status


async def test_the_limit_is_exact_across_two_processes(pair: tuple[Gateway, Gateway]) -> None:
    """Guesses alternating between two gateways on one Redis: exactly four 401s (the limit),
    then 429 from both. Each process used to look up one guess past the count before it
    blocked the address itself."""
    a, b = pair
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{a.admin}/admin/keys",
            json={"owner": "office"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as r:
            issued = (await r.json())["key"]
        statuses = [await status_of(http, (a, b)[i % 2], f"not-a-real-key-{i}") for i in range(10)]
        assert statuses == [401] * 4 + [429] * 6
        for gateway in (a, b):
            assert await status_of(http, gateway, TEST_KEY) == 429  # guessable: blocked
            assert await status_of(http, gateway, issued) == 200  # issued: passes the block
