"""One way to pick and call an upstream for every model API: chat, Responses (both modes),
completions, embeddings, rerank and score, images, audio.

``open_with`` makes the attempts of one request before any byte of its answer reached the
client: the first upstream from the model's queue when its upstreams are capped
(``routing.capacity``), then, after a failure of a kind the model's ``retry`` names, another of
its upstreams or a fallback model's (``routing.chain``), within the retry budget, each attempt
traced and bounded by its per-attempt timeout. What one attempt is differs by API: a JSON POST
over the lean pool (``json_attempt``; chat's path or another API's) or a multipart upload
(``proxy.apis.form_api``).

A fallback model is followed only when it serves the API asked for (``serving``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from aiohttp import web

from gateway.config.schema import Upstream
from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.proxy.exchange import Exchange
from gateway.proxy.upstream import AnswerTooLarge, forward_headers, read_body, read_chunk
from gateway.proxy.wire import Response
from gateway.routing.capacity import Capacity, slot
from gateway.routing.chain import Chain
from gateway.routing.router import ModelRoute
from gateway.routing.waiting import Tick
from gateway.runtime import Runtime
from gateway.tracing import NO_SPAN, Span

R = TypeVar("R")

# POST a body to an upstream: (upstream, body, headers, stream, wait) → the answer's head.
# A whole answer's silences are bounded by ``wait``; a stream's caller bounds its own wait.
Post = Callable[[Upstream, bytes, dict[str, str], bool, float | None], Awaitable[Response]]
# One try on an upstream, for the chain's current model: (upstream, chain, span) → the answer
# and its whole body (a stream answering 200: its first chunk; a refused stream: nothing).
Attempt = Callable[[Upstream, Chain, Span], Awaitable[tuple[R, bytes]]]


@dataclasses.dataclass(slots=True)
class Held(Generic[R]):
    """An answering upstream, held (its slot and the balancer's count of it) until
    ``release``, which gives it back once however often it is called (a ``with`` block calls
    it at its end); ``answer`` and ``body`` as an ``Attempt`` gave them. Nothing else gives an
    upstream back: its acquisition and release are paired here, not at each caller."""

    upstream: Upstream
    answer: R
    body: bytes
    _free: Callable[[Upstream], None]
    _held: bool = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._free(self.upstream)

    def __enter__(self) -> Held[R]:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def serving(rt: Runtime, route: ModelRoute, api: str) -> ModelRoute:
    """``route`` with only the fallbacks that serve ``api`` (a chat-only fallback never gets
    an embeddings request)."""
    if not route.fallbacks:
        return route
    resolve = rt.router.resolve
    kept = tuple(f for f in route.fallbacks if (t := resolve(f)) is not None and api in t.apis)
    return (
        route if len(kept) == len(route.fallbacks) else dataclasses.replace(route, fallbacks=kept)
    )


def new_chain(
    rt: Runtime, request: web.Request, ex: Exchange, route: ModelRoute, payload: bytes
) -> Chain:
    """The request's way through its model's upstreams and fallbacks; the caller's key is read
    again only if a fallback comes up (it is checked against the key's models)."""
    headers, caller = request.headers, ex.client_ip or "-"
    return Chain(
        rt.balancer,
        rt.router,
        rt.metrics,
        route,
        payload,
        ex.region,
        lambda: rt.keys.authenticate(headers, lambda n: headers.getall(n, []), caller),
        ex.request_id,
    )


async def first_slot(
    rt: Runtime, capacity: Capacity, chain: Chain, ex: Exchange, tick: Tick | None = None
) -> Upstream | None:
    """The first upstream of a model with capped upstreams: a slot, after a wait in the
    model's queue when every upstream is full (``routing.capacity``); ``tick``: a waiting
    stream's ``: queued`` comment. The time it took is the access log's ``queue_ms``."""
    owner, started = ex.owner or "-", rt.clock.monotonic()
    try:
        return await capacity.first(chain, owner, lambda: rt.limiter.plan_of(owner), tick)
    finally:
        ex.queue_wait = rt.clock.monotonic() - started


def failed(rt: Runtime, upstream: Upstream) -> None:
    """An upstream's failure: counted, and told to the balancer (which may eject it)."""
    rt.balancer.failed(upstream)
    rt.metrics.upstream_failures.labels(upstream.name).inc()


async def open_with(
    rt: Runtime,
    ex: Exchange,
    chain: Chain,
    attempt: Attempt[R],
    again: Callable[[], bool] | None = None,
    tick: Tick | None = None,
) -> Held[R]:
    """An answering upstream, held until the caller releases it, with its answer and body (see
    ``Attempt``). A failure is retried as the model's ``retry`` says, unless ``again`` says the
    request can no longer be sent (an upload begun). Every attempt takes its upstream's slot
    (``routing.capacity``): the first through ``first``, every other through ``slot``."""
    balancer, route, capacity = rt.balancer, chain.route, rt.capacity
    if capacity is None or not route.capped:  # no slot to take: the balancer's pick
        upstream = chain.first()
    else:
        upstream = await first_slot(rt, capacity, chain, ex, tick)
    upstream = upstream or await slot(capacity, chain, await chain.fall_back("connect"), "connect")
    error: GatewayError | None = None
    span = ex.span
    while upstream is not None:
        balancer.acquire(upstream)
        try:
            if span is NO_SPAN:  # tracing off: no attempt span (see ``handler.serve``)
                answer, body = await attempt(upstream, chain, span)
            else:
                with span.attempt(upstream.name) as child:
                    answer, body = await attempt(upstream, chain, child)
        except GatewayError as err:
            kind, error, failure = chain.failure(err, ex.upstream_status), err, upstream
            if kind is not None and kind != "context_length":
                failed(rt, failure)
            if again is not None and not again():
                kind = None  # nothing more is tried
            try:  # decided while this request still holds its upstream: the budget counts it
                upstream = await slot(capacity, chain, await chain.after(failure, kind), kind)
            finally:
                balancer.release(failure)
            continue
        except BaseException as exc:  # cancelled (the client left): the upstream is not held
            balancer.release(upstream)
            chain.done()
            if isinstance(exc, asyncio.CancelledError) and not rt.draining:
                # the worker read the request and worked on it: charged (``govern.settle``)
                ex.upstream, ex.model, ex.unseen = upstream.name, chain.model.name, True
            raise
        chain.done()
        balancer.succeeded(upstream)
        ex.upstream, ex.model = upstream.name, chain.model.name
        return Held(upstream, answer, body, balancer.release)
    raise error or UpstreamUnavailable(
        f"No upstream of model '{route.name}' is available; try again shortly.", status=503
    )


def open_upstream(
    rt: Runtime,
    request: web.Request,
    ex: Exchange,
    route: ModelRoute,
    payload: bytes,
    post: Post,
    tick: Tick | None = None,
) -> Awaitable[Held[Response]]:
    """``open_with`` for a JSON request: ``payload`` POSTed by ``post``; ``tick``: a waiting
    stream's ``: queued`` comment."""
    chain = new_chain(rt, request, ex, route, payload)
    attempt = json_attempt(rt, request, ex, post)
    return open_with(rt, ex, chain, attempt, tick=tick)  # for the caller to await


def json_attempt(rt: Runtime, request: web.Request, ex: Exchange, post: Post) -> Attempt[Response]:
    """``try_json`` for this request (a partial, not a wrapping coroutine: one level less in
    the await chain a resumed task walks)."""
    return functools.partial(try_json, rt, request, ex, post)


async def try_json(
    rt: Runtime,
    request: web.Request,
    ex: Exchange,
    post: Post,
    upstream: Upstream,
    chain: Chain,
    span: Span,
) -> tuple[Response, bytes]:
    """One try: the chain's ``peek`` reads a refusal to tell a context-length error (a
    fallback may take it); its ``wait`` bounds the wait for the first byte."""
    headers = forward_headers(request.headers, upstream, ex.request_id, span.trace_headers)
    payload, peek, wait = chain.payload, chain.peek, chain.wait(upstream)
    ex.upstream_status = None  # the worker's status tells a 5xx from a 429 from no answer
    if not ex.stream:  # the whole answer, read here: an answer broken off is retried too
        answer = await post(upstream, payload, headers, False, wait)
        ex.upstream_status = answer.status
        try:
            body = await read_body(usable(upstream, answer), upstream)
        except AnswerTooLarge:  # made, and not passed on: charged (``govern.settle``)
            ex.upstream, ex.model, ex.unseen = upstream.name, chain.model.name, True
            raise
        finally:
            answer.release()
        if peek and (too_long := Chain.context_exceeded(answer.status, body)):
            raise too_long
        return answer, body
    response: Response | None = None
    try:  # one timer for the head and the first chunk: the time to first token
        async with asyncio.timeout(wait):
            response = await post(upstream, payload, headers, True, None)
            ex.upstream_status = response.status
            if usable(upstream, response).status != 200:
                if peek and response.status in Chain.REFUSALS:
                    raise Chain.refused(response.status, await read_body(response, upstream))
                return response, b""
            first_chunk = await read_chunk(response, upstream)
    except TimeoutError:
        if response is not None:
            response.close()
        raise UpstreamTimeout(
            f"Upstream '{upstream.name}' sent nothing within {wait:g} s."
        ) from None
    except GatewayError:
        if response is not None:
            response.close()
        raise
    ex.ttft = rt.clock.monotonic() - ex.started
    span.event("first_token")
    return response, first_chunk


async def refusal_of(held: Held[Response]) -> bytes:
    """The body of a stream's refusal (its head said not 200), bounded like a whole answer;
    the response is released and the upstream given back."""
    upstream, response = held.upstream, held.answer
    try:
        async with asyncio.timeout(upstream.timeouts.first_byte):
            return await read_body(response, upstream)
    except TimeoutError:
        raise UpstreamTimeout(
            f"Upstream '{upstream.name}' stalled while sending its answer."
        ) from None
    finally:
        response.release()
        held.release()


def usable(upstream: Upstream, response: Response) -> Response:
    """The response, unless the upstream failed (5xx, 429): then it counts as a failure."""
    if response.status >= 500 or response.status == 429:
        response.close()
        raise UpstreamUnavailable(
            f"Upstream '{upstream.name}' answered {response.status}; try again shortly."
        )
    return response
