"""The public listener's edge: request ids, security headers, and the one place a refusal is
rendered (in the caller's dialect).

The stack is short on purpose (every layer costs on every request):

1. ``edge`` — gives the request its id and its ``Exchange``, and turns every ``GatewayError``
   (and aiohttp's own 404/405/413) into a JSON error in the request's dialect. Not an aiohttp
   middleware: ``web.protocol.QuietAppRunner`` calls it around the whole app, routing included,
   so the app has no middleware and aiohttp skips its middleware machinery (a level of its own
   in every request's await chain, a cache look-up per request: ~11k instructions);
2. ``stamper`` (called as each answer's head is prepared, by ``web.protocol.StampedRequest``, not
   a middleware) — stamps ``X-Request-ID`` and the security headers on every answer, streams and
   errors included, just before its head is sent.

Authentication, IP checks and limits are stages of the handler's recipe, because their errors
must be rendered in a dialect only the body can tell.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from itertools import count

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict, istr

from gateway.clock import SystemClock
from gateway.config.schema import Network
from gateway.dialects.anthropic import by_route
from gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from gateway.proxy.exchange import EXCHANGE, Exchange
from gateway.tally import Tally

log = logging.getLogger("gateway.http")

_SANE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-XSS-Protection": "1; mode=block",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "camera=(self), microphone=(self)",
}
HSTS = "max-age=63072000; includeSubDomains"
CLIENT_CLOSED = 499  # the status recorded for a request whose client left before the answer
SERVER = "llm-gateway"  # not aiohttp's, which names its exact version
# What ``stamp`` sets after X-Request-ID, in the order it always has (an update replaces a header
# the handler set, in place, and appends the others in this order): prebuilt, with the keys'
# case-folded identities computed once rather than per answer.
_X_REQUEST_ID = istr("X-Request-ID")
_ANTHROPIC_VERSION = istr("anthropic-version")
_SERVER = istr("Server")
_STAMP_SECURITY = CIMultiDict({_SERVER: SERVER, **{istr(k): v for k, v in _SECURITY.items()}})
_STAMP_HSTS = CIMultiDict(_STAMP_SECURITY)
_STAMP_HSTS[istr("Strict-Transport-Security")] = HSTS


class RequestIds:
    """New request ids: a random per-process prefix and a counter (unique, cheap)."""

    def __init__(self) -> None:
        self._prefix = "req_" + os.urandom(6).hex()
        self._count = count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._count):08x}"

    def label(self, offered: str | None, own: str) -> str:
        """The request's label: the client's id if it is sane, else the gateway's own."""
        if offered and _SANE_ID.match(offered):
            return offered
        return own


def error_response(err: GatewayError, anthropic: bool) -> web.Response:
    return web.Response(
        status=err.status,
        body=err.render(anthropic),
        content_type="application/json",
        headers=err.response_headers(),
    )


def from_http(request: web.Request, exc: web.HTTPException) -> GatewayError:
    """aiohttp's own refusals, as the gateway's."""
    if exc.status == 404:
        return NotFound(
            f"There is nothing at {request.method} {request.path}; chat is at "
            "POST /v1/chat/completions and models at GET /v1/models."
        )
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}; "
            f"use {allowed or 'another method'}.",
            headers={"Allow": allowed} if allowed else None,
        )
    if exc.status == 413:
        return PayloadTooLarge("The request body is too large; send a smaller request.")
    err = GatewayError(exc.reason or "The request could not be served.", code="http_error")
    err.status = exc.status
    return err


