"""Usage summaries asked many at once by one owner's key: ``GET /api/usage/summary`` needs only
a valid key (no permission, no rpm or concurrency of the key), and each is read in parts that
share the loop with every admission. One summary of a big owner is cheap for the chats beside it
(``tests/faults/test_usage_report``); sixteen of them at once from the same key interleave their
parts, the loop answers an admission's store reply only after many of them, and the admission
times out: with ``store.on_error: open`` the chats of every owner on the process are admitted
without limits (with ``closed``: refused 503).

A real gateway (Redis store, ``on_error: open``) before a real aiohttp worker; an owner of 600
keys with 30 days of usage each, written in the store's layout. Observed (before): every summary
answered after ~20 s, and most chats beside them admitted blind (no ``x-ratelimit-*`` headers).
Expected: one summary of an owner at a time per process (another at once is 429 with
``Retry-After``), and every chat beside it answered on the store's verdict.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from gateway.auth.keys import sha256_hex
from gateway.limits.windows import days_back
from gateway.server import Server
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream
from tests.faults import redis_control
from tests.redis_server import RedisServer

OWNER = "bigco"
KEYS = 600
DAYS = 30
AT_ONCE = 16
MODEL = "m"
BIG = "review-big-owner-key-0123456789abcdef"  # a key of the big owner
CHAT = "review-chat-key-0123456789abcdef"  # another owner's, chatting beside the reports


def _seed(now: float) -> Iterator[tuple[str | bytes | int, ...]]:
    """The owner's keys and a usage hash per key and day, as the store writes them."""
    fields: dict[str, str | int] = {f"r:{MODEL}": 1, f"p:{MODEL}": 10}
    return redis_control.big_owner(OWNER, KEYS, days_back(now, DAYS), now, fields)


async def _chats(http: aiohttp.ClientSession, base: str, stop: asyncio.Event) -> list[bool]:
    """Chat one request after another until ``stop``: for each 200, whether the store decided
    it (the key's rate-limit headers are on it; an admission without the store has none)."""
    decided = []
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    while not stop.is_set():
        async with http.post(
            f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {CHAT}"}
        ) as r:
            await r.read()
            assert r.status == 200, r.status
            decided.append("x-ratelimit-remaining-tokens" in r.headers)
    return decided


SUMMARY, LIST = "/api/usage/summary?period=30d", "/api/keys"


async def _flood(
    base: str, path: str, stop: asyncio.Event
) -> tuple[list[bool], list[tuple[int, Any, str | None]]]:
    """The reports asked at once by the big owner's key, chats beside them until they end."""
    async with aiohttp.ClientSession() as http:

        async def report() -> tuple[int, Any, str | None]:
            async with http.get(
                f"{base}{path}",
                headers={"Authorization": f"Bearer {BIG}"},
                timeout=aiohttp.ClientTimeout(total=120),
            ) as r:
                return r.status, await r.json(), r.headers.get("Retry-After")

        chats = asyncio.create_task(_chats(http, base, stop))
        at_once = AT_ONCE if path == SUMMARY else 2 * AT_ONCE
        reports = await asyncio.gather(*(report() for _ in range(at_once)))
        stop.set()
        return await chats, reports


@pytest.mark.parametrize("path", [SUMMARY, LIST])
async def test_one_owners_reports_at_once_do_not_blind_the_chats_beside_them(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str, redis_process: RedisServer, path: str
) -> None:
    """Sixteen summaries, or thirty-two lists of the owner's keys, at once from one key."""
    await asyncio.to_thread(redis_control.pipeline, redis_process, _seed(time.time()))
    text = gateway_yaml(
        {"up": fake.url},
        {MODEL: {"upstreams": ["up"]}},
        extra=f"store: {{url: '{redis_url}', on_error: open, timeout_ms: 250}}\n"
        "plans: {free: {max_keys: null, monthly_tokens: null, rpm: null}}\n"
        f"keys: {{static: [{{id: big, owner: {OWNER}, sha256: '{sha256_hex(BIG)}'}}, "
        f"{{id: chat, owner: other, sha256: '{sha256_hex(CHAT)}', daily_limit: 10000000}}]}}\n",
    )
    server: Server = await gateway_factory(text)
    base = f"http://127.0.0.1:{server.port}"
    stop = asyncio.Event()
    # A gateway process freezes its heap once started (server.tune_gc): a full collection then
    # walks only what it made since. This in-process server shares pytest's heap, every earlier
    # test's objects included, and a collection walking them can stall the loop past the
    # store's 250 ms here (1 blind chat of 28 once in a full CI run, never alone), which is not
    # what is tested: they are frozen too, as the server's own would be.
    gc.collect()
    gc.freeze()
    try:
        decided, reports = await _flood(base, path, stop)
    finally:
        gc.unfreeze()
    assert decided, "no chat was answered beside the reports"
    blind = decided.count(False)
    assert not blind, f"{blind} of {len(decided)} chats beside the reports admitted blind"
    served = [body for status, body, _ in reports if status == 200]
    assert served, [status for status, _, _ in reports]
    for body in served:
        if path == SUMMARY:
            assert body["totalRequests"] == KEYS * DAYS, body
        else:
            assert len(body) == KEYS + 1, len(body)  # and the static key itself
    for status, body, retry in reports:
        assert status in (200, 429), (status, body)
        if status == 429:
            assert retry is not None and int(retry) >= 1, body
