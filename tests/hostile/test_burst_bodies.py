"""Bodies a key at ``maxConcurrency: 1`` made one process hold at once, by sending them at once.

A request's body is read after its key is known and before its admission (which needs the model
and the estimate from it), up to ``network.max_body_bytes`` (50 MiB). A key refused from the
head when it already has its requests in flight (``tests/hostile/test_body_before_limits``) was
not when it sent them all at once: none was admitted yet, so each passed the head's check and
had its body read. A hundred connections of a key allowed one request are a hundred bodies held
(gigabytes), or a hundred forms spooled to disk; the store refuses all but one of them only
after every body arrived.

Expected: a body being read counts against the key's ``maxConcurrency`` in this process as an
admitted request does: the second of two requests sent at once is refused from its head (429),
whichever the gateway reads first.

A real gateway (Redis store) before a real aiohttp worker, which is never called: each client
sends its head and the start of a long body, and then waits for an answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.server import Server
from tests.clients import TEST_KEY, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

JSON = b"application/json", b'{"model": "m", "messages": [{"role": "user", "content": "'
FORM = (
    b"multipart/form-data; boundary=zz",
    (b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'),
)
ROUTES = {
    "chat": ("/v1/chat/completions", JSON),
    "embeddings": ("/v1/embeddings", JSON),
    "responses": ("/v1/responses", JSON),
    "count_tokens": ("/v1/messages/count_tokens", JSON),
    "transcription (form)": ("/v1/audio/transcriptions", FORM),
}


Opened = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _begin(port: int, path: str, kind: tuple[bytes, bytes]) -> Opened:
    """A request of a 10 MB body whose first bytes are sent, the rest never."""
    content_type, start = kind
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_KEY}\r\n".encode()
        + b"anthropic-version: 2023-06-01\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: 10000000\r\n\r\n"
        + start
        + b"x" * 1024
    )
    await writer.drain()
    return reader, writer


async def _status(opened: Opened) -> bytes:
    reader, writer = opened
    try:
        return await asyncio.wait_for(reader.readline(), 2.0)
    except TimeoutError:
        return b"(no answer: its body is being read)"
    finally:
        writer.close()


@pytest.mark.parametrize("route", list(ROUTES))
async def test_two_bodies_at_once_of_a_one_at_a_time_key_are_not_both_read(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str, route: str
) -> None:
    """Attack: two requests of a ``maxConcurrency: 1`` key, sent at once, each with a long body
    still coming. Observed (before): neither answered (both bodies read). Expected: one is
    refused from its head, 429 ``concurrency_limit_exceeded``."""
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"], "apis": ["chat", "embeddings", "responses", "audio"]}},
        extra=f"store: {{url: '{redis_url}'}}\n"
        f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', max_concurrency: 1, "
        "permissions: [chat, embeddings, audio]}]}\n",
    )
    server: Server = await gateway_factory(text)
    path, kind = ROUTES[route]
    opened = [await _begin(server.port, path, kind) for _ in range(2)]
    statuses = await asyncio.gather(*(_status(o) for o in opened))
    refused = [s for s in statuses if s.startswith(b"HTTP/1.1 429")]
    assert len(refused) == 1, statuses
    assert not fake.seen
