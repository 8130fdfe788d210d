"""Reservations a client shrinks below what the worker will generate: the admission reserves
what the gateway reads from the body, the worker generates what IT reads from the same body.

Each attack uses a key with ``dailyLimit: 1000`` and a worker that reads a body as vLLM does:
pydantic's lax mode takes ``n: "100"`` or ``n: 100.0`` as 100, ``max_completion_tokens`` wins over
``max_tokens`` unless it is null (``max_completion_tokens or max_tokens``) while TGI reads
``max_tokens`` alone, and fields an Anthropic or Responses request does not use are forwarded
as they are. The test asserts that the request is
either refused (400/429) or reserved for everything the worker may produce: the key's counter
may pass its limit by what the worker made beyond the reservation, never by a multiple of it.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import TEST_KEY, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, completion

LIMIT = 1000
MODEL: dict[str, Any] = {"default_max_tokens": 100}
# A ceiling under the limit: a reservation lowered to it must hold the worker to it too.
CEILING = "anthropic max_completion_tokens past the model's ceiling"


def _vllm_n(body: dict[str, Any]) -> int:
    n = body.get("n")
    return int(float(n)) if isinstance(n, (int, float, str)) and n not in ("", None) else 1


def _max_tokens(body: dict[str, Any]) -> int:
    """The most a worker may read as the limit: vLLM takes ``max_completion_tokens or
    max_tokens``, TGI and older servers ``max_tokens`` alone."""
    sent = [body.get(name) for name in ("max_completion_tokens", "max_tokens")]
    return max((int(v) for v in sent if isinstance(v, (int, float))), default=4096)


async def _as_vllm(request: web.Request, body: Any) -> web.StreamResponse:
    """Generates every token it is allowed: ``n`` choices of ``max_tokens`` each."""
    made = _vllm_n(body) * _max_tokens(body)
    return web.json_response(completion("x", prompt=5, completion_tokens=made))


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "n as a string": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "n": "100"},
    ),
    "n as a float": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "n": 100.0},
    ),
    "max_completion_tokens null": (
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": None,
            "max_tokens": 3000,
        },
    ),
    "a small max_completion_tokens beside a large max_tokens": (
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 1,
            "max_tokens": 3000,
        },
    ),
    "anthropic with a small max_completion_tokens": (
        "/v1/messages",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3000,
            "max_completion_tokens": 1,
        },
    ),
    CEILING: (
        "/v1/messages",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 10,
            "max_completion_tokens": 5000,
        },
    ),
    "anthropic n as a string": (
        "/v1/messages",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "n": "100"},
    ),
    "responses n as a string": (
        "/v1/responses",
        {"input": "hi", "max_output_tokens": 20, "n": "100"},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_reservation_covers_what_the_worker_may_generate(
    gateway_factory: Any, fake: FakeUpstream, case: str
) -> None:
    """Observed (before): 200, the reservation was ~20 tokens (or the 4,096 default, or 1),
    the worker generated 1,000-3,000, and the key was charged past its 1,000-token day.
    Expected: refused (400 naming the field, or 429), or the worker never asked for more
    than the reservation."""
    fake.script = _as_vllm
    model = {**MODEL, "max_output_tokens": 500} if case == CEILING else MODEL
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"], "apis": ["chat", "responses"], **model}},
        extra=(
            f"keys: {{static: [{{id: lim, owner: acme, sha256: '{TEST_KEY_SHA}', "
            f"daily_limit: {LIMIT}}}]}}\n"
        ),
    )
    server: Server = await gateway_factory(text)
    path, body = CASES[case]
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}",
            json={"model": "m", **body},
            headers={"Authorization": f"Bearer {TEST_KEY}", "anthropic-version": "2023-06-01"}
            if path == "/v1/messages"
            else {"Authorization": f"Bearer {TEST_KEY}"},
        ) as r,
    ):
        answer = await r.read()
    if r.status in (400, 429):
        assert fake.seen == [], "refused, yet the worker was asked"
        return
    sent = fake.seen[-1].body
    allowed = _vllm_n(sent) * _max_tokens(sent)
    assert r.status == 200, (r.status, answer[:200])
    assert allowed <= LIMIT, f"admitted, the worker may make {allowed} tokens on a {LIMIT} day"
