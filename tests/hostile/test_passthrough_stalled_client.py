"""A client that stops reading a pass-through download held its key's concurrency slot for as
long as it kept the connection open: the relay waited on the client's full socket with no
deadline, so a key with ``maxConcurrency: 1`` was refused everywhere (429) by one idle socket.
Chat cuts such a client after ``timeouts.idle``; the pass-through relay now does too (the edge
closes the connection, the slot is given back).

A real gateway (Redis store) before a real aiohttp backend that streams a download without end;
the client is a raw socket that reads the answer's head and then nothing.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes import FakeUpstream
from tests.hostile.test_passthrough_key_limits import _gateway, _key, _served_within

IDLE = 5.0  # the upstream's timeouts.idle in tests.conftest.gateway_yaml


async def test_a_client_that_stops_reading_a_download_gives_its_slot_back(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str
) -> None:
    """Attack: a key with ``maxConcurrency: 1`` starts a large download, reads its head and
    stops reading without closing. Observed (before): every later request of the key, on any
    route, 429 for as long as the socket stayed open. Expected: the relay is cut once the client
    has taken nothing for ``timeouts.idle``, and the key is served again."""

    async def endless(request: web.Request, body: Any) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await answer.prepare(request)
        chunk = b"x" * 65536
        try:
            while True:
                await answer.write(chunk)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            return answer

    fake.script = endless
    server = await _gateway(gateway_factory, fake, redis_url)
    async with aiohttp.ClientSession() as http:
        key = await _key(http, server, maxConcurrency=1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        head = (
            f"GET /api/files/big HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {key['Authorization']}\r\n\r\n"
        )
        await loop.sock_sendall(sock, head.encode())
        first = await asyncio.wait_for(loop.sock_recv(sock, 1024), 5)
        assert first.startswith(b"HTTP/1.1 200"), first[:100]
        try:
            url = f"http://127.0.0.1:{server.port}/api/files/other"
            async with http.get(url, headers=key) as r:  # the slot is held: the download runs
                assert r.status == 429, await r.text()
            status = await _served_within(http, url, key, IDLE + 10)
        finally:
            sock.close()
    assert status == 200, "the stalled download still held the key's slot"
