"""Rerank and score settled nothing when the worker reported no usage (many rerankers and
Cohere-shaped servers send none): the reservation was admitted and then given back whole, so a
key held to a daily token limit reranked without end, for free. Every other model API settles
its estimate then, marked estimated; so do these now (the reservation's prompt: the body, and
one side read again for every pair scored).

A real gateway (Redis store) in front of a real aiohttp worker that never reports usage.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

CALLS = {
    "/v1/rerank": {"query": "capital of norway", "documents": ["Oslo", "Bergen", "Trondheim"]},
    "/v1/score": {"text_1": "capital of norway", "text_2": ["Oslo", "Bergen", "Trondheim"]},
}


async def _no_usage(request: web.Request, body: Any) -> web.StreamResponse:
    return web.json_response(
        {
            "id": "r-1",
            "model": body["model"],
            "results": [{"index": 0, "relevance_score": 0.9}],
            "data": [{"index": 0, "object": "score", "score": 0.9}],
        }
    )


@pytest.mark.parametrize("path", sorted(CALLS))
async def test_unreported_usage_is_settled_as_an_estimate(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str, path: str
) -> None:
    """Attack: a key with ``dailyLimit: 300`` calls rerank (score) 40 times against a worker
    that reports no usage. Observed (before): 40 200s, 0 tokens counted, the limit never
    reached. Expected: each call settles its estimate (marked estimated), and the key is
    refused 429 ``daily_limit_exceeded`` once its 300 tokens are spent."""
    fake.script = _no_usage
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"], "apis": ["rerank"]}},
        extra=f"store: {{url: '{redis_url}'}}\n"
        f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', daily_limit: 300, "
        "permissions: [embeddings]}]}\n",
    )
    server: Server = await gateway_factory(text)
    base = f"http://127.0.0.1:{server.port}"
    statuses = []
    async with aiohttp.ClientSession() as http:
        for _ in range(40):
            async with http.post(
                f"{base}{path}", json={"model": "m", **CALLS[path]}, headers=AUTH
            ) as r:
                statuses.append(r.status)
                if r.status == 429:
                    answer = await r.json()
                    assert answer["error"]["code"] == "daily_limit_exceeded", answer
                    break
        async with http.get(f"http://127.0.0.1:{server.admin_port}/metrics") as r:
            metrics = await r.text()
    served = statuses.count(200)
    assert statuses[-1] == 429, f"{served} calls served, none refused: the work was free"
    assert 3 <= served < 40, statuses
    estimated = [
        line
        for line in metrics.splitlines()
        if line.startswith("gateway_tokens_total{")
        and 'api="rerank"' in line
        and 'estimated="true"' in line
        and 'kind="prompt"' in line
    ]
    assert estimated and float(estimated[0].rsplit(" ", 1)[1]) > 0, metrics
