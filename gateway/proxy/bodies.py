"""Bodies at the edges of the chat path: reading the client's request body within its limits,
parsing it, and passing an upstream's own refusal (4xx) on in the client's dialect."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from gateway.errors import (
    BadRequest,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamUnavailable,
)
from gateway.proxy.exchange import Exchange


async def read_request_body(request: web.Request, limit: int, idle: float) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` (chunked bodies too) and
    with 408 when the client stalls for ``idle`` seconds (a slow-body attack)."""
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)
    content = request.content
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = content.read_nowait()  # a small body is usually here already: no timer needed
        if not chunk:
            if content.at_eof():
                return b"".join(parts)
            try:
                async with asyncio.timeout(idle):
                    chunk = await content.readany()
            except TimeoutError:
                raise RequestTimeout(
                    f"The request body stalled for {idle:g} s; send it without pauses."
                ) from None
            if not chunk:
                return b"".join(parts)
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than the limit of {limit} bytes; send a smaller request."
    )


def parse_json(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not raw.strip():
            raise BadRequest("The request body is empty; send a JSON chat request.") from None
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None


def upstream_error(ex: Exchange, status: int, raw: bytes) -> web.Response:
    """An upstream's own refusal (4xx) passed on in the client's dialect.

    The upstream's message is kept (it says what the worker disliked, e.g. a too-long prompt);
    an upstream's 401/403 is the gateway's misconfiguration, not the client's, so it becomes 502.
    """
    message = _upstream_message(raw) or f"The upstream refused the request ({status})."
    if status in (401, 403, 407):
        raise UpstreamUnavailable(
            "The upstream refused the gateway's credentials; the operator must fix api_key."
        )
    err: GatewayError = BadRequest(message)
    err.status = status
    if status == 404:
        err = NotFound(message, code="model_not_found")
    elif status == 413:
        err = PayloadTooLarge(message)
    ex.upstream_status = status
    return web.Response(
        status=status, body=err.render(ex.anthropic), content_type="application/json"
    )


def _upstream_message(raw: bytes) -> str | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace").strip()
        return text[:500] or None
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str):
            return message[:2000]
        if isinstance(body.get("detail"), str):
            return str(body["detail"])[:2000]
    return None
