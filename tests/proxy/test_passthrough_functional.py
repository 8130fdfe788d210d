"""Pass-through routes: auth modes, per-IP rate, body limits, and bodies streamed both ways."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY
from tests.conftest import gateway_yaml


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A portal-like backend: echoes what it got; hashes uploads as they stream in."""
    seen: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_chunked(65536):
            digest.update(chunk)
            size += len(chunk)
        seen.append(
            {"path": request.path_qs, "headers": dict(request.headers), "method": request.method}
        )
        return web.json_response(
            {"sha256": digest.hexdigest(), "size": size},
            headers={"Set-Cookie": "portal=1; HttpOnly"},
        )

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        for _ in range(160):
            await response.write(b"x" * 65536)
        await response.write_eof()
        return response

    app = web.Application(client_max_size=200 * 1024 * 1024)
    app.router.add_get("/api/files/download", download)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


@pytest.fixture
async def portal(gateway_factory: Any, backend: tuple[str, list[Any]]) -> Server:
    server: Server = await gateway_factory(
        gateway_yaml(
            {"portal": backend[0]},
            {},
            extra="routes:\n"
            "  - {prefix: /api/auth/, upstream: portal, auth: none, ip_rpm: 3}\n"
            "  - {prefix: /api/files/, upstream: portal, auth: key, max_body_bytes: 60000000}\n"
            "  - {prefix: /api/public/, upstream: portal, auth: optional}\n",
        )
    )
    return server


async def test_auth_none_forwards_everything_and_limits_per_ip(
    portal: Server, backend: tuple[str, list[dict[str, Any]]]
) -> None:
    url = f"http://127.0.0.1:{portal.port}/api/auth/login?next=/home"
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(5):
            async with http.post(
                url, json={"user": "a"}, headers={"Authorization": "Basic dTpw", "Cookie": "s=1"}
            ) as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert 1 <= int(r.headers["Retry-After"]) <= 60
                else:
                    assert r.headers["Set-Cookie"].startswith("portal=1")
    assert statuses == [200, 200, 200, 429, 429]
    got = backend[1][0]
    assert got["path"] == "/api/auth/login?next=/home"
    assert got["headers"]["Authorization"] == "Basic dTpw"  # the backend's own credentials
    assert got["headers"]["Cookie"] == "s=1"
    assert got["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert got["headers"]["X-Request-ID"].startswith("req_")


async def test_auth_key_requires_a_key_and_never_forwards_it(
    portal: Server, backend: tuple[str, list[dict[str, Any]]]
) -> None:
    url = f"http://127.0.0.1:{portal.port}/api/files/list"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "invalid_api_key"
        async with http.get(url, headers=AUTH) as r:
            assert r.status == 200
        async with http.get(
            f"http://127.0.0.1:{portal.port}/api/public/x",
            headers={"Authorization": "Bearer wrong"},
        ) as r:
            assert r.status == 401  # optional: checked when sent
        async with http.get(f"http://127.0.0.1:{portal.port}/api/public/x") as r:
            assert r.status == 200
    assert all(TEST_KEY not in str(s["headers"]) for s in backend[1])


async def test_a_refusal_on_a_path_ending_in_messages_keeps_openai_form(portal: Server) -> None:
    """A pass-through path ending in ``/messages`` (an Assistants thread's) is not one of the
    gateway's Anthropic routes: its refusals are in OpenAI's form (unless the client sent
    ``anthropic-version``)."""
    url = f"http://127.0.0.1:{portal.port}/api/files/threads/t1/messages"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={}) as r:
            assert r.status == 401
            body = await r.json()
            assert "type" not in body and body["error"]["code"] == "invalid_api_key", body
        async with http.post(url, json={}, headers={"anthropic-version": "2023-06-01"}) as r:
            assert r.status == 401
            assert (await r.json())["type"] == "error"  # the client asked for Anthropic's


async def test_a_50_mb_upload_streams_through_intact(portal: Server) -> None:
    block = os.urandom(1 << 20)
    expected = hashlib.sha256(block * 50).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield block

    tracemalloc.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{portal.port}/api/files/upload",
                data=body(),
                headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
            ) as r,
        ):
            answer = await r.json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status == 200
    assert answer == {"sha256": expected, "size": 50 << 20}
    # The test's own client and backend run in this process too; the whole body is 50 MB.
    assert peak < 20 << 20, f"peak Python memory {peak >> 20} MB: the body was held"


