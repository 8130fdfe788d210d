"""Two gateway processes on one Redis: key changes reach both within a second, and every limit
holds exactly across them (the figures of the limits issue)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.multiprocess.conftest import Gateway, admin_call


async def create_key(gateway: Gateway, **fields: Any) -> tuple[str, str]:
    status, body = await admin_call(
        gateway, "POST", "/admin/keys", {"owner": "acme", "name": "t", **fields}
    )
    assert status == 201, body
    return body["id"], body["key"]


async def chat(
    http: aiohttp.ClientSession, gateway: Gateway, key: str, stream: bool = False, **extra: Any
) -> tuple[int, dict[str, str], bytes]:
    async with http.post(
        f"{gateway.url}/v1/chat/completions",
        json={
            "model": "mock-model",
            "stream": stream,
            "messages": [{"role": "user", "content": extra.pop("content", "say:3")}],
            **extra,
        },
        headers={"Authorization": f"Bearer {key}", **extra.pop("headers", {})},
    ) as r:
        return r.status, dict(r.headers), await r.read()


async def test_revocation_reaches_the_other_process_within_a_second(
    two_gateways: tuple[Gateway, Gateway],
) -> None:
    a, b = two_gateways
    key_id, key = await create_key(a)
    async with aiohttp.ClientSession() as http:
        assert (await chat(http, b, key))[0] == 200  # now cached in b
        status, _ = await admin_call(a, "POST", f"/admin/keys/{key_id}/revoke", {"reason": "x"})
        assert status == 200
        revoked_at = asyncio.get_running_loop().time()
        while (await chat(http, b, key))[0] != 401:
            assert asyncio.get_running_loop().time() - revoked_at < 1.0, "b still admits"
            await asyncio.sleep(0.02)
        status, body = await admin_call(a, "POST", f"/admin/keys/{key_id}/regenerate")
        assert status == 200  # regenerate a revoked key: the new secret, still revoked
        new_key = body["key"]
        await admin_call(a, "POST", f"/admin/keys/{key_id}/reactivate")
        changed_at = asyncio.get_running_loop().time()
        while (await chat(http, b, new_key))[0] != 200:
            assert asyncio.get_running_loop().time() - changed_at < 1.0
            await asyncio.sleep(0.02)
        assert (await chat(http, b, key))[0] == 401  # the old secret died at once


async def test_rpm_is_exact_across_processes(two_gateways: tuple[Gateway, Gateway]) -> None:
    """2,000 requests, 500 in flight, rpmLimit 60 → exactly 60 admitted."""
    a, b = two_gateways
    _, key = await create_key(a, rpmLimit=60)
    gate = asyncio.Semaphore(500)
    connector = aiohttp.TCPConnector(limit=500)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int) -> int:
            async with gate:
                return (await chat(http, a if i % 2 else b, key))[0]

        statuses = await asyncio.gather(*(one(i) for i in range(2000)))
    assert statuses.count(200) == 60
    assert statuses.count(429) == 1940


async def test_daily_limit_holds_under_concurrency(two_gateways: tuple[Gateway, Gateway]) -> None:
    """30 concurrent requests with max_tokens 100 against dailyLimit 1000."""
    a, b = two_gateways
    key_id, key = await create_key(a, dailyLimit=1000)
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(
            *(chat(http, (a, b)[i % 2], key, content="say:100", max_tokens=100) for i in range(30))
        )
    assert {s for s, _, _ in results} == {200, 429}
    used = await settled_total(a, key_id, expect=None)
    assert 0 < used <= 1000


async def settled_total(gateway: Gateway, key_id: str, expect: int | None) -> int:
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        status, body = await admin_call(gateway, "GET", f"/admin/keys/{key_id}/usage?days=1")
        assert status == 200
        total = int(body["totals"]["totalTokens"])
        if expect is None or total == expect or asyncio.get_running_loop().time() > deadline:
            if expect is None:
                await asyncio.sleep(0.3)  # nothing to wait for: let the batch writers drain
                _, body = await admin_call(gateway, "GET", f"/admin/keys/{key_id}/usage?days=1")
                return int(body["totals"]["totalTokens"])
            return total
        await asyncio.sleep(0.05)


async def test_concurrency_never_exceeds_the_limit_at_the_upstream(
    two_gateways: tuple[Gateway, Gateway], slow_mock: Any
) -> None:
    """maxConcurrency 5, 50 slow streams through both processes."""
    a, b = two_gateways
    _, key = await create_key(a, maxConcurrency=5)
    state = slow_mock[1]
    state.peak_open = 0
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(
            *(
                chat(
                    http,
                    (a, b)[i % 2],
                    key,
                    stream=True,
                    content="say:20",
                    headers={"x-mock-token-delay": "0.02"},
                )
                for i in range(50)
            )
        )
    admitted = sum(1 for s, _, _ in results if s == 200)
    assert 5 <= admitted < 50
    assert state.peak_open <= 5


async def test_retry_after_is_within_a_second_of_the_truth(
    two_gateways: tuple[Gateway, Gateway],
) -> None:
    a, b = two_gateways
    _, key = await create_key(a, rpmLimit=3)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        first = loop.time()
        for gateway in (a, b, a):
            assert (await chat(http, gateway, key))[0] == 200
        await asyncio.sleep(1.5)  # let the window age, so the truth is not simply 60
        status, headers, _ = await chat(http, b, key)
        truth = 60 - (loop.time() - first)
    assert status == 429
    assert abs(int(headers["Retry-After"]) - truth) <= 1.0


async def test_recorded_tokens_equal_what_the_upstream_reported(
    two_gateways: tuple[Gateway, Gateway],
) -> None:
    """1,000 mixed requests (streams included), through both processes."""
    import orjson

    a, b = two_gateways
    key_id, key = await create_key(a)
    reported = 0
    gate = asyncio.Semaphore(100)
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> int:
            async with gate:
                stream = i % 3 == 0
                extra = {"stream_options": {"include_usage": True}} if stream else {}
                status, _, body = await chat(
                    http, (a, b)[i % 2], key, stream=stream, content=f"say:{1 + i % 17}", **extra
                )
            assert status == 200
            if not stream:
                usage = orjson.loads(body)["usage"]
            else:
                last = [e for e in body.split(b"\n\n") if e.startswith(b"data: {")][-1]
                usage = orjson.loads(last[6:])["usage"]
            return int(usage["prompt_tokens"]) + int(usage["completion_tokens"])

        reported = sum(await asyncio.gather(*(one(i) for i in range(1000))))
    assert await settled_total(a, key_id, expect=reported) == reported
