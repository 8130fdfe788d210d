"""Clients that all send the same ``X-Request-ID``: the id is a label only (docs/api.md), never the
identity of what the limiter counts (issue 14, item 1: "40 parallel streams sharing one
X-Request-ID on a key with rpmLimit 5, maxConcurrency 2 were all admitted ... and usage recorded
1 request").

One gateway (in this process) on ``memory://`` and on Redis; the upstream streams slowly enough
that 40 parallel requests overlap, and counts how many it serves at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.faults.conftest import StartServer
from tests.faults.harness import (
    Answer,
    Endpoint,
    Key,
    chat,
    chat_when_free,
    config_text,
    eventually,
    outcomes,
    served,
    usage_totals,
)
from tests.faults.upstreams import RawUpstream
from tests.redis_server import RedisServer

SHARED_ID = "client-chosen-id-0001"
RPM = 5


@pytest.fixture
async def slow_upstream() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream(mode="ok", gap=0.05)  # seven events 0.05 s apart: ~0.35 s a stream
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_shared_request_id_counts_every_request(
    store: str,
    fault_redis: RedisServer,
    in_process: StartServer,
    slow_upstream: RawUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """40 parallel streams with one X-Request-ID on a key with rpm 5 and concurrency 2: at most
    2 reach the upstream at once and at most 5 are admitted; the later requests with the same
    id, one after the other, are admitted until the 5th (a concurrency refusal is tried again
    for 1 s, while the previous one's settlement is written) and refused rate_limit_exceeded
    after it, so no lease of the shared id blocks the key; another owner's request with the
    same id is admitted; usage records every admitted request with its tokens; every answer
    still carries the id."""
    url = fault_redis.url if store == "redis" else "memory://"
    key = Key("shared", owner="acme", rpm=RPM, concurrency=2, daily=1_000_000)
    other = Key("other", owner="globex", rpm=RPM, concurrency=2, daily=1_000_000)
    server = await in_process(
        config_text(store_url=url, keys=[key, other], upstream_url=slow_upstream.url)
    )
    gateway = Endpoint("in-process", server.port, server.admin_port)
    label = {"X-Request-ID": SHARED_ID}

    burst = await asyncio.gather(
        *(chat(http, gateway, key, stream=True, headers=label) for _ in range(40))
    )
    answers: list[Answer] = list(burst)
    admitted = sum(1 for a in answers if a.status == 200)
    assert slow_upstream.peak <= 2, (
        f"{slow_upstream.peak} streams of a key with max_concurrency 2 reached the upstream at "
        f"once: {outcomes(answers)}"
    )
    assert 1 <= admitted <= RPM, f"rpm {RPM}, concurrency 2, 40 at once: {outcomes(answers)}"
    refused = {(a.status, a.code) for a in answers if a.status != 200}
    assert refused <= {(429, "concurrency_limit_exceeded"), (429, "rate_limit_exceeded")}, outcomes(
        answers
    )

    for n in range(admitted + 1, RPM + 1):  # one after the other: the rest of the minute
        tried = await chat_when_free(http, gateway, key, stream=True, headers=label)
        answers.extend(tried)
        assert tried[-1].status == 200, (
            f"request {n} of {RPM} in the minute (same id): {tried[-1]}; {outcomes(tried)}"
        )
    tried = await chat_when_free(http, gateway, key, stream=False, headers=label)
    answers.extend(tried)
    assert (tried[-1].status, tried[-1].code) == (429, "rate_limit_exceeded"), (
        f"request {RPM + 1} in the minute (same id): {tried[-1]}; all: {outcomes(answers)}"
    )

    elsewhere = await chat(http, gateway, other, stream=True, headers=label)
    assert elsewhere.complete, f"another owner's request with the same id: {elsewhere}"

    assert all(a.headers.get("x-request-id") == SHARED_ID for a in [*answers, elsewhere]), (
        "an answer without the client's X-Request-ID"
    )
    assert all(a.complete for a in answers if a.status == 200), outcomes(answers)
    tokens, requests = served(answers)
    assert requests == RPM
    totals: dict[str, dict[str, int]] = {}

    async def recorded() -> bool:
        totals.update(mine=await usage_totals(http, gateway, key))
        totals.update(theirs=await usage_totals(http, gateway, other))
        mine, theirs = totals["mine"], totals["theirs"]
        return (mine["requests"], mine["totalTokens"], theirs["requests"]) == (
            requests,
            tokens,
            1,
        )

    await eventually(
        recorded,
        3.0,
        lambda: (
            f"usage recorded {totals} for {requests} admitted requests ({tokens} tokens) and "
            "the other owner's 1"
        ),
    )
