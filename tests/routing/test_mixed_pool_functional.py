"""A model whose upstreams are partly capped (``max_concurrency``), on a shared store: the
upstream the policy chose serves the request while it has room, capped or not (found by review:
every first attempt went to the first upstream without a cap, the capped ones sat idle and the
policy was overridden)."""

from __future__ import annotations

import aiohttp

from tests.clients import TEST_KEY
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream


async def test_round_robin_reaches_the_capped_upstream_too(
    gateway_factory: GatewayFactory, redis_url: str
) -> None:
    capped, free = FakeUpstream(), FakeUpstream()
    await capped.start()
    await free.start()
    try:
        text = gateway_yaml(
            {"capped": capped.url, "free": free.url},
            {"m": {"upstreams": ["capped", "free"], "routing": {"policy": "round_robin"}}},
            extra=f"store: {{url: '{redis_url}'}}\n",
        ).replace(f"url: '{capped.url}',", f"url: '{capped.url}', max_concurrency: 10,")
        server = await gateway_factory(text)
        async with aiohttp.ClientSession() as http:
            for n in range(8):  # one at a time: the capped upstream always has room
                async with http.post(
                    f"http://127.0.0.1:{server.port}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {TEST_KEY}"},
                    json={"model": "m", "messages": [{"role": "user", "content": f"hi {n}"}]},
                ) as reply:
                    assert reply.status == 200, await reply.text()
        assert len(capped.seen) == 4 and len(free.seen) == 4
    finally:
        await capped.stop()
        await free.stop()
