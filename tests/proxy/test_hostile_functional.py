"""Hostile clients over raw sockets: slow heads and bodies are cut after network.header_timeout
while others are served; smuggling attempts get 400 or a closed connection, and the upstream
sees exactly one request per client request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.server import Server
from tests.clients import TEST_KEY
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

BODY = b'{"model":"fake-model","messages":[{"role":"user","content":"x"}]}'


@pytest.fixture
async def edge(gateway_factory: Any, fake: FakeUpstream) -> Server:
    server: Server = await gateway_factory(
        gateway_yaml({"fake": fake.url}, extra="network: {header_timeout: 0.5}\n")
    )
    return server


async def exchange(port: int, raw: bytes, wait: float = 3.0) -> bytes:
    """Send ``raw``; read until the server closes or ``wait`` passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    out = b""
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                out += chunk
    except TimeoutError:
        pass
    writer.close()
    return out


def request(headers: str, body: bytes = BODY) -> bytes:
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        f"Authorization: Bearer {TEST_KEY}\r\nContent-Type: application/json\r\n{headers}\r\n"
    )
    return head.encode() + body


async def test_a_slow_head_is_cut_while_others_are_served(edge: Server) -> None:
    """header_timeout is 0.5 s; a header line every 0.1 s never completes the head."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
    started = loop.time()
    served = await exchange(edge.port, request(f"Content-Length: {len(BODY)}\r\n"), wait=2)
    assert served.startswith(b"HTTP/1.1 200")
    closed_at = None
    for _ in range(40):
        try:
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1), 0.1)
        except TimeoutError:
            continue
        except ConnectionError:
            data = b""
        if data == b"":
            closed_at = loop.time()
            break
    writer.close()
    assert closed_at is not None, "the slow head was never cut"
    assert closed_at - started < 2.0


async def test_a_stalled_body_gets_408(edge: Server, fake: FakeUpstream) -> None:
    raw = request(f"Content-Length: {len(BODY)}\r\n", BODY[:10])
    answer = await exchange(edge.port, raw, wait=3)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert b'"code":"request_timeout"' in answer
    assert fake.seen == []


SMUGGLING = [
    (
        "content-length and transfer-encoding",
        f"Content-Length: {len(BODY)}\r\nTransfer-Encoding: chunked\r\n",
    ),
    ("two content-lengths", f"Content-Length: {len(BODY)}\r\nContent-Length: 5\r\n"),
    ("obfuscated transfer-encoding", "Transfer-Encoding: xchunked\r\n"),
    ("transfer-encoding with a space before the colon", "Transfer-Encoding : chunked\r\n"),
    ("NUL in a header value", f"Content-Length: {len(BODY)}\r\nX-Bad: a\x00b\r\n"),
    ("CR in a header value", f"Content-Length: {len(BODY)}\r\nX-Bad: a\rb\r\n"),
]


@pytest.mark.parametrize("headers", [c[1] for c in SMUGGLING], ids=[c[0] for c in SMUGGLING])
async def test_smuggling_attempts_are_refused(
    edge: Server, fake: FakeUpstream, headers: str
) -> None:
    smuggled = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n"
    answer = await exchange(edge.port, request(headers) + smuggled, wait=2)
    statuses = [line for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    assert statuses[:1] in ([], [b"HTTP/1.1 400 Bad Request"]) or answer.startswith(
        b"HTTP/1.0 400"
    ), answer[:200]
    assert TEST_KEY.encode() not in answer
    assert len(fake.seen) == 0, "a smuggled request reached the upstream"


async def test_bare_lf_line_endings_are_refused(edge: Server, fake: FakeUpstream) -> None:
    raw = request(f"Content-Length: {len(BODY)}\r\n").replace(b"\r\n", b"\n")
    answer = await exchange(edge.port, raw, wait=2)
    assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400")), answer[:120]
    assert TEST_KEY.encode() not in answer
    assert fake.seen == []


async def test_pipelined_requests_reach_the_upstream_once_each(
    edge: Server, fake: FakeUpstream
) -> None:
    one = request(f"Content-Length: {len(BODY)}\r\n")
    answer = await exchange(edge.port, one + one, wait=2)
    assert answer.count(b"HTTP/1.1 200") == 2
    assert len(fake.seen) == 2


async def test_oversized_headers_are_4xx(edge: Server, fake: FakeUpstream) -> None:
    huge = "".join(f"X-Pad-{i}: {'p' * 100}\r\n" for i in range(200))
    answer = await exchange(edge.port, request(f"Content-Length: {len(BODY)}\r\n{huge}"), wait=2)
    assert answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:80]
    assert b'"code":"bad_request"' in answer
    long_line = request(f"Content-Length: {len(BODY)}\r\nX-Long: {'l' * 40000}\r\n")
    answer = await exchange(edge.port, long_line, wait=2)
    assert answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:80]
    assert fake.seen == []


async def test_an_unparseable_request_gets_the_headers_of_every_answer(edge: Server) -> None:
    """aiohttp answers it before any middleware or signal: the gateway still stamps it."""
    answer = await exchange(edge.port, b"GARBAGE / HTTP/1.1\r\nHost: gw\r\n\r\n", wait=2)
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith((b"http/1.1 400", b"http/1.0 400")), answer[:80]
    assert b"\r\nserver: llm-gateway" in head and b"aiohttp" not in head
    assert b"\r\nx-request-id: req_" in head
    assert b"\r\nx-content-type-options: nosniff" in head
