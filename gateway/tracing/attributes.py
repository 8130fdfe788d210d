"""What a span says: the request span's attributes from the request's record (the access log's
fields: key id, owner, model, upstream, tokens, status, client address; never a header, a key or
a body) and how an exception that left a span is told. Pure: no I/O, no SDK."""

from __future__ import annotations

import asyncio

from gateway.errors import GatewayError
from gateway.tracing.api import Attr, Facts

MAX_TEXT = 256  # an attribute's text is cut here: a client-chosen value cannot bloat a span


def bounded(value: Attr) -> Attr:
    return value[:MAX_TEXT] if isinstance(value, str) else value


def request_status(ex: Facts, exc: BaseException | None) -> int:
    """The status the client was sent (499: it left first, as the access log has it)."""
    if isinstance(exc, GatewayError):
        return exc.status
    if isinstance(exc, asyncio.CancelledError):
        return 499
    if exc is not None:
        return 500
    return ex.upstream_status or 200


def facts(ex: Facts, status: int) -> dict[str, Attr]:
    """The request span's attributes at its end."""
    out: dict[str, Attr] = {
        "http.response.status_code": status,
        "gateway.request_id": bounded(ex.request_id),
        "gateway.api": ex.api,
        "gateway.dialect": "anthropic" if ex.anthropic else "openai",
        "gateway.stream": ex.stream,
    }
    optional: tuple[tuple[str, str | None], ...] = (
        ("gateway.key_id", ex.key_id),
        ("gateway.owner", ex.owner),
        ("gen_ai.request.model", ex.model),
        ("gateway.upstream", ex.upstream),
        ("client.address", ex.client_ip),
        ("gateway.region", ex.region),
        ("gateway.agent_id", ex.agent_id),
    )
    for key, value in optional:
        if value is not None:
            out[key] = bounded(value)
    if ex.prompt_tokens or ex.completion_tokens:
        out["gen_ai.usage.input_tokens"] = ex.prompt_tokens
        out["gen_ai.usage.output_tokens"] = ex.completion_tokens
        out["gateway.tokens_estimated"] = ex.estimated
    return out


def failure(exc: BaseException) -> tuple[str, str | None]:
    """An exception that left a span as (``error.type``, the error status's message or None).

    A refusal (4xx) names its code and leaves the status unset: the caller's error, not the
    gateway's. Anything else is a failure, whose message is a ``GatewayError``'s own (what the
    client was told), else only the exception's type: its text may hold anything."""
    if isinstance(exc, GatewayError):
        return exc.code[:MAX_TEXT], exc.message[:MAX_TEXT] if exc.status >= 500 else None
    if isinstance(exc, asyncio.CancelledError):
        return "client_closed", None
    name = type(exc).__name__[:MAX_TEXT]
    return name, name
