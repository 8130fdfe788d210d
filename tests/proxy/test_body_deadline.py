"""A request body has a total deadline besides its stall limit (issue 14): a body trickled slowly
enough never to stall is still cut with 408 ``request_timeout`` once its deadline passes, while a
body already in the buffer is read without arming any timer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pytest
from aiohttp import StreamReader, web

from gateway.errors import GatewayError
from gateway.proxy import bodies
from gateway.server import Server
from tests.clients import TEST_KEY
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream

BODY = b'{"model":"fake-model","messages":[{"role":"user","content":"hello"}]}'


def head(length: int, path: str = "/v1/chat/completions") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TEST_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def trickle(port: int, raw: bytes, body: bytes, gap: float, within: float) -> bytes:
    """Send the head, then ``body`` a byte every ``gap`` seconds until the server answers; the
    whole answer read, all within ``within`` seconds (TimeoutError past it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = bytearray()

    async def feed() -> None:
        writer.write(raw)
        for byte in body:
            await writer.drain()
            writer.write(bytes([byte]))
            await asyncio.sleep(gap)  # the pace of the trickle, not a wait for a result

    feeder = asyncio.create_task(feed())
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                    break
    finally:
        feeder.cancel()
        writer.close()
    return bytes(answer)


@pytest.fixture
async def reader_app() -> AsyncIterator[int]:
    """A bare server whose one route reads its body with a 0.4 s stall limit and a 1.2 s
    deadline, answering the body's length or the refusal's status and message."""

    async def read(request: web.Request) -> web.Response:
        try:
            raw = await bodies.read_request_body(request, 1 << 20, idle=0.4, total=1.2)
        except GatewayError as err:
            return web.Response(status=err.status, body=err.render(anthropic=False))
        return web.Response(text=f'{{"length":{len(raw)}}}')

    app = web.Application()
    app.router.add_post("/read", read)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield int(runner.addresses[0][1])
    await runner.cleanup()


async def test_a_trickle_that_never_stalls_is_cut_at_the_deadline(reader_app: int) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = b"x" * 100  # a byte every 0.1 s: never a 0.4 s stall, 10 s in all
    answer = await trickle(reader_app, head(len(body), "/read"), body, gap=0.1, within=4.0)
    elapsed = loop.time() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:120]
    assert b'"code":"request_timeout"' in answer
    assert b"did not arrive within 1.2 s" in answer
    assert 1.1 <= elapsed < 3.0, elapsed


async def test_a_stall_is_still_cut_at_the_stall_limit(reader_app: int) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await trickle(reader_app, head(10, "/read"), b"x", gap=5.0, within=4.0)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:120]
    assert b"stalled for 0.4 s" in answer
    assert loop.time() - started < 1.1  # before the deadline


async def test_a_slow_body_within_the_deadline_is_read_whole(reader_app: int) -> None:
    body = b"y" * 6  # a byte every 0.1 s: done in ~0.6 s of the 1.2 allowed
    answer = await trickle(reader_app, head(len(body), "/read"), body, gap=0.1, within=4.0)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:120]
    assert answer.endswith(b'{"length":6}')


class _Request:
    """What ``read_request_body`` reads of a request: its stream and Content-Length."""

    def __init__(self, content: StreamReader, length: int | None) -> None:
        self.content = content
        self.content_length = length


def _buffered(body: bytes) -> StreamReader:
    protocol = mock.Mock(_reading_paused=False)
    stream = StreamReader(protocol, 1 << 16, loop=asyncio.get_running_loop())
    stream.feed_data(body)
    stream.feed_eof()
    return stream


async def test_a_buffered_body_arms_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    armed: list[Any] = []
    real_call_at, real_call_later = loop.call_at, loop.call_later

    def call_at(*args: Any, **kw: Any) -> asyncio.TimerHandle:
        armed.append(args)
        return real_call_at(*args, **kw)

    def call_later(*args: Any, **kw: Any) -> asyncio.TimerHandle:
        armed.append(args)
        return real_call_later(*args, **kw)

    monkeypatch.setattr(loop, "call_at", call_at)
    monkeypatch.setattr(loop, "call_later", call_later)
    request: Any = _Request(_buffered(BODY), len(BODY))
    assert await bodies.read_request_body(request, 1 << 20, idle=0.4) == BODY
    assert armed == []
    with pytest.raises(GatewayError) as refused:
        await bodies.read_request_body(_Request(_buffered(BODY), None), 10, idle=0.4)  # type: ignore[arg-type]
    assert refused.value.status == 413
    assert armed == []


def test_the_default_deadline_is_a_minute_at_least_and_six_stalls() -> None:
    assert bodies.body_timeout(10.0) == 60.0
    assert bodies.body_timeout(0.5) == 60.0
    assert bodies.body_timeout(30.0) == 180.0


@pytest.fixture
async def edge(gateway_factory: GatewayFactory, fake: FakeUpstream) -> Server:
    """A gateway whose body deadline (network.body_timeout) is 1.8 s, stalls 0.3 s."""
    server: Server = await gateway_factory(
        gateway_yaml(
            {"fake": fake.url}, extra="network: {header_timeout: 0.3, body_timeout: 1.8}\n"
        )
    )
    return server


async def test_the_chat_route_cuts_a_trickled_body(edge: Server, fake: FakeUpstream) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await trickle(edge.port, head(len(BODY)), BODY, gap=0.1, within=6.0)
    elapsed = loop.time() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:120]
    assert b'"code":"request_timeout"' in answer
    assert 1.7 <= elapsed < 4.0, elapsed
    assert fake.seen == []
