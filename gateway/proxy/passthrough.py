"""Pass-through routes (``routes:`` in the config): a path prefix relayed to another backend (the
portal application, a file service) with the route's auth mode, body limit and per-client-IP
rate. Bodies stream both ways: a 50 MB upload is never held whole in memory.

Auth modes: ``key`` (a valid gateway key is required; it is not forwarded), ``optional``
(checked when sent, not forwarded), ``none`` (the gateway does not look; the headers, cookies and
any ``Authorization`` belong to the backend and are forwarded).

A key that authenticated a request (``key``, or ``optional`` with a key sent) is held to its
limits as on every other route: its IP allowlist (403), its ``maxConcurrency`` (checked from the
head, then held until the answer's last byte) and its and its plan's requests per minute (429).
A route is no model API: the admission reserves no tokens and records no usage (it is given back
when the relay ends, as ``count_tokens``' is), so only request limits are spent; a key or plan
already over a token or money limit is refused as everywhere.

The path sent upstream is the one the route was matched on (normalized once, before routing, by
``web.protocol``), in ``gateway.paths.encode``'s wire form, with the query as the client sent it;
the URL is built ``encoded=True`` so the client library does not resolve or re-encode it again.

``X-Forwarded-For`` goes out as the incoming list (all its lines, joined) with the peer appended
when the peer is a trusted proxy, and as the peer alone otherwise (a client's own list is not
passed on as if the gateway vouched for it). ``X-Forwarded-Proto`` is what a trusted peer said
(``netaddr.forwarded_proto``), else the scheme of the connection.

Timeouts are the upstream's: ``first_byte`` for the answer's head and first chunk, ``idle``
between later chunks. A stall before anything was sent is a 504; after the head, the client's
connection is closed, so it cannot take a cut answer for a whole one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.config.schema import Route, Upstream
from gateway.errors import (
    BadRequest,
    GatewayError,
    NotFound,
    StoreUnavailable,
    TooManyRequests,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.limits.limiter import Ticket
from gateway.limits.windows import retry_seconds
from gateway.netaddr import combine, forwarded_proto, guesser, parse_ip, peer_is_trusted
from gateway.paths import encode, is_normal
from gateway.proxy.access import authenticate, resolve_client
from gateway.proxy.bodies import late, too_large
from gateway.proxy.exchange import EXCHANGE
from gateway.proxy.timers import CLIENT_STALLED, bounded_write
from gateway.proxy.upstream import HOP_BY_HOP, returned_headers
from gateway.runtime import Runtime
from gateway.store.base import StoreError

_CREDENTIALS = frozenset({"authorization", "x-api-key"})
_NEVER = HOP_BY_HOP | {
    "host",
    "x-request-id",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
}
CHUNK = 64 * 1024


class _TooLarge(Exception):
    """Raised inside the upload generator; turned into 413 by the handler."""


class _Late(Exception):
    """Raised inside the upload generator: the client stalled, or its body is past the
    deadline; its ``error`` (a 408) is the answer, never the backend's 504."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class PassThrough:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def route_for(self, path: str) -> Route | None:
        """The longest configured prefix of ``path`` (looked up per request: reload-safe)."""
        best = None
        for route in self.rt.config.routes:
            if path.startswith(route.prefix) and (
                best is None or len(route.prefix) > len(best.prefix)
            ):
                best = route
        return best

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not is_normal(request.path):  # only a listener that skipped web.protocol gets here
            raise BadRequest("The request path is not acceptable: it is not normalized.")
        route = self.route_for(request.path)
        if route is None:
            raise NotFound(f"There is nothing at {request.method} {request.path}.")
        limit = route.max_body_bytes or self.rt.config.network.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise too_large(limit)
        # From the config the route was found in: a reload during the admission may drop both
        # (a lookup after it failed, and the admission was never given back).
        upstream = self.rt.config.upstreams[route.upstream]
        ticket = await self._admit(request, route)
        ex = request[EXCHANGE]
        ex.upstream = upstream.name
        try:
            return await self._relay(request, route, upstream, limit)
        finally:
            if ticket is not None:  # the key's concurrency slot, held until the relay ended
                self.rt.limiter.release(ticket, "")

    async def _admit(self, request: web.Request, route: Route) -> Ticket | None:
        """The caller admitted (the key's admission, when a key authenticated it)."""
        resolve_client(self.rt, request)  # every auth mode: the per-IP rate needs the real IP
        sent = "Authorization" in request.headers or "X-API-Key" in request.headers
        record = None
        if route.auth == "key" or (route.auth == "optional" and sent):
            record = await authenticate(self.rt, request)  # 401; 403 outside its allowlist
            self.rt.limiter.refuse_if_full(record)  # from the head: no body held for it
        if route.ip_rpm is not None:
            await self._ip_rate(request, route.prefix, route.ip_rpm)
        if record is None:
            return None
        ex = request[EXCHANGE]  # rpm, concurrency, plan rpm: no tokens reserved
        ticket = await self.rt.limiter.admit(ex.id, record, 0, False)
        ex.rate_headers = ticket.headers
        return ticket

    async def _ip_rate(self, request: web.Request, prefix: str, most: int) -> None:
        """429 beyond ``most`` requests a minute to the route from the client's address (an
        IPv6 client's /64: it can send each request from another address in it)."""
        ex = request[EXCHANGE]
        client = guesser(ex.client_ip or request.remote or "-")
        try:
            count, reset = await self.rt.store.hit(f"route:{prefix}:{client}")
        except StoreError:
            if self.rt.config.store.on_error == "closed":
                raise StoreUnavailable("The store is unavailable; try again shortly.") from None
            return
        if count > most:
            raise TooManyRequests(
                f"Too many requests to {prefix} from your address; wait.",
                retry_after=retry_seconds(reset),
            )

    def _headers(self, request: web.Request, route: Route, upstream: Upstream) -> CIMultiDict[str]:
        drop = _NEVER if route.auth == "none" else _NEVER | _CREDENTIALS
        named = combine(request.headers.getall("Connection", ()))
        if named:
            drop = drop | {n.strip().lower() for n in named.split(",")}
        # A multidict: a header the client sent as several lines goes on as several lines.
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in drop)
        ex = request[EXCHANGE]
        peer, trusted = request.remote, self.rt.config.network.trusted_proxies
        believed = peer_is_trusted(peer, trusted)
        prior = combine(request.headers.getall("X-Forwarded-For", ())) if believed else None
        hop = str(parse_ip(peer) or peer or "")
        headers["X-Forwarded-For"] = f"{prior}, {hop}" if prior else hop
        proto = forwarded_proto(
            peer, combine(request.headers.getall("X-Forwarded-Proto", ())), trusted
        )
        headers["X-Forwarded-Proto"] = proto or ("https" if request.secure else "http")
        headers["X-Forwarded-Host"] = request.host
        headers["X-Request-ID"] = ex.request_id
        if upstream.api_key and route.auth != "none":
            headers["Authorization"] = f"Bearer {upstream.api_key}"
        return headers

    async def _relay(
        self, request: web.Request, route: Route, upstream: Upstream, limit: int
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        first_byte = loop.time() + upstream.timeouts.first_byte  # the head and first chunk
        response = await self._send(request, route, upstream, limit, first_byte)
        try:
            chunk = await _next_chunk(response, upstream, first_byte, first=True)
            out = web.StreamResponse(
                status=response.status, headers=returned_headers(response.headers)
            )
            if "Content-Encoding" in response.headers:
                out.headers["Content-Encoding"] = response.headers["Content-Encoding"]
            if response.content_length is not None:
                out.content_length = response.content_length
            for name, value in (request[EXCHANGE].rate_headers or {}).items():
                out.headers.setdefault(name, value)  # the key's; a backend's own win
            await out.prepare(request)
            return await self._stream(request, out, response, upstream, chunk)
        finally:
            response.release()  # back to the pool if read to its end, else closed

    async def _send(
        self, request: web.Request, route: Route, upstream: Upstream, limit: int, deadline: float
    ) -> aiohttp.ClientResponse:
        network = self.rt.config.network
        pace = (network.header_timeout, network.body_timeout)
        body = _upload(request, limit, pace) if request.body_exists else None
        try:
            async with asyncio.timeout_at(deadline):
                return await self.rt.client.session.request(
                    request.method,
                    target(upstream.url, request),
                    data=body,
                    headers=self._headers(request, route, upstream),
                    allow_redirects=False,
                    auto_decompress=False,
                    timeout=aiohttp.ClientTimeout(sock_connect=upstream.timeouts.connect),
                )
        except _TooLarge:
            raise too_large(limit) from None
        except _Late as exc:
            raise exc.error from None
        except TimeoutError:
            raise UpstreamTimeout(f"Upstream '{upstream.name}' did not answer in time.") from None
        except (aiohttp.ClientError, OSError) as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _TooLarge):
                raise too_large(limit) from None
            if isinstance(cause, _Late):
                raise cause.error from None
            raise UpstreamUnavailable(f"Upstream '{upstream.name}' could not be reached.") from exc

    async def _stream(
        self,
        request: web.Request,
        out: web.StreamResponse,
        response: aiohttp.ClientResponse,
        upstream: Upstream,
        chunk: bytes,
    ) -> web.StreamResponse:
        """Relay the body after its head went out; a stall or a broken upstream ends it by
        closing the client's connection, which then cannot mistake the cut for the end."""
        loop, idle = asyncio.get_running_loop(), upstream.timeouts.idle
        try:
            while chunk:
                await bounded_write(out, chunk, idle)  # a client taking nothing is cut
                when = loop.time() + idle  # a slow client is not a stall
                chunk = await _next_chunk(response, upstream, when, first=False)
        except GatewayError as exc:
            if exc.code == CLIENT_STALLED:
                raise  # the edge cuts the connection and logs why
            request[EXCHANGE].error = True
            response.close()
            if request.transport is not None:
                request.transport.close()  # what was written is flushed, the end never is
            return out
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return out  # the client left
        await out.write_eof()
        return out


