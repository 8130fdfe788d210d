"""A client that stops reading a stream holds what the stream holds — its key's concurrency
slot, the upstream's capacity slot, the worker's sequence — for as long as it likes: the
gateway waits on the client's socket without a deadline (``timeouts.idle`` times the
worker's silence only), so one tenant that opens streams and never reads them keeps a capped
upstream full and every other owner queued until ``scheduling.max_wait`` refuses them.

A stream whose client takes no bytes for ``timeouts.idle`` should be cut, as a worker silent
for that long is.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import TEST_KEY, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, completion

IDLE = 1.0


async def _firehose(request: web.Request, body: Any) -> web.StreamResponse:
    """A stream of ~24 MB of content events, as fast as the gateway takes them."""
    if not body.get("stream"):
        return web.json_response(completion("ok"))
    answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await answer.prepare(request)
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m", "created": 1}
    event = b"data: " + orjson.dumps(
        {**chunk, "choices": [{"index": 0, "delta": {"content": "x" * 8000}}]}
    )
    for _ in range(3000):
        await answer.write(event + b"\n\n")
    await answer.write(b"data: [DONE]\n\n")
    return answer


STREAMS = {  # chat's relay (the handler's), and the one every other streaming API shares
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"prompt": "hi", "max_tokens": 5},
}


def _stalled_stream(port: int, path: str) -> socket.socket:
    """A streamed request whose client reads the head and then nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    body = orjson.dumps({"model": "m", "stream": True, **STREAMS[path]})
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        + f"Authorization: Bearer {TEST_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    sock.recv(1024)
    return sock


@pytest.mark.parametrize("path", sorted(STREAMS))
async def test_a_client_that_stops_reading_loses_its_stream(
    gateway_factory: Any, fake: FakeUpstream, path: str
) -> None:
    fake.script = _firehose
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"], "apis": ["chat", "completions"]}},
        extra=f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', "
        "max_concurrency: 1}]}\n",
    )
    text = text.replace("idle: 5", f"idle: {IDLE}")
    server: Server = await gateway_factory(text)
    sock = await asyncio.to_thread(_stalled_stream, server.port, path)
    try:
        deadline = time.monotonic() + 6 * IDLE
        status = 0
        async with aiohttp.ClientSession() as http:
            while status != 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                async with http.post(
                    f"http://127.0.0.1:{server.port}/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": f"Bearer {TEST_KEY}"},
                ) as r:
                    status = r.status
        assert status == 200, f"the key's one slot is still held ({status}) {6 * IDLE:g} s on"
    finally:
        sock.close()
