"""The edge's safeguard: a failure raised after a stream's head went out (one its handler did not
turn into an error event) cuts the connection; it never writes a second HTTP response inside the
first one's body (found by review: two paths did, and a pooling proxy in front would then read a
desynchronized connection)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from gateway.config.schema import Network
from gateway.errors import UpstreamTimeout
from gateway.web.middlewares import EDGE, STAMP, RequestIds, edge_middleware, stamper
from gateway.web.protocol import QuietAppRunner


async def test_a_failure_after_the_head_cuts_the_connection() -> None:
    seen: list[int] = []

    async def stream_then_fail(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        await answer.write(b": queued\n\n")
        raise UpstreamTimeout("the worker stalled")

    app = web.Application()
    app[EDGE] = edge_middleware(RequestIds(), time.monotonic, lambda r, e, s, t: seen.append(s))
    app[STAMP] = stamper(Network, RequestIds(), lambda r: False, tls=False)
    app.router.add_post("/v1/chat/completions", stream_then_fail)
    runner = QuietAppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        wire = await asyncio.wait_for(reader.read(-1), 5)  # until the connection ends
        writer.close()
    finally:
        await runner.cleanup()
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), wire
    assert b": queued" in body and b"HTTP/1.1" not in body, wire  # one answer, cut
    assert not body.endswith(b"0\r\n\r\n"), wire  # not a complete stream either
    assert seen == [504]