@functools.lru_cache(maxsize=64)
def _base(url: str) -> tuple[str, str, str]:
    base = URL(url)
    return base.scheme, base.raw_authority, base.raw_path.rstrip("/")


def target(upstream_url: str, request: web.Request) -> URL:
    """The upstream URL of a pass-through request: the upstream's base, the matched path in its
    wire form, the query as sent. ``encoded=True``: nothing is resolved or re-encoded again."""
    scheme, authority, base = _base(upstream_url)
    return URL.build(
        scheme=scheme,
        authority=authority,
        path=base + encode(request.path),
        query_string=request.rel_url.raw_query_string,
        encoded=True,
    )


async def _next_chunk(
    response: aiohttp.ClientResponse, upstream: Upstream, deadline: float, first: bool
) -> bytes:
    """The next piece of the answer (``b""`` at its end) by ``deadline``."""
    try:
        async with asyncio.timeout_at(deadline):
            return await response.content.read(CHUNK)
    except TimeoutError:
        timeouts = upstream.timeouts
        if first:
            wait = f"did not start its answer within {timeouts.first_byte:g} s"
        else:
            wait = f"went silent for {timeouts.idle:g} s in the middle of its answer"
        raise UpstreamTimeout(f"Upstream '{upstream.name}' {wait}.") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable(
            f"Upstream '{upstream.name}' broke off its answer; try again."
        ) from exc


async def _upload(
    request: web.Request, limit: int, pace: tuple[float, float]
) -> AsyncIterator[bytes]:
    """The client's body as it comes; a stall of ``idle`` seconds, or a body not all sent
    within ``total`` seconds (``pace``), ends the upload with the client's 408."""
    idle, total = pace
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total
    size = 0
    while True:
        try:
            async with asyncio.timeout(min(idle, deadline - loop.time())):
                chunk = await request.content.read(CHUNK)
        except TimeoutError:
            raise _Late(late(idle, total, loop.time() >= deadline)) from None
        if not chunk:
            return
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        yield chunk
