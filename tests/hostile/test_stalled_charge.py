"""A client that stops reading a stream was charged nothing for it.

The gateway cuts a stream whose client takes no bytes for ``timeouts.idle``
(``tests/hostile/test_stalled_reader``). That cut is an error of the request, and an errored
request without the worker's ``usage`` (which comes in the stream's last chunk) settled zero
tokens: the worker had generated, and the gateway relayed, megabytes of the answer (the client's
socket buffers hold what it did not read yet), yet the key's token counters, its money budgets
and its usage were untouched. A client leaving the stream is charged what was produced so far
(docs/api.md, Usage accounting); one that makes the gateway cut it must not be charged less.

Each API that streams is asked once by a raw socket that reads the answer's head and then
nothing; a real gateway (Redis store) in front of a real aiohttp worker that streams ~24 MB of
content and reports its usage at the end. Then the key's usage, read through the admin API.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.server import Server
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream
from tests.hostile.charged import ADMIN, key_totals

IDLE = 1.0
EVENTS = 3000


async def _firehose(request: web.Request, body: Any) -> web.StreamResponse:
    """~24 MB of content events as fast as the gateway takes them, the usage at the end."""
    answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await answer.prepare(request)
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m", "created": 1}
    event = b"data: " + orjson.dumps(
        {**chunk, "choices": [{"index": 0, "delta": {"content": "x" * 8000}}]}
    )
    for _ in range(EVENTS):
        await answer.write(event + b"\n\n")
    usage = {"prompt_tokens": 5, "completion_tokens": EVENTS, "total_tokens": EVENTS + 5}
    await answer.write(b"data: " + orjson.dumps({**chunk, "choices": [], "usage": usage}))
    await answer.write(b"\n\ndata: [DONE]\n\n")
    return answer


STREAMS: dict[str, dict[str, Any]] = {  # each relay a stream goes through
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000},
    "/v1/completions": {"prompt": "hi", "max_tokens": 4000},
    "/v1/responses": {"input": "hi", "max_output_tokens": 4000},
}


def _stalled_stream(port: int, path: str, key: str) -> socket.socket:
    """A streamed request whose client reads the head and then nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    body = orjson.dumps({"model": "m", "stream": True, **STREAMS[path]})
    dialect = b"anthropic-version: 2023-06-01\r\n" if path == "/v1/messages" else b""
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n".encode()
        + dialect
        + b"\r\n"
        + body
    )
    sock.recv(1024)
    return sock


@pytest.mark.parametrize("path", sorted(STREAMS))
async def test_a_stream_cut_for_a_stalled_client_is_charged(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str, path: str
) -> None:
    """Attack: a streamed request whose client stops reading after the head. Observed
    (before): the stream is cut after ``timeouts.idle`` and the key is charged 0 tokens (one
    request, an error), whatever the worker made. Expected: the prompt and the completion
    relayed so far are charged, as for a client that left."""
    fake.script = _firehose
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"], "apis": ["chat", "completions", "responses"]}},
        extra=f"store: {{url: '{redis_url}'}}\n",
        admin_token="admin-token-0123456789",
    )
    server: Server = await gateway_factory(text.replace("idle: 5", f"idle: {IDLE}"))
    async with aiohttp.ClientSession() as http:
        admin = f"http://127.0.0.1:{server.admin_port}/admin/keys"
        async with http.post(admin, json={"owner": "o"}, headers=ADMIN) as r:
            assert r.status == 201, await r.text()
            made = await r.json()
        sock = await asyncio.to_thread(_stalled_stream, server.port, path, made["key"])
        try:
            totals = await key_totals(http, server, made["id"])
        finally:
            sock.close()
    assert totals["requests"] == 1, totals
    assert totals["promptTokens"] > 0, totals
    assert totals["completionTokens"] > 0, f"the stalled stream was charged nothing: {totals}"
