"""``POST /v1/messages/count_tokens`` is a request like any other to the key's request limits:
it makes a worker tokenize the whole body (up to ``network.max_body_bytes``) and holds one of
its capacity slots while it does, so a key held to 2 requests a minute must not make 100.

It reserves no tokens and records no usage (it generates nothing): its admission is given back
when the count is answered.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

BODY = {"model": "m", "messages": [{"role": "user", "content": "count me " * 100}]}
HEADERS = {**AUTH, "anthropic-version": "2023-06-01"}


async def test_count_tokens_is_held_to_the_keys_rpm(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """Attack: a key with ``rpmLimit: 2`` counts tokens ten times in a row. Observed (before):
    ten 200s, the worker asked to tokenize ten times. Expected: two counted, then 429
    ``rate_limit_exceeded`` with ``Retry-After``, the worker asked no more; no usage recorded."""
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"]}},
        extra=f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', rpm_limit: 2}}]}}\n",
    )
    server: Server = await gateway_factory(text)
    base = f"http://127.0.0.1:{server.port}"
    statuses = []
    async with aiohttp.ClientSession() as http:
        for _ in range(10):
            async with http.post(
                f"{base}/v1/messages/count_tokens", json=BODY, headers=HEADERS
            ) as r:
                answer = await r.json()
                statuses.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                    assert answer["error"]["type"] == "rate_limit_error", answer
                else:
                    assert answer["input_tokens"] > 0
        async with http.get(f"{base}/api/usage/summary?period=7d", headers=AUTH) as r:
            summary = await r.json()
    assert statuses == [200, 200] + [429] * 8, statuses
    asked = [seen for seen in fake.seen if seen.path.endswith("/tokenize")]
    assert 1 <= len(asked) <= 4, f"the worker tokenized {len(asked)} times"  # 2 counts, ≤ 2 asks
    assert summary["totalRequests"] == 0, summary
