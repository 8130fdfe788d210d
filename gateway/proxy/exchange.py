"""What the gateway learns about one request as it passes: the record stages fill in, and that
the error renderer, usage accounting and the access log read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.tracing import NO_SPAN, RequestSpan, Tracer


@dataclass(slots=True)
class Exchange:
    request_id: str  # the label: the client's X-Request-ID if sane, else ``id``
    started: float  # monotonic
    id: str  # the gateway's own, unique per request: the identity of what is counted
    anthropic: bool = False
    model: str | None = None
    upstream: str | None = None
    stream: bool = False
    client_usage: bool = False  # the client asked for the usage chunk itself
    region: str | None = None
    usage: dict[str, Any] | None = None
    ttft: float | None = None
    queue_wait: float | None = None  # seconds getting a slot of a capped model (its queue)
    completion_chunks: int = 0
    upstream_status: int | None = None
    key_id: str | None = None
    owner: str | None = None
    client_ip: str | None = None
    rate_headers: dict[str, str] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    error: bool = False
    refusal: str | None = None  # the error code of a refusal the gateway answered
    agent_id: str | None = None
    final_status: int | None = None
    prompt_estimate: int = 0  # request bytes / 4: reserved, and charged when usage is missing
    api: str = "chat"  # the API served (models.<name>.apis' words), for the log and usage
    images: int = 0  # images an images request made
    audio_seconds: float = 0.0  # seconds of audio an audio request took, when reported
    span: RequestSpan = NO_SPAN  # its trace span (tracing off: the shared no-op)
    answered: bool = False  # a head went out (a stream's): no other answer may follow it
    # the key whose ``maxConcurrency`` the body counts against while it is read (None: no limit)
    held: str | None = None
    reserved_completion: int = 0  # the completion tokens its admission reserved
    reserved_images: int = 0  # the images its admission reserved (an images request)
    # a worker worked on it and its answer was not seen (its client left, the answer was past
    # the size read whole): charged what it reserved (``govern.settle``)
    unseen: bool = False


EXCHANGE = web.RequestKey("exchange", Exchange)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def traced(tracer: Tracer, handler: Handler) -> Handler:
    """``handler`` inside its request's span (the chat handler opens its own). Routes are
    wrapped only when tracing is on (read at start), so tracing off costs them nothing."""
    if not tracer.enabled:
        return handler

    async def in_span(request: web.Request) -> web.StreamResponse:
        ex = request[EXCHANGE]
        ex.span = tracer.request(ex, request)
        with ex.span:
            return await handler(request)

    return in_span
