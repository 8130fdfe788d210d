"""Exact token counts for ``POST /v1/messages/count_tokens``, from a worker's ``POST /tokenize``
when it has one.

vLLM's shape first: ``{"model", "messages"}`` (its chat template applied, tools included) →
``{"count": n, "tokens": [...]}``. llama.cpp's server reads only ``{"content"}`` and answers
``{"tokens": [...]}`` (an empty list for a body without ``content``): then the conversation's
text is sent as ``content`` and its tokens counted (without the chat template's own tokens).

Anything else — no upstream, no ``/tokenize`` (404), an error, a timeout, an answer without a
count — is None, and the caller answers its estimate, marked so.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.config.schema import Upstream
from gateway.dialects import anthropic
from gateway.errors import GatewayError
from gateway.proxy.apis.forward import poster
from gateway.proxy.upstream import read_body
from gateway.routing.capacity import take
from gateway.routing.router import ModelRoute
from gateway.runtime import Runtime

TOKENIZE_SECONDS = 5.0  # the longest a count waits for a worker before it estimates


async def count_tokens_exact(
    runtime: Runtime, route: ModelRoute, body: dict[str, Any], request_id: str | None = None
) -> int | None:
    """The exact input tokens of an Anthropic Messages ``body`` for the model of ``route``, as
    one of its workers counts them; None when none can."""
    try:  # a count_tokens body has no max_tokens; the translation wants one
        chat = anthropic.to_openai_request({**body, "max_tokens": 1}, route.upstream_model)
    except GatewayError:
        return None
    picked = runtime.balancer.pick(route.upstreams)
    upstream = await take(runtime.capacity, picked, route.upstreams) if picked else None
    if upstream is None:  # none free (every one full across processes)
        return None
    ask: dict[str, Any] = {"model": route.upstream_model, "messages": chat["messages"]}
    if chat.get("tools"):
        ask["tools"] = chat["tools"]
    runtime.balancer.acquire(upstream)
    try:
        async with asyncio.timeout(min(TOKENIZE_SECONDS, upstream.timeouts.first_byte)):
            answer = await _tokenize(runtime, upstream, ask, request_id)
            if answer is not None and "count" not in answer and not answer.get("tokens"):
                answer = await _tokenize(runtime, upstream, {"content": _text(chat)}, request_id)
    except (TimeoutError, GatewayError):
        return None
    finally:
        runtime.balancer.release(upstream)
    return _count(answer)


async def _tokenize(
    runtime: Runtime, upstream: Upstream, ask: dict[str, Any], request_id: str | None
) -> dict[str, Any] | None:
    headers = {"Content-Type": "application/json"}
    if upstream.api_key:
        headers["Authorization"] = f"Bearer {upstream.api_key}"
    if request_id:
        headers["X-Request-ID"] = request_id
    post = poster(runtime, "/tokenize")
    response = await post(upstream, orjson.dumps(ask), headers, False, None)
    try:
        raw = await read_body(response, upstream)
    finally:
        response.release()
    if response.status != 200:
        return None
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) else None


def _count(answer: dict[str, Any] | None) -> int | None:
    if answer is None:
        return None
    found = answer.get("count")
    if type(found) is int and found >= 0:
        return found
    tokens = answer.get("tokens")
    if isinstance(tokens, list) and tokens:
        return len(tokens)
    return None


def _text(chat: dict[str, Any]) -> str:
    """The text of a translated conversation, each message's on its own line."""
    lines = []
    for message in chat.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            lines.append(content)
        elif isinstance(content, list):
            lines.extend(p["text"] for p in content if isinstance(p.get("text"), str))
    return "\n".join(lines)
