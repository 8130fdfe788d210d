"""Bodies at the edges of the chat path: reading the client's request body within its limits,
parsing it, and passing an upstream's own refusal (4xx) on in the client's dialect."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import StreamReader, web

from gateway.dialects import MAX_DEPTH
from gateway.errors import (
    BadRequest,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamUnavailable,
)
from gateway.proxy.exchange import Exchange

# The deadline for a whole body when the caller sets none: never under a minute, and room for
# several stalls just short of ``idle`` (proposed as the setting ``network.body_timeout``).
MIN_BODY_TIMEOUT = 60.0
BODY_TIMEOUT_IDLES = 6


def body_timeout(idle: float) -> float:
    """The default deadline for a whole request body, from the allowed stall ``idle``."""
    return max(MIN_BODY_TIMEOUT, BODY_TIMEOUT_IDLES * idle)


async def read_request_body(
    request: web.Request, limit: int, idle: float, total: float | None = None
) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` (chunked bodies too) and
    with 408 when the client stalls for ``idle`` seconds or has not sent it all within ``total``
    seconds (default ``body_timeout(idle)``): slow-body attacks, a stall or a trickle."""
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)
    content = request.content
    chunk = content.read_nowait()  # a small body is usually here already: no timer needed
    if content.at_eof():
        if len(chunk) > limit:
            raise too_large(limit)
        return chunk
    return await _read_rest(
        content, chunk, limit, idle, body_timeout(idle) if total is None else total
    )


async def _read_rest(
    content: StreamReader, first: bytes, limit: int, idle: float, total: float
) -> bytes:
    """The rest of a body that is not all here yet: one timer per wait, for the stall or the
    deadline, whichever comes first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total
    parts, size, chunk = [first], len(first), b""
    while True:
        if size > limit:
            raise too_large(limit)
        chunk = content.read_nowait()
        if not chunk:
            if content.at_eof():
                return b"".join(parts)
            try:
                async with asyncio.timeout(min(idle, deadline - loop.time())):
                    chunk = await content.readany()
            except TimeoutError:
                raise late(idle, total, loop.time() >= deadline) from None
            if not chunk:
                return b"".join(parts)
        size += len(chunk)
        parts.append(chunk)


def late(idle: float, total: float, overdue: bool) -> RequestTimeout:
    """The 408 of a body past its deadline (``overdue``) or stalled."""
    if overdue:
        return RequestTimeout(
            f"The request body did not arrive within {total:g} s; send it faster, or less."
        )
    return RequestTimeout(f"The request body stalled for {idle:g} s; send it without pauses.")


def too_large(limit: int) -> PayloadTooLarge:
    """The 413 of a body over ``limit`` bytes."""
    return PayloadTooLarge(
        f"The request body is larger than the limit of {limit} bytes; send a smaller request."
    )


def parse_json(raw: bytes) -> object:
    """The body as JSON, or the precise 400 (empty, not JSON, nested over 1,024 levels)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not raw.strip():
            raise BadRequest("The request body is empty; send a JSON chat request.") from None
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None


# What a worker reads as the operator's word, never a client's: vLLM's ``priority`` orders its
# queue (under ``--scheduling-policy priority`` a tenant would put itself before every other),
# and its ``kv_transfer_params`` tell a disaggregated worker where to fetch KV blocks from (a
# host and port of the client's choosing); its ``request_id`` names the request in the engine
# and is the id of a Responses answer (which the gateway stores under that id: a client would
# choose it, and write over another stored response of its owner). SGLang's the same:
# ``bootstrap_*`` (where a decode server fetches the KV cache), the data-parallel rank fields,
# ``rid``; and ``lora_path`` (an adapter beside the model the key may use) and
# ``custom_logit_processor`` (a serialized callable the sampler runs).
OPERATOR_FIELDS = (
    "priority",
    "kv_transfer_params",
    "request_id",
    "bootstrap_host",
    "bootstrap_port",
    "bootstrap_room",
    "routed_dp_rank",
    "disagg_prefill_dp_rank",
    "data_parallel_rank",
    "rid",
    "lora_path",
    "custom_logit_processor",
)
_OPERATOR = frozenset(OPERATOR_FIELDS)


def dump_upstream(body: object) -> bytes:
    """A request body as JSON for the upstream (without ``OPERATOR_FIELDS``), or 400 when it
    cannot be written: nested deeper than orjson writes (it reads more levels than it writes).
    Costs nothing but the dump itself: no walk of the body beforehand."""
    if type(body) is dict and not _OPERATOR.isdisjoint(body):  # one test for the usual body
        for name in OPERATOR_FIELDS:
            body.pop(name, None)
    try:
        return orjson.dumps(body)
    except (orjson.JSONEncodeError, RecursionError) as exc:
        if isinstance(exc, RecursionError) or "ecursion" in str(exc):
            raise BadRequest(
                f"The request is nested too deeply (at most {MAX_DEPTH} levels of arrays and"
                " objects, counted from the top of the body the upstream gets); flatten it."
            ) from None
        raise BadRequest(f"The request cannot be forwarded: {exc}.") from None


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
