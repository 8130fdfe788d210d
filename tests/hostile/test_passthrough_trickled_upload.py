"""An upload to a pass-through route that the client trickles (a little at a time, never
stalling for ``network.header_timeout``) went on until the backend's ``first_byte`` wait ran
out (300 s by default), past the ``network.body_timeout`` (60 s) every body is promised to be
held to (docs/security.md, promise 3), and was answered 504 ``upstream_timeout``, the backend
blamed for the client's pace. On an ``auth: none`` route anyone can do it: each such upload
holds a connection to the backend five times as long as the gateway says it will. A client that
stalled was a 504 too.

Expected: the client's 408 at the body's deadline (or its stall), as for every other body.

A real gateway before a real aiohttp backend that reads the whole body before it answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.server import Server
from tests.conftest import gateway_yaml
from tests.fakes import serving

STALL, BODY, FIRST_BYTE = 1.0, 2.0, 8.0


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    async def whole(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(text="stored")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", whole)
    async with serving(app) as url:
        yield url


async def _upload(port: int, trickle: bool) -> tuple[bytes, float]:
    """A 100 kB upload sent 10 bytes every 0.3 s (or 10 bytes and then nothing): the answer's
    status line and the seconds it took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PUT /files/a.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    started = time.monotonic()
    answer = b""
    while not answer and time.monotonic() - started < 2 * FIRST_BYTE:
        if trickle or time.monotonic() - started < 0.1:
            writer.write(b"a" * 10)
        try:
            answer = await asyncio.wait_for(reader.readline(), 0.3)
        except TimeoutError:
            continue
    writer.close()
    return answer, time.monotonic() - started


@pytest.mark.parametrize("trickle", [True, False], ids=["trickled", "stalled"])
async def test_a_slow_pass_through_upload_is_the_clients_408_at_the_body_deadline(
    gateway_factory: Any, backend: str, trickle: bool
) -> None:
    """Observed (before): 504 ``upstream_timeout`` after ``first_byte`` (8 s) for the trickle,
    504 at the stall. Expected: 408 within ``body_timeout`` (2 s) or the stall (1 s)."""
    text = gateway_yaml(
        {"portal": backend},
        {"m": {"upstreams": ["portal"]}},
        extra=f"network: {{header_timeout: {STALL:g}, body_timeout: {BODY:g}}}\n"
        "routes: [{prefix: /files/, upstream: portal, auth: none}]\n",
    )
    server: Server = await gateway_factory(
        text.replace("first_byte: 5", f"first_byte: {FIRST_BYTE:g}")
    )
    status, took = await _upload(server.port, trickle)
    assert status.startswith(b"HTTP/1.1 408"), (status, round(took, 2))
    assert took < BODY + 1.5, f"answered after {took:.2f} s"
