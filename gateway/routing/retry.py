"""What a failed attempt was, and whether another may follow. Pure.

The kinds of ``models.<name>.retry.on``: ``connect`` (no connection, or it broke before the
answer was whole), ``5xx``, ``429`` (the worker's own), ``timeout`` (no first byte in time) and
``context_length`` (the worker's refusal of a prompt longer than its context, which only a
fallback model with a longer context can serve). A plain refusal (any other 4xx) is the
client's and is never retried.

The retry budget keeps a failing fleet from being stormed: retries in flight at once stay under
``budget_percent`` of the requests in flight (at least ``MIN_RETRIES``, so a quiet gateway
still retries).
"""

from __future__ import annotations

import re

import orjson

from gateway.errors import (
    BadRequest,
    GatewayError,
    PayloadTooLarge,
    UpstreamTimeout,
    UpstreamUnavailable,
)

MIN_RETRIES = 10  # retries in flight always allowed: a gateway with little traffic retries all
REFUSALS = (400, 413, 422)  # what vLLM, llama.cpp (400) and TGI (422) answer a long prompt
_CONTEXT = re.compile(
    r"context length|context_length|context window|context size|maximum model length"
    r"|prompt is too long|input is too long|too many (input )?tokens|must be <= \d+",
    re.IGNORECASE,
)


class ContextLengthExceeded(BadRequest):
    """A worker refused the prompt as longer than its context; a fallback model may take it.
    Drawn as the worker's own refusal (its status and message) when none does."""


def failure_kind(err: GatewayError, status: int | None) -> str | None:
    """The kind of a failed attempt (``status``: the worker's, when it answered), or None for
    a refusal that is the client's to fix."""
    if isinstance(err, ContextLengthExceeded):
        return "context_length"
    if isinstance(err, UpstreamTimeout):
        return "timeout"
    if not isinstance(err, UpstreamUnavailable):
        return None
    if status == 429:
        return "429"
    if status is not None and status >= 500:
        return "5xx"
    return "connect"


def upstream_message(raw: bytes) -> str | None:
    """The message of a worker's error body (OpenAI ``error.message``, ``detail``, or text)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace").strip()[:500] or None
    if not isinstance(body, dict):
        return None
    error = body.get("error", body)
    message = error.get("message") if isinstance(error, dict) else error
    if isinstance(message, str):
        return message[:2000]
    detail = body.get("detail")
    return detail[:2000] if isinstance(detail, str) else None


def context_exceeded(status: int, raw: bytes) -> ContextLengthExceeded | None:
    """The worker's answer as a context-length failure, if it is one."""
    if status not in REFUSALS:
        return None
    message = upstream_message(raw)
    if message is None or not _CONTEXT.search(message):
        return None
    return ContextLengthExceeded(message, status=status)


def refusal(status: int, raw: bytes) -> GatewayError:
    """A worker's refusal (one of ``REFUSALS``) as the client sees it when it is passed on:
    its status and its message."""
    message = upstream_message(raw) or f"The upstream refused the request ({status})."
    if status == 413:
        return PayloadTooLarge(message)
    return BadRequest(message, status=status)


def with_model(payload: bytes, model: str) -> bytes:
    """The upstream request for another model: the same body, ``model`` replaced."""
    body = orjson.loads(payload)
    body["model"] = model
    return orjson.dumps(body)


class RetryBudget:
    """Retries in flight in this process, against its requests in flight."""

    __slots__ = ("retries",)

    def __init__(self) -> None:
        self.retries = 0

    def allows(self, percent: float, in_flight: int) -> bool:
        """May one more retry start while ``in_flight`` requests hold an upstream?"""
        return self.retries < max(MIN_RETRIES, percent * in_flight / 100.0)
