"""A reservation past what a double holds exactly erased the counters it passed through.

The Redis store adds reservations in Lua, whose numbers are doubles: a key without a token
limit of its own (and an owner whose plan has none) was admitted with ``max_tokens`` 2**62 and
``n`` 128, the day's and month's counters (the key's and the owner's) became ~5.9e20, and the
settlement took the reservation back out of a number that had lost every low digit: the
counters read 0 after, the tokens already used that day and month forgotten. Token counters
always count so that a limit set later applies to what was used already; this undid it, on
demand, for the key and its owner.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gateway.server import Server
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}


HUGE = {
    "chat": ("/v1/chat/completions", {"max_tokens": 2**62, "n": 128}),
    "anthropic": ("/v1/messages", {"max_tokens": 2**62}),
    "completions": ("/v1/completions", {"prompt": "hi", "max_tokens": 2**62, "n": 128}),
}


@pytest.mark.parametrize("api", sorted(HUGE))
async def test_a_huge_reservation_cannot_erase_the_counters(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str, api: str
) -> None:
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"], "apis": ["chat", "completions"]}},
        extra=f"store: {{url: '{redis_url}'}}\n"
        "plans: {free: {max_keys: 5, rpm: null, monthly_tokens: null}}\n",
        admin_token="admin-token-0123456789",
    )
    server: Server = await gateway_factory(text)
    base, admin = f"http://127.0.0.1:{server.port}", f"http://127.0.0.1:{server.admin_port}"
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{admin}/admin/keys", json={"owner": "o"}, headers=ADMIN) as r:
            made = await r.json()
        key = {"Authorization": f"Bearer {made['key']}"}
        for _ in range(3):  # 3 x (5 + 3 tokens) used today: 24
            async with http.post(f"{base}/v1/chat/completions", json=chat, headers=key) as r:
                assert r.status == 200
        path, fields = HUGE[api]
        huge = {**chat, **fields}
        headers = {**key, "anthropic-version": "2023-06-01"} if api == "anthropic" else key
        async with http.post(f"{base}{path}", json=huge, headers=headers) as r:
            assert r.status < 500, await r.text()
        # The admin now holds the key to 30 tokens a day: 24 are used, so a request that may
        # use 10 more must be refused.
        patch = {"dailyLimit": 30}
        async with http.patch(f"{admin}/admin/keys/{made['id']}", json=patch, headers=ADMIN) as r:
            assert r.status == 200, await r.text()
        async with http.post(f"{base}/v1/chat/completions", json=chat, headers=key) as r:
            status = r.status
    assert status == 429, f"{status}: the day's 24 tokens were forgotten"
