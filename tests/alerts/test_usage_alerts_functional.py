"""Usage thresholds from real traffic: chats through the gateway move a key's daily tokens past
50 % of its limit, and the webhook hears of it once, signed, with the key and the numbers."""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.server import Server
from tests.alerts.conftest import SECRET, Receiver, alerts_yaml
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream


async def test_chats_past_half_a_daily_limit_send_one_threshold_event(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    key = (
        f"keys: {{static: [{{id: k9, owner: acme, sha256: '{TEST_KEY_SHA}', daily_limit: 200}}]}}\n"
    )
    server: Server = await gateway_factory(
        gateway_yaml({"fake": fake.url}, extra=key + alerts_yaml(receiver.url))
    )
    body: dict[str, Any] = {
        "model": "fake-model",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with aiohttp.ClientSession() as http:
        for _ in range(8):  # each reserves ~30 tokens and settles to the fake's 12
            async with http.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions", json=body, headers=AUTH
            ) as r:
                assert r.status == 200
    await receiver.wait(lambda: len(receiver.of("usage.threshold")) >= 1)
    event = receiver.of("usage.threshold")[0]
    assert event.signed_with(SECRET)
    data = event.body["data"]
    assert (data["keyId"], data["limit"], data["percent"], data["max"]) == (
        "k9",
        "dailyLimit",
        50,
        200,
    )
    assert data["used"] >= 100
    assert len(receiver.of("usage.threshold")) == 1  # 80 % not reached: nothing more
