"""A client that stops reading the answer of a multipart API held its key's concurrency slot
for as long as it kept the connection open.

An audio transcription (or translation, or an image edit) answered in any form but JSON (a
``stream: true`` transcription's events, ``text``, ``srt``, ``vtt``) is relayed as it comes;
that relay waited on the client's full socket with no deadline. Chat, every JSON API and the
pass-through routes cut a client that takes nothing for ``timeouts.idle``
(``tests/hostile/test_stalled_reader``, ``test_passthrough_stalled_client``); this relay did
not, so one idle socket kept a ``maxConcurrency: 1`` key refused everywhere (429), and the
worker's request and its upstream slot held, for good.

A real gateway before a real aiohttp worker whose transcription is an endless event stream; the
client is a raw socket that sends a whole form, reads the answer's head and then nothing.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import TEST_KEY, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import serving

IDLE = 1.0
FORM = (
    b'--zz\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n'
    b'--zz\r\nContent-Disposition: form-data; name="stream"\r\n\r\ntrue\r\n'
    b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
    b"Content-Type: audio/wav\r\n\r\nRIFF....WAVE\r\n--zz--\r\n"
)


async def _transcribe(request: web.Request) -> web.StreamResponse:
    """The form read whole; then transcription events without end, as fast as taken."""
    await request.read()
    answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await answer.prepare(request)
    event = b'data: {"object":"transcription.chunk","choices":[{"delta":{"content":"' + (
        b"x" * 8000 + b'"}}]}\n\n'
    )
    while True:
        await answer.write(event)


@pytest.fixture
async def worker() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", _transcribe)
    async with serving(app) as url:
        yield url


def _stalled_upload(port: int) -> socket.socket:
    """A whole transcription form whose client reads the answer's head and then nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TEST_KEY}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=zz\r\n"
        + f"Content-Length: {len(FORM)}\r\n\r\n".encode()
        + FORM
    )
    sock.recv(1024)
    return sock


async def test_a_client_that_stops_reading_a_transcription_loses_it(
    gateway_factory: Any, worker: str
) -> None:
    """Attack: a key with ``maxConcurrency: 1`` streams a transcription and stops reading.
    Observed (before): the key's every later request is 429 ``concurrency_limit_exceeded``
    for as long as the socket stays open. Expected: the stalled answer is cut after
    ``timeouts.idle``, and the key is served again."""
    text = gateway_yaml(
        {"up": worker},
        {"m": {"upstreams": ["up"], "apis": ["chat", "audio"]}},
        extra=f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', "
        "permissions: [chat, audio], max_concurrency: 1}]}\n",
    )
    server: Server = await gateway_factory(text.replace("idle: 5", f"idle: {IDLE}"))
    sock = await asyncio.to_thread(_stalled_upload, server.port)
    try:
        deadline = time.monotonic() + 6 * IDLE
        status = 0
        async with aiohttp.ClientSession() as http:
            while status != 404 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                form = aiohttp.FormData()
                form.add_field("model", "none-such")
                form.add_field("file", b"RIFF", filename="a.wav")
                async with http.post(
                    f"http://127.0.0.1:{server.port}/v1/audio/transcriptions",
                    data=form,
                    headers={"Authorization": f"Bearer {TEST_KEY}"},
                ) as r:
                    status = r.status
        # 404 for the unknown model: past the key's concurrency check (429 while it is held)
        assert status == 404, f"the key's one slot is still held ({status}) {6 * IDLE:g} s on"
    finally:
        sock.close()
