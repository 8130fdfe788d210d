"""A key at its concurrency limit is refused before its body is read.

The body is read (up to ``network.max_body_bytes``, 50 MiB by default) after the key is known
but before the admission, which needs the model and the token estimate from the body: a key
allowed one request at a time, with one in flight, still made the gateway take and hold a whole
body per connection before each 429. A hundred connections are gigabytes of memory, from a key
whose limits say one request.

The check: with the key's one slot held by a request in this process, another request is
refused from its head, without a byte of its body sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from gateway.server import Server
from tests.clients import TEST_KEY, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, completion


async def test_a_key_at_its_concurrency_limit_is_refused_from_the_head(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    release, holding = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request, body: Any) -> web.StreamResponse:
        holding.set()
        await release.wait()
        return web.json_response(completion("x"))

    fake.script = held
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"]}},
        extra=f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', "
        "max_concurrency: 1}]}\n",
    )
    server: Server = await gateway_factory(text)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        first = asyncio.create_task(
            http.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {TEST_KEY}"},
            )
        )
        async with asyncio.timeout(5):
            await holding.wait()  # the first request holds the key's one slot
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TEST_KEY}\r\nContent-Length: 10000000\r\n\r\n".encode()
        )
        try:
            head = await asyncio.wait_for(reader.readline(), 2)
        except TimeoutError:
            head = b"(nothing: the gateway waits for the 10 MB body)"
        finally:
            writer.close()
            release.set()
            (await first).release()
    assert head.startswith(b"HTTP/1.1 429"), head
