"""The Anthropic Messages dialect: telling an Anthropic body from an OpenAI one, translating a
Messages request into the OpenAI chat request the upstream gets, estimating a request's tokens, and
the Anthropic model list. Pure: dict in, dict out. The request's messages are translated by
``anthropic_messages``, its other fields by ``anthropic_options``; the answer side by
``anthropic_answer`` (whole answers) and ``anthropic_stream`` (streams, whose events
``anthropic_events`` writes). What callers need is re-exported here, so they import this module
only. Each module's docstring lists the choices it makes where the Anthropic contract leaves them
open.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.dialects import anthropic_options as options
from gateway.dialects.anthropic_answer import Usage, to_anthropic_response
from gateway.dialects.anthropic_events import (
    TEXT_DELTA_END,
    encode_event,
    encode_events,
    error_event,
    ping,
)
from gateway.dialects.anthropic_messages import (
    has_anthropic_block,
    openai_messages,
    system_messages,
)
from gateway.dialects.anthropic_stream import StreamTranslator, plain_text

__all__ = [
    "MESSAGES_PATHS",
    "TEXT_DELTA_END",
    "StreamTranslator",
    "Usage",
    "by_body",
    "by_route",
    "encode_event",
    "encode_events",
    "error_event",
    "estimate_tokens",
    "is_anthropic",
    "models_list",
    "ping",
    "plain_text",
    "to_anthropic_response",
    "to_openai_request",
]

# estimate_tokens: about 4 characters a token for English text and JSON, a few tokens of chat
# template per message and per request, and an image at Anthropic's ceiling for a full-size image
# (the estimate feeds token reservations, where erring high is the safe side).
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_REQUEST = 3
_TOKENS_PER_IMAGE = 1600
_IMAGE_TYPES = ("image", "image_url", "input_image")
# The gateway's own Messages routes (a pass-through path that ends in /messages is not one)
MESSAGES_PATHS = frozenset(
    {
        "/v1/messages",
        "/api/v1/messages",
        "/v1/messages/count_tokens",
        "/api/v1/messages/count_tokens",
    }
)
_UNCOUNTED = frozenset(
    {"role", "type", "id", "tool_use_id", "tool_call_id", "cache_control", "signature"}
)


def by_route(path: str, has_anthropic_version: bool) -> bool:
    """The dialect as the request's head tells it, before any body: Anthropic with an
    ``anthropic-version`` header or on a Messages route (``/messages``, ``/messages/count_tokens``).
    The edge decides it for every request (its refusals speak it); a chat body may refine it
    once (``by_body``). Only the gateway's own routes count: a pass-through path ending in
    ``/messages`` (an Assistants thread's, say) keeps OpenAI's form."""
    return has_anthropic_version or path.rstrip("/") in MESSAGES_PATHS


def by_body(body: object) -> bool:
    """Whether a chat body on an OpenAI route is an Anthropic Messages body all the same (a
    ``system`` field, Anthropic tools or content blocks)."""
    if not isinstance(body, dict):
        return False
    if "system" in body:
        return True
    tools = body.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and "input_schema" in t for t in tools):
        return True
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:  # (a loop: a generator costs more, made per request)
            if has_anthropic_block(message):
                return True
    return False


def is_anthropic(path: str, has_anthropic_version: bool, body: object) -> bool:
    """Whether a chat request speaks Anthropic Messages (otherwise OpenAI chat)."""
    return by_route(path, has_anthropic_version) or by_body(body)


def to_openai_request(
    body: dict[str, Any], upstream_model: str, max_output_tokens: int | None = None
) -> dict[str, Any]:
    """An Anthropic Messages request as the OpenAI chat request for the upstream; a
    ``max_tokens`` above ``max_output_tokens`` (the model's, when configured) is lowered to it.

    The commonest request takes the general path's steps that apply to it, with its messages
    translated in one pass (``_plain_messages``); the property tests hold the two paths to the
    same output."""
    messages = _plain_messages(body)
    if messages is None:
        return _translated_request(body, upstream_model, max_output_tokens)
    out: dict[str, Any] = {"model": upstream_model}
    out["max_tokens"] = options.max_tokens(body, max_output_tokens)
    out["messages"] = messages
    out.update(options.sampling(body))
    out.update(options.streaming(body.get("stream")))
    return out


# The fields of the commonest request: a conversation of string messages, a string system prompt
# at most, sampling settings, streamed or not; nothing else to validate or carry.
_PLAIN_FIELDS = frozenset(
    ("model", "messages", "max_tokens", "system", "stream", "temperature", "top_p")
)


def _plain_messages(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The OpenAI messages of the commonest request (its ``system`` first), in one pass with no
    call per message (the general translation costs more than the rest of the request's own
    Python on a cold cache); None for any other request, which takes the general path and its
    diagnostics. A request this accepts gets nothing from the general path's other steps."""
    system, stream = body.get("system"), body.get("stream")
    if (
        not (system is None or type(system) is str)
        or not (stream is None or type(stream) is bool)
        or not _PLAIN_FIELDS.issuperset(body)
    ):
        return None
    messages = body.get("messages")
    if type(messages) is not list or not messages:
        return None
    out_messages = [{"role": "system", "content": system}] if system else []
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return None
        role, content = message.get("role"), message.get("content")
        if (role != "user" and role != "assistant") or type(content) is not str or not content:
            return None
        out_messages.append({"role": role, "content": content})
    return out_messages


def _translated_request(
    body: dict[str, Any], upstream_model: str, ceiling: int | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"model": upstream_model, "max_tokens": options.max_tokens(body, ceiling)}
    out["messages"] = system_messages(body.get("system")) + openai_messages(body.get("messages"))
    out.update(options.sampling(body))
    out.update(options.tooling(body))
    out.update(options.streaming(body.get("stream")))
    out.update(options.reasoning(body))
    for key, value in body.items():
        if key == "chat_template_kwargs":
            options.merge_template_kwargs(out, value)
        elif key not in options.CONSUMED and key not in options.STRIPPED:
            out.setdefault(key, value)
    return out


def models_list(models: list[tuple[str, int]]) -> dict[str, Any]:
    """The Anthropic model list of ``(id, created epoch seconds)`` pairs, one page."""
    data = [
        {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lifecycle": "active",  # required by the anthropic SDK's ModelInfo since 2.x
        }
        for model_id, created in models
    ]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"data": data, "has_more": False, "first_id": first, "last_id": last}


def estimate_tokens(body: dict[str, Any]) -> int:
    """A cheap estimate of a request's prompt tokens, Anthropic or OpenAI body.

    About a token per 4 characters of every text (system, messages, tool calls and results, tool
    definitions with their schemas' keys), plus a few per message and request, and a flat count per
    image (see the constants above).
    """
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    chars, images = _measure([body.get("system"), messages], keys=False)
    chars += _measure(body.get("tools"), keys=True)[0]
    tokens = -(-chars // _CHARS_PER_TOKEN)
    return (
        _TOKENS_PER_REQUEST
        + _TOKENS_PER_MESSAGE * len(messages)
        + tokens
        + _TOKENS_PER_IMAGE * images
    )


def _measure(value: object, keys: bool) -> tuple[int, int]:
    """Characters and images in a JSON value; iterative, so no nesting depth can break it."""
    chars = images = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if not keys and item.get("type") in _IMAGE_TYPES:
                images += 1
                continue
            for key, child in item.items():
                if keys:
                    chars += len(key)
                elif key in _UNCOUNTED:
                    continue
                stack.append(child)
    return chars, images
