"""Chats through a real gateway with tracing on, over sockets: the client's trace is continued,
the worker gets a ``traceparent`` naming the attempt's span, and the OTLP/HTTP receiver decodes
the request's span with its admission, upstream attempt (time to first token as an event) and
settlement. With ``sample_ratio: 0`` a new trace is never exported (its worker is told so), a
client's sampled trace still is, and no secret is anywhere in the exported bytes."""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream
from tests.tracing.receiver import CLIENT, INTERNAL, SERVER, Receiver, attrs

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
REFUSED_TRACE = "5cf92f3577b34da6a3ce929d0e0e4737"
ADMIN_TOKEN = "admin-token-that-must-not-be-traced-0123"
BODY: dict[str, Any] = {
    "model": "fake-model",
    "stream": True,  # a stream's attempt marks its first token
    "messages": [{"role": "user", "content": "a prompt that must not be traced"}],
}


async def chat(server: Server, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}/v1/chat/completions", json=BODY, headers=headers
        ) as r,
    ):
        await r.read()
        return r.status


async def overview(server: Server) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{server.admin_port}/admin/console/overview",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as r,
    ):
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


async def test_chats_are_traced_end_to_end(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    server: Server = await gateway_factory(
        gateway_yaml(
            {"fake": fake.url},
            extra=f"tracing: {{otlp_endpoint: '{receiver.url}', sample_ratio: 0,"
            " service_name: edge-under-test}\n",
            admin_token=ADMIN_TOKEN,
        )
    )
    for _ in range(3):  # new traces, never sampled at ratio 0
        assert await chat(server, AUTH) == 200
    unsampled = [seen.headers["traceparent"] for seen in fake.seen]
    parent = f"00-{TRACE}-{CLIENT_SPAN}-01"  # a sampled client trace: its flag decides
    assert await chat(server, {**AUTH, "traceparent": parent, "tracestate": "congo=t61rcWk"}) == 200
    worker = fake.seen[-1].headers
    refused = f"00-{REFUSED_TRACE}-{CLIENT_SPAN}-01"
    wrong_key = {"Authorization": "Bearer sk-not-a-key-but-secret", "traceparent": refused}
    assert await chat(server, wrong_key) == 401
    stats = (await overview(server))["tracing"]
    assert stats["enabled"] is True and stats["sampleRatio"] == 0
    await server.stop()  # what is queued goes out before the process ends

    for told in unsampled:  # the worker is told not to sample what the gateway did not
        assert int(told.split("-")[3], 16) & 1 == 0, told
    spans = receiver.spans()
    assert {s.trace_id.hex() for s in spans} == {TRACE, REFUSED_TRACE}  # nothing of ratio 0
    resource = attrs(receiver.resources()[0].resource.attributes)
    assert resource["service.name"] == "edge-under-test"

    traced = [s for s in spans if s.trace_id.hex() == TRACE]
    assert sorted(s.name for s in traced) == [
        "POST /v1/chat/completions",
        "admission",
        "settlement",
        "upstream",
    ]
    (root,) = [s for s in traced if s.kind == SERVER]
    assert root.parent_span_id.hex() == CLIENT_SPAN  # the client's trace, continued
    children = [s for s in traced if s is not root]
    assert all(s.parent_span_id == root.span_id for s in children)
    assert sorted(s.kind for s in children) == sorted([INTERNAL, INTERNAL, CLIENT])
    (attempt,) = [s for s in traced if s.name == "upstream"]
    assert [e.name for e in attempt.events] == ["first_token"]
    assert attempt.start_time_unix_nano <= attempt.events[0].time_unix_nano
    assert attempt.events[0].time_unix_nano <= attempt.end_time_unix_nano
    assert attrs(attempt.attributes) == {"gateway.upstream": "fake", "gateway.attempt": 1}
    assert worker["traceparent"] == f"00-{TRACE}-{attempt.span_id.hex()}-01"
    assert worker["tracestate"] == "congo=t61rcWk"
    got = attrs(root.attributes)
    assert got["http.response.status_code"] == 200 and got["gateway.stream"] is True
    assert got["gateway.key_id"] == "test" and got["gen_ai.request.model"] == "fake-model"
    assert got["gateway.upstream"] == "fake" and got["client.address"] == "127.0.0.1"

    (refusal,) = [s for s in spans if s.trace_id.hex() == REFUSED_TRACE]
    assert attrs(refusal.attributes)["http.response.status_code"] == 401
    assert attrs(refusal.attributes)["error.type"] == "invalid_api_key"

    exported = b"".join(receiver.raw)
    for secret in (TEST_KEY, "Bearer", "sk-not-a-key-but-secret", ADMIN_TOKEN, "must not be"):
        assert secret.encode() not in exported, secret


async def test_the_other_apis_are_traced_too(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    """Completions (as every API but chat, which opens its own) gets a request span whose
    attempt is its child, in the client's trace."""
    server: Server = await gateway_factory(
        gateway_yaml({"fake": fake.url}, extra=f"tracing: {{otlp_endpoint: '{receiver.url}'}}\n")
    )
    parent = f"00-{TRACE}-{CLIENT_SPAN}-01"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}/v1/completions",
            json={"model": "fake-model", "prompt": "a prompt that must not be traced"},
            headers={**AUTH, "traceparent": parent},
        ) as r,
    ):
        assert r.status == 200, await r.text()
    await server.stop()  # what is queued goes out before the process ends
    traced = [s for s in receiver.spans() if s.trace_id.hex() == TRACE]
    (root,) = [s for s in traced if s.kind == SERVER]
    assert root.name == "POST /v1/completions"
    assert root.parent_span_id.hex() == CLIENT_SPAN
    (attempt,) = [s for s in traced if s.name == "upstream"]
    assert attempt.parent_span_id == root.span_id
    assert fake.seen[-1].headers["traceparent"] == f"00-{TRACE}-{attempt.span_id.hex()}-01"
    assert b"must not be traced" not in b"".join(receiver.raw)