async def test_downloads_stream_back(portal: Server) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{portal.port}/api/files/download", headers=AUTH) as r,
    ):
        size = 0
        async for chunk in r.content.iter_chunked(65536):
            size += len(chunk)
    assert size == 160 * 65536


async def test_route_body_limit(gateway_factory: Any, backend: tuple[str, list[Any]]) -> None:
    server: Server = await gateway_factory(
        gateway_yaml(
            {"portal": backend[0]},
            {},
            extra="routes:\n  - {prefix: /api/files/, upstream: portal, auth: key, "
            "max_body_bytes: 1000}\n",
        )
    )

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 500

    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{server.port}/api/files/up", data=b"z" * 1001, headers=AUTH
        ) as r:
            assert r.status == 413
        async with http.post(
            f"http://127.0.0.1:{server.port}/api/files/up", data=chunked(), headers=AUTH
        ) as r:
            assert r.status == 413
            assert (await r.json())["error"]["code"] == "request_too_large"
        async with http.post(
            f"http://127.0.0.1:{server.port}/api/files/up", data=b"z" * 1000, headers=AUTH
        ) as r:
            assert r.status == 200


async def test_per_ip_rate_counts_clients_behind_a_trusted_proxy(
    gateway_factory: Any, backend: tuple[str, list[Any]]
) -> None:
    """On an auth: none route too, the rate is per real client, not per proxy."""
    server: Server = await gateway_factory(
        gateway_yaml(
            {"portal": backend[0]},
            {},
            extra="routes:\n  - {prefix: /api/auth/, upstream: portal, auth: none, ip_rpm: 1}\n"
            "network: {trusted_proxies: [127.0.0.1]}\n",
        )
    )
    url = f"http://127.0.0.1:{server.port}/api/auth/login"
    async with aiohttp.ClientSession() as http:
        statuses = []
        for client in ("198.51.100.1", "198.51.100.2", "198.51.100.1"):
            async with http.post(url, headers={"X-Forwarded-For": client}) as r:
                statuses.append(r.status)
    assert statuses == [200, 200, 429]


@pytest.fixture
async def stalling() -> AsyncIterator[str]:
    """A backend that stalls: before its head, after its head, or in the middle of its body,
    until the test ends."""
    release = asyncio.Event()

    async def before_head(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="late")

    async def after_head(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        await release.wait()
        await response.write_eof(b"late")
        return response

    async def mid_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if request.match_info["framing"] == "length":
            response.content_length = 200_000
        await response.prepare(request)
        await response.write(b"x" * 100_000)
        await release.wait()
        await response.write_eof(b"y" * 100_000)
        return response

    app = web.Application()
    app.router.add_get("/api/slow/head", before_head)
    app.router.add_get("/api/slow/first", after_head)
    app.router.add_get("/api/slow/body/{framing}", mid_body)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    release.set()
    await runner.cleanup()


@pytest.fixture
async def slow_portal(gateway_factory: Any, stalling: str) -> Server:
    text = gateway_yaml(
        {"portal": stalling}, {}, extra="routes:\n  - {prefix: /api/slow/, upstream: portal}\n"
    ).replace("first_byte: 5, idle: 5", "first_byte: 0.6, idle: 0.3")
    server: Server = await gateway_factory(text)
    return server


@pytest.mark.parametrize("where", ["head", "first"])
async def test_a_backend_silent_before_its_body_gets_a_504(slow_portal: Server, where: str) -> None:
    """``first_byte`` bounds the head and the first chunk; nothing went out yet: a JSON 504."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with (
        aiohttp.ClientSession() as http,
        asyncio.timeout(5),
        http.get(f"http://127.0.0.1:{slow_portal.port}/api/slow/{where}", headers=AUTH) as r,
    ):
        body = await r.json()
    assert r.status == 504
    assert body["error"]["code"] == "upstream_timeout"
    assert 0.5 < loop.time() - started < 3


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_backend_stalled_mid_body_is_cut_after_idle(
    slow_portal: Server, framing: str
) -> None:
    """Was: held until the backend went on (> 12 s with idle: 5). Now the connection closes
    after ``idle`` of silence, so the client sees a cut body, never a whole one."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    got = 0
    async with (
        aiohttp.ClientSession() as http,
        asyncio.timeout(5),
        http.get(f"http://127.0.0.1:{slow_portal.port}/api/slow/body/{framing}", headers=AUTH) as r,
    ):
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in r.content.iter_chunked(65536):
                got += len(chunk)
    assert got == 100_000
    assert 0.25 < loop.time() - started < 3
