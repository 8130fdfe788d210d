"""One request for every JSON API a worker serves, and a gateway serving them all on one fake
worker: what the operator-fields and operator-headers suites send, each with its own hostile
part."""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, Seen

MESSAGES = [{"role": "user", "content": "hi"}]
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "m", "messages": MESSAGES}),
    "chat, streamed": (
        "/v1/chat/completions",
        {"model": "m", "messages": MESSAGES, "stream": True},
    ),
    "anthropic messages": ("/v1/messages", {"model": "m", "messages": MESSAGES, "max_tokens": 8}),
    "responses (translated)": ("/v1/responses", {"model": "m", "input": "hi"}),
    "responses (native)": ("/v1/responses", {"model": "nm", "input": "hi"}),
    "completions": ("/v1/completions", {"model": "m", "prompt": "hi"}),
    "embeddings": ("/v1/embeddings", {"model": "m", "input": "hi"}),
}


def every_api_config(upstream: str) -> str:
    """Model ``m`` (chat, Responses translated, completions, embeddings) and ``nm`` (Responses
    native) on the one worker ``upstream``; the test key may use chat and embeddings."""
    apis = ["chat", "responses", "completions", "embeddings"]
    return gateway_yaml(
        {"up": upstream},
        {
            "m": {"upstreams": ["up"], "apis": apis},
            "nm": {"upstreams": ["up"], "apis": ["responses"], "responses": "native"},
        },
        extra=f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', "
        "permissions: [chat, embeddings]}]}\n",
    )


async def what_the_worker_got(
    gateway_factory: Any,
    fake: FakeUpstream,
    case: str,
    fields: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Seen:
    """``CASES[case]`` sent with ``fields`` added to its body and ``headers`` to its head (an
    Anthropic client's version header on Messages) through a gateway of ``every_api_config``
    in front of ``fake``: what the worker got."""
    path, body = CASES[case]
    server: Server = await gateway_factory(every_api_config(fake.url))
    head = {**AUTH, **(headers or {})}
    if path == "/v1/messages":
        head["anthropic-version"] = "2023-06-01"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}", json={**body, **(fields or {})}, headers=head
        ) as r,
    ):
        await r.read()
    assert fake.seen, f"the worker was not asked ({r.status})"
    return fake.seen[-1]