def edge_middleware(
    ids: RequestIds,
    clock_monotonic: Callable[[], float],
    done: Callable[[web.Request, Exchange, int, float], None],
    tally: Tally | None = None,
) -> Middleware:
    """The edge, called with the app's own ``_handle`` as ``handler``: ``done`` is told of every
    request when it ends; ``tally`` (the metrics' bulk counts) of how many are open, so that its
    counts go in whenever none is."""
    clock_monotonic = _unwrapped(clock_monotonic)
    new, label = ids.new, ids.label
    tally = tally if tally is not None else Tally()

    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        tally.open += 1
        headers = request.headers
        # The client's X-Request-ID is a label (logs, tracing, upstream); what the gateway
        # counts (rate windows, leases, settlement) is known by an id only it makes.
        own = new()
        offered = headers.get(_X_REQUEST_ID)
        ex = Exchange(label(offered, own) if offered else own, clock_monotonic(), own)
        request[EXCHANGE] = ex
        # the dialect of its refusals (and, on chat routes, of its answer, refined by the body)
        ex.anthropic = by_route(request.path, _ANTHROPIC_VERSION in headers)
        status: int | None = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except GatewayError as err:
            if ex.answered:  # a stream's head went out: a second answer would desync the wire
                return _cut(request, ex, err)
            return _unread_closes(request, _refusal(ex, err))
        except web.HTTPExpectationFailed:
            # An Expect aiohttp does not know (its own 417, raised before the route's handler):
            # answered by aiohttp, unseen by the edge, as when the edge ran inside the router.
            del request[EXCHANGE]  # (so it carries an id of its own, as answers before the edge)
            status = None
            raise
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect or the like, raised: aiohttp answers it as is
                status = exc.status
                raise
            return _unread_closes(request, _refusal(ex, from_http(request, exc)))
        except asyncio.CancelledError:
            # The request ended before its answer did: the client left (or the drain time ran
            # out). Not the gateway's error: recorded as nginx's 499, never as a 500.
            status = CLIENT_CLOSED
            raise
        finally:
            tally.open -= 1
            if status is not None:
                done(request, ex, ex.final_status or status, clock_monotonic() - ex.started)

    return edge


def _unwrapped(clock_monotonic: Callable[[], float]) -> Callable[[], float]:
    """``time.monotonic`` itself for the system clock's method, which only calls it: the edge
    reads the clock twice per request."""
    if getattr(clock_monotonic, "__func__", None) is SystemClock.monotonic:
        return time.monotonic
    return clock_monotonic


def _cut(request: web.Request, ex: Exchange, err: GatewayError) -> web.Response:
    """A failure after a stream's head went out that no error event told (a safeguard: each
    stream writes its own): the connection is cut, so the client sees the answer end broken,
    never a second HTTP response inside the first one's body."""
    ex.refusal, ex.final_status = err.code, err.status
    log.warning("answer cut after its head", extra={"code": err.code})
    if request.transport is not None:
        request.transport.abort()
    response = web.Response(status=err.status)
    response.force_close()
    return response


def _unread_closes(request: web.Request, response: web.Response) -> web.Response:
    """A refusal of a request whose body was not read closes the connection after it (as Envoy
    does): the rest of the body is never read, so a refused client holds no memory here. So
    does a 501 (a transfer coding the gateway cannot frame: what follows cannot be trusted)."""
    if response.status == 501 or not request.content.is_eof():
        response.force_close()
    return response


def _refusal(ex: Exchange, err: GatewayError) -> web.Response:
    ex.refusal = err.code
    ex.final_status = err.status
    response = error_response(err, ex.anthropic)
    if ex.rate_headers:
        for name, value in ex.rate_headers.items():
            response.headers.setdefault(name, value)
    return response


Stamp = Callable[[web.BaseRequest, web.StreamResponse], None]
# The public app's stamper and edge: ``web.protocol.QuietAppRunner`` stamps every answer of the
# app with the one, and runs every request through the other.
STAMP = web.AppKey("stamp", object)
EDGE = web.AppKey("edge", object)


def stamper(
    network: Callable[[], Network],
    ids: RequestIds,
    trusts_proto: Callable[[web.BaseRequest], bool],
    *,
    tls: bool,
) -> Stamp:
    """Sets X-Request-ID, Server and the security headers on an answer about to be sent.
    ``network`` is read per answer, so a reload changes the headers at once. ``tls``: the
    listener serves TLS, so every request it answers came over TLS (``request.secure``, known
    at start: asking each request costs ~3k instructions, two of aiohttp's cached properties)."""

    def stamp(request: web.BaseRequest, response: web.StreamResponse) -> None:
        headers = response.headers
        try:  # (not ``request.get``: the Mapping mixin's, two Python calls)
            ex = request[EXCHANGE]
        except KeyError:  # an answer before the edge (``web.protocol``'s parser errors)
            headers[_X_REQUEST_ID] = ids.new()
        else:
            ex.answered = True
            headers[_X_REQUEST_ID] = ex.request_id
        settings = network()
        if not settings.security_headers:
            headers[_SERVER] = SERVER
        elif settings.hsts and (tls or trusts_proto(request)):
            headers.update(_STAMP_HSTS)
        else:
            headers.update(_STAMP_SECURITY)

    return stamp
