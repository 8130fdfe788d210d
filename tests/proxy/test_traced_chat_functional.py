"""A chat through a gateway with tracing on: the client's trace is continued, the worker gets a
``traceparent`` of the same trace, and the collector receives the request's span with its
admission, upstream attempt (time to first token as an event) and settlement."""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream
from tests.test_tracing import Receiver, receiver  # noqa: F401 - the collector fixture

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


async def test_a_chat_is_traced_end_to_end(
    gateway_factory: GatewayFactory,
    fake: FakeUpstream,
    receiver: tuple[Receiver, str],  # noqa: F811
) -> None:
    found, url = receiver
    server: Server = await gateway_factory(
        gateway_yaml(
            {"fake": fake.url}, extra=f"tracing: {{otlp_endpoint: '{url}', sample_ratio: 0}}\n"
        )
    )
    body: dict[str, Any] = {
        "model": "fake-model",
        "stream": True,  # a stream's attempt marks its first token
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}/v1/chat/completions",
            json=body,
            headers={**AUTH, "traceparent": PARENT},
        ) as r,
    ):
        assert r.status == 200
        await r.read()
    upstream_parent = fake.seen[-1].headers["traceparent"]
    assert upstream_parent.split("-")[1] == TRACE  # a sampled parent decides, whatever the ratio
    await server.stop()  # what is queued goes out
    spans = found.spans()
    names = sorted(s["name"] for s in spans)
    assert "admission" in names and "settlement" in names, names
    assert {s["traceId"] for s in spans} == {TRACE}
    attempt = next(s for s in spans if s["name"].startswith("upstream"))
    assert [e["name"] for e in attempt.get("events", [])] == ["first_token"]
    assert upstream_parent.split("-")[2] == attempt["spanId"]
    assert "Bearer" not in str(spans) and "test-static-key" not in str(spans)
