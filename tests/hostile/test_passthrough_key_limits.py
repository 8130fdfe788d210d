"""A pass-through route with ``auth: key`` checked the key and nothing else: a key held to 2
requests a minute, or to 1 in flight, reached the backend as often and as many at once as it
liked, while the same key was refused on every model API. A route is no model API, so what it
spends is requests: the key's (and its plan's) rpm and its ``maxConcurrency``; no tokens.

Each test runs a real gateway (Redis store) in front of a real aiohttp backend.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from gateway.server import Server
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}


async def _gateway(factory: Any, fake: FakeUpstream, redis_url: str, auth: str = "key") -> Server:
    text = gateway_yaml(
        {"portal": fake.url},
        {"m": {"upstreams": ["portal"]}},
        extra=f"store: {{url: '{redis_url}'}}\n"
        "plans: {free: {max_keys: 10, rpm: null, monthly_tokens: null}}\n"
        f"routes: [{{prefix: /api/files/, upstream: portal, auth: {auth}}}]\n",
        admin_token="admin-token-0123456789",
    )
    server: Server = await factory(text)
    return server


async def _key(http: aiohttp.ClientSession, server: Server, **limits: Any) -> dict[str, str]:
    admin = f"http://127.0.0.1:{server.admin_port}/admin/keys"
    async with http.post(admin, json={"owner": "o", **limits}, headers=ADMIN) as r:
        assert r.status == 201, await r.text()
        made = await r.json()
    return {"Authorization": f"Bearer {made['key']}"}


async def test_a_key_held_to_2_a_minute_is_refused_its_third_pass_through(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str
) -> None:
    """Attack: a key with ``rpmLimit: 2`` calls the file service ten times in a row. Observed
    (before): ten 200s, the backend reached ten times. Expected: two, then 429
    ``rate_limit_exceeded`` with ``Retry-After``, the backend not reached again."""
    server = await _gateway(gateway_factory, fake, redis_url)
    base = f"http://127.0.0.1:{server.port}"
    statuses = []
    async with aiohttp.ClientSession() as http:
        key = await _key(http, server, rpmLimit=2)
        for _ in range(10):
            async with http.get(f"{base}/api/files/report.pdf", headers=key) as r:
                statuses.append(r.status)
                if r.status == 429:
                    answer = await r.json()
                    assert answer["error"]["code"] == "rate_limit_exceeded", answer
                    assert int(r.headers["Retry-After"]) >= 1
                else:
                    assert r.headers["x-ratelimit-limit-requests"] == "2"
    assert statuses == [200, 200] + [429] * 8, statuses
    assert len(fake.seen) == 2, f"the backend was reached {len(fake.seen)} times"


async def test_optional_auth_with_a_key_sent_is_held_to_it_too(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str
) -> None:
    server = await _gateway(gateway_factory, fake, redis_url, auth="optional")
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as http:
        key = await _key(http, server, rpmLimit=1)
        statuses = []
        for _ in range(3):
            async with http.get(f"{base}/api/files/a", headers=key) as r:
                statuses.append(r.status)
    assert statuses == [200, 429, 429], statuses


async def test_a_key_at_its_max_concurrency_is_refused(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str
) -> None:
    """Attack: a key with ``maxConcurrency: 1`` holds a slow download open and starts another.
    Observed (before): both reached the backend. Expected: the second is 429
    ``concurrency_limit_exceeded``; once the first ended, the key is served again."""
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(request: web.Request, body: Any) -> web.StreamResponse:
        if request.path.endswith("/slow"):
            started.set()
            await release.wait()
        return web.json_response({"ok": True})

    fake.script = slow
    server = await _gateway(gateway_factory, fake, redis_url)
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as http:
        key = await _key(http, server, maxConcurrency=1)

        async def download() -> int:
            async with http.get(f"{base}/api/files/slow", headers=key) as r:
                await r.read()
                return r.status

        first = asyncio.create_task(download())
        async with asyncio.timeout(5):
            await started.wait()
        async with http.get(f"{base}/api/files/other", headers=key) as r:
            answer = await r.json()
            assert r.status == 429, answer
            assert answer["error"]["code"] == "concurrency_limit_exceeded", answer
        release.set()
        assert await first == 200
        status = await _served_within(http, f"{base}/api/files/other", key, 5.0)
    assert status == 200
    assert [s.path for s in fake.seen].count("/api/files/other") == 1


async def _served_within(
    http: aiohttp.ClientSession, url: str, key: dict[str, str], seconds: float
) -> int:
    """The first status other than 429 (the slot is given back a moment after the answer)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        async with http.get(url, headers=key) as r:
            if r.status != 429 or loop.time() > deadline:
                return r.status
        await asyncio.sleep(0.05)


async def test_the_ip_allowlist_applies(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str
) -> None:
    server = await _gateway(gateway_factory, fake, redis_url)
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as http:
        key = await _key(http, server, ipWhitelist=["203.0.113.0/24"])
        async with http.put(f"{base}/api/files/x", data=b"upload", headers=key) as r:
            answer = await r.json()
            status = r.status
    assert status == 403 and answer["error"]["code"] == "ip_not_allowed", answer
    assert not fake.seen
