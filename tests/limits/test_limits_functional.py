"""Limits through a real gateway (one process, memory store): truthful 429s with Retry-After,
the x-ratelimit headers on admitted answers and stream heads, reservations that cannot be
overrun, and usage that equals what the upstream reported."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml


@pytest.fixture(params=["memory", "redis", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Every limit test runs on each backend: memory, a redis-server and a 3-node cluster."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def limited(store: str, mock_url: str, **limits: Any) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in limits.items())
    return gateway_yaml(
        {"mock": mock_url},
        {"mock-model": {"upstreams": ["mock"]}},
        extra=f"keys: {{static: [{{id: lim, owner: acme, sha256: '{TEST_KEY_SHA}', {fields}}}]}}\n"
        "plans: {free: {max_keys: 5, monthly_tokens: null, rpm: null}}\n"
        f"store: {{url: '{store}'}}\n",
    )


async def chat(
    port: int, content: str = "say:3", stream: bool = False, **extra: Any
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={
                "model": "mock-model",
                "messages": [{"role": "user", "content": content}],
                "stream": stream,
                **extra,
            },
            headers=AUTH,
        ) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def test_rpm_is_exact_and_retry_after_is_true(
    gateway_factory: Any, mock: Any, store_url: str
) -> None:
    server: Server = await gateway_factory(
        limited(store_url, f"http://127.0.0.1:{mock[0]}", rpm_limit=5)
    )
    results = await asyncio.gather(*(chat(server.port) for _ in range(12)))
    statuses = sorted(s for s, _, _ in results)
    assert statuses == [200] * 5 + [429] * 7
    refused = next(h for s, h, _ in results if s == 429)
    assert 59 <= int(refused["Retry-After"]) <= 60
    admitted = [h for s, h, _ in results if s == 200]
    assert sorted(int(h["x-ratelimit-remaining-requests"]) for h in admitted) == [0, 1, 2, 3, 4]
    assert all(h["x-ratelimit-limit-requests"] == "5" for h in admitted)
    body = next(b for s, _, b in results if s == 429)
    assert b'"code":"rate_limit_exceeded"' in body


async def test_stream_heads_carry_the_rate_headers(
    gateway_factory: Any, mock: Any, store_url: str
) -> None:
    server: Server = await gateway_factory(
        limited(store_url, f"http://127.0.0.1:{mock[0]}", rpm_limit=100, daily_limit=100000)
    )
    status, headers, body = await chat(server.port, stream=True)
    assert status == 200 and body.rstrip().endswith(b"data: [DONE]")
    assert headers["x-ratelimit-limit-requests"] == "100"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert headers["x-ratelimit-reset-tokens"].endswith("s")


async def test_daily_reservation_cannot_be_overrun(
    gateway_factory: Any, mock: Any, store_url: str
) -> None:
    """30 concurrent requests of max_tokens 100 against 1000 tokens a day."""
    server: Server = await gateway_factory(
        limited(store_url, f"http://127.0.0.1:{mock[0]}", daily_limit=1000)
    )
    results = await asyncio.gather(
        *(chat(server.port, content="say:100", max_tokens=100) for _ in range(30))
    )
    admitted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert admitted and refused
    assert all(b'"code":"daily_limit_exceeded"' in b for _, _, b in refused)
    assert all(int(h["Retry-After"]) >= 1 for _, h, _ in refused)
    used = await settled_tokens(server, "acme", "lim")
    assert used <= 1000


async def settled_tokens(server: Server, owner: str, key_id: str, expect: int | None = None) -> int:
    """Tokens recorded for a key today, once the background writer has caught up."""
    from gateway.limits.windows import day_id

    store = server.runtime.store
    today = day_id(server.runtime.clock.time())
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        rows = await store.usage(owner, [key_id], today, today)
        total = sum(r.prompt_tokens + r.completion_tokens for r in rows)
        buffered = len(server.runtime.limiter.buffer.items)
        if (expect is None and buffered == 0) or total == expect:
            return total
        if asyncio.get_running_loop().time() > deadline:
            return total
        await asyncio.sleep(0.02)


async def test_concurrency_limit_counts_streams_until_they_end(
    gateway_factory: Any, mock: Any, store_url: str
) -> None:
    server: Server = await gateway_factory(
        limited(store_url, f"http://127.0.0.1:{mock[0]}", max_concurrency=2)
    )
    slow = {"x-mock-token-delay": "0.05", **AUTH}

    async def stream() -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions",
                json={
                    "model": "mock-model",
                    "stream": True,
                    "messages": [{"role": "user", "content": "say:20"}],
                },
                headers=slow,
            ) as r,
        ):
            await r.read()
            return r.status

    statuses = await asyncio.gather(*(stream() for _ in range(6)))
    assert sorted(statuses) == [200, 200, 429, 429, 429, 429]
    status, _, _ = await chat(server.port)  # the slots are free again once streams end
    assert status == 200


@pytest.mark.parametrize("stream", [False, True])
async def test_recorded_usage_equals_the_upstream_report(
    gateway_factory: Any, mock: Any, store_url: str, stream: bool
) -> None:
    server: Server = await gateway_factory(limited(store_url, f"http://127.0.0.1:{mock[0]}"))
    for n in (3, 7, 11):
        status, _, _ = await chat(server.port, content=f"say:{n}", stream=stream)
        assert status == 200
    # The mock counts 1 + 3 prompt tokens for a one-word message, and n completion tokens.
    assert await settled_tokens(server, "acme", "lim", expect=3 * 4 + 21) == 3 * 4 + 21
