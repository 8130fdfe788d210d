"""A whole (not streamed) answer its client left before it came was charged nothing.

The client leaving cancels the request; the gateway closes the worker's request (vLLM aborts
it), and the settlement found no upstream named on the exchange (it is named once the worker
answers) and no usage: 0 tokens, not even the prompt. The worker had read the prompt and
generated until then. A key held to 1,000 tokens a day sent ``max_tokens: 900`` (reserved, so
admitted) and left just before each answer: every request admitted, none charged, the workers
generating for it all day; its token limit never bound (only its rpm and concurrency).

Expected: a request its client left while a worker had it is charged, marked estimated: its
prompt estimate and, for a whole answer (whose progress the gateway cannot see), the completion
it reserved, which the worker was allowed to make (a stream is charged what it relayed). So the
key's day is spent after one such request. A request that waited in a queue and never reached
a worker is still charged nothing.

A real gateway (Redis store) before a real aiohttp worker that answers only when its client
left; the admin API reads the key's usage.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream
from tests.hostile.charged import ADMIN, key_totals

LIMIT, ASKED = 1000, 900
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": ASKED},
    ),
    "completions": ("/v1/completions", {"prompt": "hi", "max_tokens": ASKED}),
    "responses (translated)": ("/v1/responses", {"input": "hi", "max_output_tokens": ASKED}),
    "chat, streamed": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": ASKED, "stream": True},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_request_left_while_a_worker_had_it_is_charged(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str, case: str
) -> None:
    """Attack: a request its client leaves once the worker has it. Observed (before): 0
    tokens charged. Expected: the prompt estimate, and the completion reserved for a whole
    answer (none for a stream that relayed nothing)."""
    working, forever = asyncio.Event(), asyncio.Event()

    async def generating(request: web.Request, body: Any) -> web.StreamResponse:
        working.set()
        await forever.wait()  # cancelled when the gateway closes the request
        return web.json_response({})

    fake.script = generating
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"], "apis": ["chat", "completions", "responses"]}},
        extra=f"store: {{url: '{redis_url}'}}\n",
        admin_token="admin-token-0123456789",
    )
    server: Server = await gateway_factory(text)
    path, body = CASES[case]
    async with aiohttp.ClientSession() as http:
        admin = f"http://127.0.0.1:{server.admin_port}/admin/keys"
        async with http.post(admin, json={"owner": "o", "dailyLimit": LIMIT}, headers=ADMIN) as r:
            made = await r.json()
        key = {"Authorization": f"Bearer {made['key']}"}
        asked = asyncio.create_task(
            http.post(
                f"http://127.0.0.1:{server.port}{path}", json={"model": "m", **body}, headers=key
            )
        )
        async with asyncio.timeout(5):
            await working.wait()
        asked.cancel()  # the client leaves
        async with asyncio.timeout(5):
            await fake.closed.wait()
        totals = await key_totals(http, server, made["id"])
    assert totals["requests"] == 1, totals
    assert totals["promptTokens"] > 0, f"the prompt the worker read was not charged: {totals}"
    completion = 0 if body.get("stream") else ASKED
    assert totals["completionTokens"] == completion, totals


async def test_images_left_before_they_came_are_charged_at_their_price(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """Attack: a key held to $1.50 a day asks for one $1.00 image and leaves before it comes,
    again and again. Observed (before): charged nothing (the images made were never seen), so
    every such request was admitted. Expected: the image it reserved is charged: the next
    request of the day is 429 ``budget_exceeded``."""
    working, forever = asyncio.Event(), asyncio.Event()

    async def drawing(request: web.Request, body: Any) -> web.StreamResponse:
        working.set()
        await forever.wait()
        return web.json_response({})

    fake.script = drawing
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"], "apis": ["images"], "pricing": {"per_image": 1.0}}},
        extra=f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', "
        "permissions: [images], daily_budget_usd: 1.5}]}\n",
        admin_token="admin-token-0123456789",
    )
    server: Server = await gateway_factory(text)
    url = f"http://127.0.0.1:{server.port}/v1/images/generations"
    body = {"model": "m", "prompt": "a cat", "n": 1}
    async with aiohttp.ClientSession() as http:
        asked = asyncio.create_task(http.post(url, json=body, headers=AUTH))
        async with asyncio.timeout(5):
            await working.wait()
        asked.cancel()
        async with asyncio.timeout(5):
            await fake.closed.wait()
        assert (await key_totals(http, server, "k"))["requests"] == 1  # the first is settled
        working.clear()
        again = asyncio.create_task(http.post(url, json=body, headers=AUTH))
        reached = asyncio.create_task(working.wait())
        await asyncio.wait({again, reached}, return_when=asyncio.FIRST_COMPLETED)
        reached.cancel()
        status = 0
        if again.done():
            async with await again as r:
                status = r.status
        again.cancel()  # else admitted: the worker has it
    assert status == 429, "a second image was admitted: the first, left, was charged nothing"
