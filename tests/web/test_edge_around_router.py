"""The edge runs around the whole public app, routing included (``web.protocol.QuietAppRunner``),
not as an aiohttp middleware inside it, and the answers are stamped as their heads are prepared,
not by a response signal: what a client sees and what is logged stay what they were when both
were aiohttp's middleware and signal, aiohttp's own refusal of an unknown Expect included (it
comes before any route, so the edge never saw it: unlogged, with an id of the gateway's own)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.config.schema import Network
from gateway.web import middlewares
from gateway.web.middlewares import STAMP, RequestIds, stamper
from gateway.web.protocol import QuietAppRunner, stamped_requests
from tests.clients import SECURITY, TEST_KEY
from tests.conftest import mock_gateway

OFFERED = "client-label-417"


async def exchange(port: int, head: bytes, body: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One request on a connection of its own: its interim answer (a 100 Continue, or
    nothing), then the answer's head and body, read until the connection closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    wire = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    interim = b""
    if wire.startswith(b"HTTP/1.1 100 "):
        interim, _, wire = wire.partition(b"\r\n\r\n")
    answer, _, rest = wire.partition(b"\r\n\r\n")
    return interim, answer, rest


def headers_of(head: bytes) -> dict[str, str]:
    lines = head.decode().split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def chat_head(extra: bytes, length: int) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer %s\r\n%s"
        b"Content-Length: %d\r\n\r\n"
    ) % (TEST_KEY.encode(), extra, length)


def assert_stamped(head: bytes) -> dict[str, str]:
    headers = headers_of(head)
    assert headers["server"] == middlewares.SERVER
    for name, value in SECURITY.items():
        assert headers[name.lower()] == value
    return headers


async def test_answers_around_the_router(mock: Any, capfd: pytest.CaptureFixture[str]) -> None:
    server = await mock_gateway(mock)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    try:
        assert server._public is not None
        assert not server._public.app.middlewares  # aiohttp's middleware machinery is skipped

        # an unknown Expect: aiohttp's own 417, stamped with an id of the gateway's own
        _, head, text = await exchange(
            server.port,
            chat_head(b"Expect: bogus\r\nX-Request-ID: %s\r\n" % OFFERED.encode(), len(body)),
            body,
        )
        assert head.startswith(b"HTTP/1.1 417 "), head
        assert text == b"Unknown Expect: bogus"
        headers = assert_stamped(head)
        assert headers["x-request-id"].startswith("req_")

        # 100-continue: the interim answer, then the chat answer, through the edge
        interim, head, text = await exchange(
            server.port,
            chat_head(b"Expect: 100-continue\r\nX-Request-ID: continued-1\r\n", len(body)),
            body,
        )
        assert interim == b"HTTP/1.1 100 Continue" and head.startswith(b"HTTP/1.1 200 "), head
        assert assert_stamped(head)["x-request-id"] == "continued-1"
        assert orjson.loads(text)["object"] == "chat.completion"

        # aiohttp's router's refusals: rendered by the edge, stamped, with the client's label
        for request, status in (
            (b"GET /nowhere HTTP/1.1\r\nHost: g\r\nConnection: close\r\n", 404),
            (b"DELETE /v1/chat/completions HTTP/1.1\r\nHost: g\r\nConnection: close\r\n", 405),
        ):
            _, head, text = await exchange(
                server.port, request + b"X-Request-ID: routed-%d\r\n\r\n" % status
            )
            assert head.startswith(b"HTTP/1.1 %d " % status), head
            assert assert_stamped(head)["x-request-id"] == f"routed-{status}"
            assert orjson.loads(text)["error"]["code"] in ("not_found", "method_not_allowed")
    finally:
        await server.stop()
    err = capfd.readouterr().err.splitlines()  # (stopping flushed the buffered access log)
    logged = [orjson.loads(line) for line in err if line.startswith('{"request_id"')]
    ids = {line["request_id"]: line["status"] for line in logged}
    assert ids == {"continued-1": 200, "routed-404": 404, "routed-405": 405}


@pytest.mark.parametrize("with_receiver", [False, True])
async def test_response_signals_run_after_the_stamp(with_receiver: bool) -> None:
    """The app's ``on_response_prepare`` receivers run after the stamp (they see its headers);
    aiohttp's hook that sends them is skipped only when the app has none."""
    seen: list[str | None] = []

    async def receiver(request: web.Request, response: web.StreamResponse) -> None:
        seen.append(response.headers.get("X-Request-ID"))

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    app = web.Application()
    app[STAMP] = stamper(Network, RequestIds(), lambda r: False, tls=False)
    if with_receiver:
        app.on_response_prepare.append(receiver)
    app.router.add_get("/ok", ok)
    runner = QuietAppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        assert stamped_requests(app, lambda r, a: None).signalled is with_receiver
        port = runner.addresses[0][1]
        _, head, text = await exchange(
            port, b"GET /ok HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n"
        )
    finally:
        await runner.cleanup()
    assert head.startswith(b"HTTP/1.1 200 ") and text == b"ok"
    request_id = assert_stamped(head)["x-request-id"]
    assert seen == ([request_id] if with_receiver else [])
