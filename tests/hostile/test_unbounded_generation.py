"""A request that names no output limit reserves the model's ``default_max_tokens``; the worker
must then be held to it. vLLM's own default is the rest of the context window (chat, and
completions sent ``max_tokens: null``), and ``ignore_eos: true`` or ``min_tokens`` make it
generate all of it: a 4,096-token reservation became a 100,000-token answer, charged past every
token and money limit, on every request.

The check: when the client sends no limit, the worker is sent one, at most the reservation.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, completion

DEFAULT = 100  # the model's default_max_tokens, the reservation of a request without a limit
CONTEXT = 5000  # what a vLLM worker generates without a limit, ignore_eos set


def _limit(body: dict[str, Any]) -> int | None:
    found = [body.get(n) for n in ("max_completion_tokens", "max_tokens", "max_output_tokens")]
    sent = [v for v in found if isinstance(v, int)]
    return max(sent) if sent else None


async def _vllm(request: web.Request, body: Any) -> web.StreamResponse:
    made = _limit(body) or CONTEXT
    if request.path.endswith("/responses"):  # a native Responses worker
        return web.json_response(
            {
                "id": "resp_0123456789abcdef0123456789abcdef",
                "object": "response",
                "created_at": 1,
                "status": "completed",
                "model": body["model"],
                "output": [
                    {
                        "id": "msg_1",
                        "type": "message",
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": "x", "annotations": []}],
                    }
                ],
                "usage": {"input_tokens": 5, "output_tokens": made, "total_tokens": made + 5},
            }
        )
    if request.path.endswith("/completions") and "chat" not in request.path:
        return web.json_response(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "model": body["model"],
                "choices": [{"index": 0, "text": "x", "finish_reason": "length"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": made, "total_tokens": made + 5},
            }
        )
    return web.json_response(completion("x", prompt=5, completion_tokens=made))


CASES = [
    pytest.param(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "ignore_eos": True},
        False,
        id="chat",
    ),
    pytest.param("/v1/responses", {"input": "hi", "ignore_eos": True}, False, id="responses"),
    pytest.param(
        "/v1/responses",
        {"input": "hi", "ignore_eos": True},
        True,
        id="responses native",
    ),
    pytest.param(
        "/v1/completions",
        {"prompt": "hi", "max_tokens": None, "ignore_eos": True},
        False,
        id="completions max_tokens null",
    ),
    pytest.param(
        "/v1/completions",
        {"prompt": ["a", "b"], "n": 2, "ignore_eos": True},
        False,
        id="completions without max_tokens",
    ),
]


@pytest.mark.parametrize(("path", "body", "native"), CASES)
async def test_the_worker_is_held_to_the_reservation(
    gateway_factory: Any, fake: FakeUpstream, path: str, body: dict[str, Any], native: bool
) -> None:
    """Observed (before): the worker got no limit and made 5,000 tokens on a 100-token
    reservation. Expected: the worker is sent a limit of at most the reservation."""
    fake.script = _vllm
    apis = ["chat", "responses", "completions"]
    model = {"upstreams": ["up"], "apis": apis, "default_max_tokens": DEFAULT}
    if native:
        model["responses"] = "native"
    server: Server = await gateway_factory(gateway_yaml({"up": fake.url}, {"m": model}))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}", json={"model": "m", **body}, headers=AUTH
        ) as r,
    ):
        answer = await r.read()
    assert r.status == 200, answer[:200]
    sent = _limit(fake.seen[-1].body)
    assert sent is not None and sent <= DEFAULT, f"the worker was sent max_tokens={sent}"
