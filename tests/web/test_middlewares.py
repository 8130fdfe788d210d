"""The edge's stamp, checked against the header-by-header computation it prebuilds: the same
headers, values, spellings and order on every answer, whatever the handler had set."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.clock import FakeClock, SystemClock
from gateway.config.schema import Network
from gateway.proxy.exchange import EXCHANGE, Exchange
from gateway.web import middlewares
from gateway.web.middlewares import RequestIds, Stamp, edge_middleware, stamper
from tests.clients import SECURITY


def reference(
    request: web.Request,
    headers: CIMultiDict[str],
    settings: Network,
    trusted: bool,
    new_id: Callable[[], str],
) -> None:
    ex = request.get(EXCHANGE)
    headers["X-Request-ID"] = ex.request_id if ex is not None else new_id()
    headers["Server"] = "llm-gateway"
    if settings.security_headers:
        headers.update(SECURITY)
        if settings.hsts and (request.secure or trusted):
            headers["Strict-Transport-Security"] = middlewares.HSTS


HANDLER_HEADERS: list[list[tuple[str, str]]] = [
    [],
    [("Content-Type", "application/json")],
    [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")],
    [("server", "uvicorn"), ("Content-Type", "application/json")],  # an upstream's, relayed
    [("x-frame-options", "SAMEORIGIN"), ("X-Frame-Options", "ALLOW"), ("Vary", "*")],
    [("X-REQUEST-ID", "theirs"), ("strict-transport-security", "max-age=1"), ("A", "b")],
    [("Retry-After", "3"), ("x-ratelimit-remaining-requests", "0")],
]


def stamped(
    stamp: Stamp, request: web.Request, handler_headers: list[tuple[str, str]]
) -> CIMultiDict[str]:
    response = web.StreamResponse()
    for name, value in handler_headers:
        response.headers.add(name, value)
    stamp(request, response)
    return response.headers


@pytest.mark.parametrize("security, hsts", list(itertools.product([True, False], repeat=2)))
@pytest.mark.parametrize("secure, trusted", [(True, False), (False, True), (False, False)])
@pytest.mark.parametrize("with_exchange", [True, False])
async def test_stamp_matches_header_by_header(
    security: bool, hsts: bool, secure: bool, trusted: bool, with_exchange: bool
) -> None:
    settings = Network(security_headers=security, hsts=hsts)
    request = make_mocked_request("GET", "/v1/models", sslcontext=object() if secure else None)
    if with_exchange:
        request[EXCHANGE] = Exchange("req-1", 0.0, "own-1")
    asked: list[web.Request] = []

    def trusts_proto(r: web.Request) -> bool:
        asked.append(r)
        return trusted

    stamp = stamper(lambda: settings, RequestIds(), trusts_proto, tls=secure)
    reference_ids = RequestIds()
    for handler_headers in HANDLER_HEADERS:
        got = stamped(stamp, request, handler_headers)
        expected = CIMultiDict(handler_headers)
        reference(request, expected, settings, trusted, reference_ids.new)
        if not with_exchange:  # a new id each: compare the shape, then drop it
            assert got["X-Request-ID"].startswith("req_") and len(got["X-Request-ID"]) == 24
            got["X-Request-ID"] = expected["X-Request-ID"] = "new"
        assert list(got.items()) == list(expected.items())
        assert [str(k) for k in got] == [str(k) for k in expected]  # spelled alike too
    # trusts_proto is consulted exactly when it was: HSTS on, and not already over TLS
    assert bool(asked) == (security and hsts and not secure)


def test_the_edge_reads_the_system_clock_directly() -> None:
    import time

    assert middlewares._unwrapped(SystemClock().monotonic) is time.monotonic
    fake = FakeClock()
    assert middlewares._unwrapped(fake.monotonic) == fake.monotonic
    reading = lambda: 1.0  # noqa: E731
    assert middlewares._unwrapped(reading) is reading


async def test_a_raised_redirect_is_recorded_with_its_own_status() -> None:
    seen: list[int] = []
    edge = edge_middleware(
        RequestIds(), time.monotonic, lambda r, ex, status, t: seen.append(status)
    )

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/elsewhere")

    with pytest.raises(web.HTTPFound):
        await edge(make_mocked_request("GET", "/old"), redirect)
    assert seen == [302]
