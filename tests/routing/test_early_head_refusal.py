"""A stream that waited for a slot has its head (200, ``: queued``) out already; when its worker
then refuses with a body that stalls or breaks off, the client gets an error event and the end of
the chunked stream, never a second HTTP response written inside the body (found by review: the
edge answered the refusal's 504/502 as a fresh response on a connection mid-stream)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.clients import TEST_KEY
from tests.conftest import GatewayFactory
from tests.fakes import FakeUpstream
from tests.routing.test_capacity_functional import Busy, config


class RefusesBadly(Busy):
    """``Busy`` for a whole request; a stream request is refused (400) with a body that stalls
    (``broken`` False) or breaks off (True) after its first bytes."""

    def __init__(self, broken: bool) -> None:
        super().__init__()
        self.broken = broken
        self.done = asyncio.Event()

    async def __call__(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if not body.get("stream"):
            return await super().__call__(request, body)
        refusal = web.StreamResponse(status=400, headers={"Content-Type": "application/json"})
        refusal.content_length = 1000
        await refusal.prepare(request)
        await refusal.write(b'{"error": {"message": "bro')
        if self.broken:
            assert request.transport is not None
            request.transport.abort()  # the body breaks off
        else:
            await self.done.wait()  # the body stalls (until the test ends)
        return refusal


_BODIES = {  # a stream request of chat and of another API (its own way through forward.py)
    "/v1/chat/completions": b'{"model":"m","stream":true,"messages":[{"role":"user",'
    b'"content":"second"}]}',
    "/v1/completions": b'{"model":"m","stream":true,"prompt":"second"}',
}


async def _raw_stream(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = _BODIES[path]
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer ".encode()
        + TEST_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize("path", list(_BODIES))
@pytest.mark.parametrize("broken", [False, True], ids=["stalls", "breaks_off"])
async def test_a_bad_refusal_after_the_early_head_is_an_error_event(
    gateway_factory: GatewayFactory, fake: FakeUpstream, broken: bool, path: str
) -> None:
    worker = RefusesBadly(broken)
    fake.script = worker
    # first_byte 2 s: past the first ``: queued`` (1 s), so the head goes out while the first
    # request holds the slot; the stalled refusal then meets it
    text = config(fake.url, 1).replace("first_byte: 5, idle: 5", "first_byte: 2, idle: 2")
    server = await gateway_factory(text)
    async with aiohttp.ClientSession() as http:
        holder = asyncio.create_task(
            http.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions",
                headers={"Authorization": f"Bearer {TEST_KEY}"},
                json={"model": "m", "messages": [{"role": "user", "content": "first"}]},
            )
        )
        await asyncio.wait_for(worker.arrived.wait(), 5)  # the only slot is taken
        reader, writer = await _raw_stream(server.port, path)
        try:
            wire = await asyncio.wait_for(reader.readuntil(b": queued\n\n"), 5)
            worker.gate.set()  # the first request ends; the stream gets the slot
            wire += await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 10)
        finally:
            worker.done.set()
            writer.close()
        (await holder).release()
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), wire
    assert b"HTTP/1.1" not in body, wire  # one response on the connection, not two
    assert b'"error"' in body and b"[DONE]" not in body, wire
