"""Bytes for the mock worker: vLLM-shaped SSE chunks, the JSON answer, and OpenAI error bodies.

A stream chunk is ``head + body``: the head (``data: {"id":…,"choices":[``) is built once per
request, the body (one choice plus the closing bytes) once per token, or once per app for the
canned reply (:class:`CannedChunks`). Pure; no I/O.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from types import MappingProxyType
from typing import Any

import orjson

from gateway.mock_worker.plan import Plan, ToolCall, tokenize

DONE = b"data: [DONE]\n\n"
ROLE_DELTA = b'{"role":"assistant","content":""}'
_OPEN = b'{"index":0,"delta":'
_PENDING = b',"logprobs":null,"finish_reason":null}]'
_END_USAGE_NULL = b',"usage":null}\n\n'
_END = b"}\n\n"
_ERROR_KINDS: Mapping[int, tuple[str, str | None]] = MappingProxyType(
    {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("rate_limit_error", "rate_limit_exceeded"),
    }
)


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def chunk_head(cid: str, created: int, model: str) -> bytes:
    return (
        b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,"choices":['
        % (
            cid.encode(),
            created,
            orjson.dumps(model),
        )
    )


def delta_body(delta: bytes, usage_null: bool) -> bytes:
    """A pending choice carrying ``delta`` (JSON), closed with or without ``"usage":null``."""
    return b"".join((_OPEN, delta, _PENDING, _END_USAGE_NULL if usage_null else _END))


def finish_body(plan: Plan, usage_null: bool) -> bytes:
    choice = b'{"index":0,"delta":{},"logprobs":null,"finish_reason":%s,"stop_reason":%s}]' % (
        orjson.dumps(plan.finish_reason),
        orjson.dumps(plan.stop_reason),
    )
    return choice + (_END_USAGE_NULL if usage_null else _END)


def usage_chunk(plan: Plan, head: bytes) -> bytes:
    return b"".join((head, b'],"usage":', orjson.dumps(plan.usage()), _END))


@dataclass(frozen=True, slots=True)
class CannedChunks:
    """The canned reply's tokens and their chunk bodies, both ``usage`` variants, built once."""

    tokens: tuple[str, ...]
    plain: tuple[bytes, ...]
    usage_null: tuple[bytes, ...]
    role_plain: bytes
    role_usage_null: bytes

    @classmethod
    def build(cls, reply: str) -> CannedChunks:
        tokens = tuple(tokenize(reply))
        deltas = [orjson.dumps({"content": token}) for token in tokens]
        return cls(
            tokens,
            tuple(delta_body(d, False) for d in deltas),
            tuple(delta_body(d, True) for d in deltas),
            delta_body(ROLE_DELTA, False),
            delta_body(ROLE_DELTA, True),
        )

    def role(self, usage_null: bool) -> bytes:
        return self.role_usage_null if usage_null else self.role_plain


def token_chunks(
    plan: Plan, head: bytes, usage_null: bool, canned: CannedChunks
) -> Iterator[bytes]:
    """Every chunk between the role chunk and the finish chunk, in order, one per token."""
    for token in plan.reasoning:
        yield head + delta_body(orjson.dumps({"reasoning_content": token}), usage_null)
    if plan.canned:
        bodies = canned.usage_null if usage_null else canned.plain
        for body in islice(bodies, len(plan.content)):
            yield head + body
    else:
        for token in plan.content:
            yield head + delta_body(orjson.dumps({"content": token}), usage_null)
    for index, call in enumerate(plan.tool_calls):
        yield head + delta_body(_tool_open(index, call), usage_null)
        for fragment in call.fragments:
            fragment_delta = {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
            yield head + delta_body(orjson.dumps(fragment_delta), usage_null)


def _tool_open(index: int, call: ToolCall) -> bytes:
    function = {"name": call.name, "arguments": ""}
    opened = {"index": index, "id": call.id, "type": "function", "function": function}
    return orjson.dumps({"tool_calls": [opened]})


def completion_body(plan: Plan, usage: bool) -> bytes:
    """The non-streaming ``chat.completion`` JSON."""
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in plan.tool_calls
    ]
    message = {
        "role": "assistant",
        "content": None if calls else "".join(plan.content),
        "reasoning_content": "".join(plan.reasoning) if plan.reasoning else None,
        "tool_calls": calls,
    }
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": plan.finish_reason,
        "stop_reason": plan.stop_reason,
    }
    answer: dict[str, Any] = {
        "id": new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": [choice],
    }
    if usage:
        answer["usage"] = plan.usage()
    answer["system_fingerprint"] = "mock"
    return orjson.dumps(answer)


def error_body(status: int, message: str) -> bytes:
    """An OpenAI error object; 5xx are ``server_error``, other 4xx ``invalid_request_error``."""
    default = ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    kind, code = _ERROR_KINDS.get(status, default)
    error = {"message": message, "type": kind, "param": None, "code": code}
    return orjson.dumps({"error": error})
