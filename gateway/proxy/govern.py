"""The governed front of every model API, as steps that each return what they found: who is
calling (from the request head, before any of the body is held), the body within its limits,
the model the caller may use, the admission against every limit, and its settlement.

Chat composes them (``proxy.handler``); every other API a worker serves composes the same ones,
so each is authenticated, allow-listed, limited and metered exactly as chat is.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from gateway.errors import NotFound, shown
from gateway.limits import money
from gateway.limits.limiter import Ticket
from gateway.proxy.access import authenticate
from gateway.proxy.bodies import read_request_body, too_large
from gateway.proxy.exchange import EXCHANGE, Exchange
from gateway.records import KeyRecord
from gateway.routing.router import ModelRoute
from gateway.runtime import Runtime

T = TypeVar("T")


def refuse_declared_size(request: web.Request, limit: int) -> None:
    """413 at once for a body whose declared length is over the limit (read or not)."""
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)


async def caller(runtime: Runtime, request: web.Request, permission: str) -> KeyRecord:
    """The caller's key, from the head alone: its size declared within the limit, its key
    known, active and allowed from this address, with ``permission``, and not already at its
    ``maxConcurrency`` in this process. No byte of the body is read before this returns, so
    neither an unauthenticated client nor a key at its limit can make the gateway hold it.
    """
    refuse_declared_size(request, runtime.config.network.max_body_bytes)
    record = await authenticate(runtime, request)
    runtime.keys.check_permission(record, permission)
    runtime.limiter.refuse_if_full(record)
    if record.max_concurrency is not None:
        request[EXCHANGE].held = record.id  # its body counts while read (``reading``)
    return record


def body(runtime: Runtime, request: web.Request) -> Awaitable[bytes]:
    """The whole body, within ``network.max_body_bytes`` and its time limits (the reading
    coroutine itself, for the caller to await: no level of its own in the await chain, unless
    the key has a ``maxConcurrency``: ``reading``)."""
    network = runtime.config.network
    return reading(
        runtime,
        request,
        read_request_body(
            request, network.max_body_bytes, network.header_timeout, network.body_timeout
        ),
    )


def reading(runtime: Runtime, request: web.Request, read: Awaitable[T]) -> Awaitable[T]:
    """``read`` (of a body before its admission) counted against the caller's
    ``maxConcurrency`` in this process while it lasts: a key allowed one request at a time,
    sending many at once, has one body read and the others refused from their heads."""
    key_id = request[EXCHANGE].held
    return read if key_id is None else runtime.limiter.while_reading(key_id, read)


def model(runtime: Runtime, ex: Exchange, record: KeyRecord, name: str) -> ModelRoute:
    """The model ``name`` (or alias) names, if the key may use it: 403 for a model the key may
    not use (known or not: the key's list is no oracle of what exists), else 404 if unknown."""
    found = runtime.router.resolve(name)
    runtime.keys.check_model(
        record, name, found.allowed_by(record.models) if found else name in (record.models or ())
    )
    if found is None:
        raise NotFound(
            f"The model '{shown(name)}' does not exist; list the models with GET /v1/models.",
            code="model_not_found",
            param="model",
        )
    ex.model = found.name
    return found


async def admit(
    runtime: Runtime,
    ex: Exchange,
    record: KeyRecord,
    route: ModelRoute,
    prompt: int,
    completion: int = 0,
    images: int = 0,
) -> Ticket:
    """The admission of this request (by the gateway's own id) reserving ``prompt`` and
    ``completion`` tokens, and what they would cost at the prices of the dearest model that
    may answer it (the model, or a fallback the key may use: the money budgets); its rate
    headers go on the answer, and on a refusal too."""
    # (``money.cost`` of 1 request, by position: a keyword call costs more)
    price = money.cost(route.pricing, prompt, completion, 1, images)
    for name in route.fallbacks:  # settled at the prices of the one that answers (``settle``)
        fallback = runtime.router.resolve(name)
        if fallback is not None and fallback.allowed_by(record.models):
            price = max(price, money.cost(fallback.pricing, prompt, completion, 1, images))
    ticket = await runtime.limiter.admit(
        ex.id, record, prompt + completion, ex.anthropic, route.name, price
    )
    ex.rate_headers, ex.reserved_completion, ex.reserved_images = ticket.headers, completion, images
    return ticket


def settle(runtime: Runtime, ex: Exchange, ticket: Ticket, route: ModelRoute) -> None:
    """Settle the admission to what the request used: the upstream's usage when it reported
    one, else an estimate (the prompt estimate and what was seen of the answer), marked so. A
    request that failed after some of the answer was relayed (a stream cut because its client
    stopped reading, or broken off by its worker) is charged that estimate too: the worker made
    it, as for a client that left. A whole answer a worker made and the gateway never saw
    (``unseen``: its client left while a worker had it, or it was too large to read) is charged
    the completion (and the images) it reserved: the worker may have made all of it."""
    usage: dict[str, Any] | None = ex.usage
    if usage is not None:
        ex.prompt_tokens = count(usage.get("prompt_tokens"))
        ex.completion_tokens = count(usage.get("completion_tokens"))
    elif ex.upstream is not None and (not ex.error or ex.completion_chunks > 0 or ex.unseen):
        ex.estimated = True
        ex.prompt_tokens = ex.prompt_estimate
        ex.completion_tokens = ex.completion_chunks
        if ex.unseen and not ex.stream:
            ex.completion_tokens, ex.images = ex.reserved_completion, ex.reserved_images
    error = ex.error or (ex.upstream_status is not None and ex.upstream_status >= 400)
    served = ex.upstream is not None and not error
    route = answered(runtime, ex, route)
    price = money.cost(  # (by position: a keyword call costs more)
        route.pricing,
        ex.prompt_tokens,
        ex.completion_tokens,
        1 if served else 0,  # requests
        ex.images,
        ex.audio_seconds,
    )
    runtime.limiter.settle(
        ticket,
        route.name,
        ex.prompt_tokens,
        ex.completion_tokens,
        error,
        ex.estimated,
        price,  # cost
        ex.api,
    )


def answered(runtime: Runtime, ex: Exchange, route: ModelRoute) -> ModelRoute:
    """The model whose worker answered: ``route``, or the fallback that did (its prices and
    its name in the usage, not the model asked for)."""
    if ex.model is None or ex.model == route.name:
        return route
    return runtime.router.resolve(ex.model) or route


def count(value: object) -> int:
    """A token count an upstream reported: a whole number ≥ 0, else 0 (never a crash)."""
    if type(value) is int and value > 0:
        return value
    if type(value) is float and 0 < value < 1e15:
        return int(value)
    return 0
