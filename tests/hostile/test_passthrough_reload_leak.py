"""A keyed pass-through request admitted across a reload: the handler found its route in the
config it started with, was admitted (its key's concurrency slot taken), and then looked the
route's upstream up in the config in force by then. A reload in between that dropped the route
and its upstream made that lookup a KeyError: a 500, and the admission was never given back.
The ticket stayed in flight, its lease renewed for ever, so the key lost its concurrency slot
on every route of the gateway until the process restarted.

A real gateway (Redis store) before a real aiohttp backend; the admission is held in Redis
(``CLIENT PAUSE ... WRITE``) while the operator's reload is applied.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from gateway.config.load import parse_text
from gateway.server import Server
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream
from tests.redis_server import RedisServer

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}


def _config(fake: FakeUpstream, redis_url: str, with_route: bool) -> str:
    upstreams = {"up": fake.url, **({"portal": fake.url} if with_route else {})}
    route = "routes: [{prefix: /api/files/, upstream: portal, auth: key}]\n" if with_route else ""
    return gateway_yaml(
        upstreams,
        {"m": {"upstreams": ["up"]}},
        extra=f"store: {{url: '{redis_url}', timeout_ms: 5000}}\n"
        "plans: {free: {max_keys: 10, rpm: null, monthly_tokens: null}}\n" + route,
        admin_token="admin-token-0123456789",
    )


async def _until(check: Any, seconds: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.01)


async def test_a_reload_during_the_admission_does_not_leak_the_keys_slot(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str, redis_process: RedisServer
) -> None:
    server: Server = await gateway_factory(_config(fake, redis_url, True))
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as http:
        admin = f"http://127.0.0.1:{server.admin_port}/admin/keys"
        async with http.post(admin, json={"owner": "o", "maxConcurrency": 1}, headers=ADMIN) as r:
            key = {"Authorization": f"Bearer {(await r.json())['key']}"}
        async with http.get(f"{base}/api/files/warm", headers=key) as r:  # key and plan cached
            assert r.status == 200
        limiter = server.runtime.limiter
        await _until(lambda: limiter.buffer.pending == 0, 5, "the warm-up was not settled")

        assert redis_process.call("CLIENT", "PAUSE", "1000", "WRITE") == "OK"

        async def download() -> int:
            async with http.get(f"{base}/api/files/report.pdf", headers=key) as r:
                await r.read()
                return r.status

        held = asyncio.create_task(download())
        await _until(
            lambda: "blocked_clients:0" not in redis_process.call("INFO", "clients"),
            5,
            "the admission never reached Redis",
        )
        # The operator's reload: the route and its backend are gone.
        server.runtime.apply(parse_text(_config(fake, redis_url, False), "test.yaml", env={}))
        status = await held
        first = status
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:  # the slot is given back a moment after the answer
            async with http.post(f"{base}/v1/chat/completions", json=chat, headers=key) as r:
                answer = await r.json()
            if r.status != 429 or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
    assert r.status == 200, f"the key's one slot is still held after the reload: {answer}"
    assert first == 200, f"the request admitted across the reload: {first}"
