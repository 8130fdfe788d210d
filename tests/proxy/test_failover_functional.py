"""Two upstreams behind one model, one of them failing through a fault proxy: clients see no
error for any request that had not begun streaming (retried once on the other upstream)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import mock_worker
from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml
from tests.faultproxy import FaultProxy


@pytest.fixture
async def shaky(mock: Any) -> AsyncIterator[FaultProxy]:
    """A second mock worker, reached only through the fault proxy."""
    runner, port = await mock_worker.start(mock_worker.MockOptions(), "127.0.0.1", 0)
    proxy = FaultProxy(port)
    await proxy.start()
    yield proxy
    await proxy.stop()
    await runner.cleanup()


@pytest.fixture
async def pair(gateway_factory: Any, mock: Any, shaky: FaultProxy) -> Server:
    text = gateway_yaml(
        {"steady": f"http://127.0.0.1:{mock[0]}", "shaky": shaky.url},
        {"m": {"upstreams": ["steady", "shaky"]}},
    ).replace("first_byte: 5, idle: 5", "first_byte: 0.5, idle: 1")
    server: Server = await gateway_factory(text)
    return server


async def ask(http: aiohttp.ClientSession, server: Server, stream: bool) -> tuple[int, bytes]:
    async with http.post(
        f"http://127.0.0.1:{server.port}/v1/chat/completions",
        json={"model": "m", "stream": stream, "messages": [{"role": "user", "content": "say:5"}]},
        headers={**AUTH, "x-mock-token-delay": "0.002"},
    ) as r:
        return r.status, await r.read()


def complete(status: int, body: bytes, stream: bool) -> bool:
    if status != 200:
        return False
    return body.rstrip().endswith(b"data: [DONE]") if stream else b'"choices"' in body


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
async def test_one_upstream_failing_under_load_is_invisible(
    pair: Server, shaky: FaultProxy, fault: str
) -> None:
    results: list[tuple[bool, int, bytes]] = []
    warmed = asyncio.Event()
    async with aiohttp.ClientSession() as http:

        async def worker(n: int) -> None:
            for i in range(15):
                stream = (n + i) % 2 == 0
                status, body = await ask(http, pair, stream)
                results.append((stream, status, body))
                if len(results) >= 30:
                    warmed.set()

        load = asyncio.gather(*(worker(n) for n in range(8)))
        await warmed.wait()
        shaky.set(fault)  # type: ignore[arg-type]
        await load
    broken = [(s, st, b) for s, st, b in results if not complete(st, b, s)]
    # A stream cut while it was being relayed ends in an error event and no [DONE]; that is the
    # only failure a client may see.
    cut_streams = [b for s, st, b in broken if s and st == 200 and b'data: {"error"' in b]
    assert len(broken) == len(cut_streams), [(s, st, b[-200:]) for s, st, b in broken[:3]]
    assert len(broken) <= 8  # at most the streams in flight at the moment of the fault
    assert len(results) == 120


async def test_latency_slows_but_does_not_fail(pair: Server, shaky: FaultProxy) -> None:
    shaky.set("latency", 0.05)
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(ask(http, pair, i % 2 == 0) for i in range(10)))
    assert all(complete(st, b, i % 2 == 0) for i, (st, b) in enumerate(results))
    assert shaky.connections > 0  # the slow upstream did take its share


async def test_an_answer_broken_off_mid_body_is_retried(
    gateway_factory: Any, mock: Any, fake: Any
) -> None:
    """The fake upstream sends its head and half a body, then dies: nothing reached the client
    yet, so the request goes to the other upstream."""

    async def half(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Length": "400"}
        )
        await response.prepare(request)
        await response.write(b'{"id": "chatcmpl-x", "choices": [')
        assert request.transport is not None
        request.transport.close()
        return response

    fake.script = half
    server: Server = await gateway_factory(
        gateway_yaml(
            {"fake": fake.url, "steady": f"http://127.0.0.1:{mock[0]}"},
            {"m": {"upstreams": ["fake", "steady"]}},
        )
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(30):  # ties are broken at random: until the broken one was tried
            status, body = await ask(http, server, stream=False)
            assert status == 200, body
            if fake.seen:
                break
    assert fake.seen, "the broken upstream was never tried"
