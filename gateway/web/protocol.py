"""The public listener's HTTP protocol: aiohttp's, except for requests it cannot parse, and
with every answer stamped.

aiohttp answers a malformed request itself, before any middleware, with a text body and a log
line that both quote the offending bytes — which can include an ``Authorization`` header. Here
such a request gets a JSON error that names the problem without echoing input, and one log line
with the client and the parser's verdict (its class), never the data. It carries the headers
every answer of the app carries (X-Request-ID, Server, the security headers): no signal of the
app reaches it, so the runner hands the app's stamper to its connections.

It also normalizes every request path once, before aiohttp matches a route: the
connections build their requests through ``normalizing``, which hands the app a request whose
target is ``gateway.paths.canonical`` of the client's, so the route, every handler and the
pass-through see one path. A path ``gateway.paths`` refuses is sent to a route that exists only
for this (no normalized path contains a backslash), whose handler raises ``BadRequest``: the edge
renders it like any refusal, with the request's id, dialect, metrics and access line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import cast

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from yarl import URL

from gateway.errors import BadRequest, GatewayError
from gateway.paths import PathError, canonical, is_plain
from gateway.web.middlewares import EDGE, STAMP, Stamp

log = logging.getLogger("gateway.http")

_WHY = {
    "LineTooLong": "a request line or header is too long",
    "BadStatusLine": "the request line is malformed",
    "BadHttpMethod": "the method is not valid HTTP",
    "InvalidHeader": "a header is malformed",
    "TransferEncodingError": "the Transfer-Encoding is invalid",
    "ContentLengthError": "the Content-Length is invalid",
    "InvalidURLError": "the URL is malformed",
}


class QuietRequestHandler(RequestHandler):
    stamp: Stamp | None = None

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # a crash in a handler: aiohttp's answer echoes nothing
            return super().handle_error(request, status, exc, message)
        kind = type(exc).__name__ if exc is not None else "BadRequest"
        why = _WHY.get(kind, "the request is not valid HTTP/1.1")
        log.info("unparseable request", extra={"client": request.remote, "parser": kind})
        body = {
            "error": {
                "message": f"The request could not be read: {why}.",
                "type": "invalid_request_error",
                "param": None,
                "code": "bad_request",
            }
        }
        response = web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json"
        )
        response.force_close()
        if self.stamp is not None:
            self.stamp(request, response)
        return response


PATH_REFUSAL = web.RequestKey("path_refusal", str)
# The route of refused paths: normalized paths never contain a backslash, so no client reaches it.
REFUSED_PATH = "/\\refused-path"
_REFUSED_TARGET = "/%5Crefused-path"

RequestFactory = Callable[
    [RawRequestMessage, StreamReader, RequestHandler, AbstractStreamWriter, "asyncio.Task[None]"],
    BaseRequest,
]
# ``web.Application._make_request``: a request factory that is told the request's class
MakeRequest = Callable[
    [
        RawRequestMessage,
        StreamReader,
        RequestHandler,
        AbstractStreamWriter,
        "asyncio.Task[None]",
        type[web.Request],
    ],
    BaseRequest,
]


def normalizing(make: MakeRequest, cls: type[web.Request] = web.Request) -> RequestFactory:
    """A request factory that hands ``make`` the normalized target (``gateway.paths``) and
    ``cls``, the class of the requests it makes."""

    def make_request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        refusal: str | None = _CODINGS
        if message.chunked and _other_codings(message):
            message = _refused(message)
        elif is_plain(message.path):  # nearly every request: already normal, nothing to do
            return make(message, payload, protocol, writer, task, cls)
        else:
            message, refusal = _normalized(message)
        request = make(message, payload, protocol, writer, task, cls)
        if refusal is not None:
            request[PATH_REFUSAL] = refusal
        return request

    return make_request


def _normalized(message: RawRequestMessage) -> tuple[RawRequestMessage, str | None]:
    """The message with its path normalized (query and fragment as sent), and why it was
    refused, if it was."""
    url = message.url
    raw = url.raw_path
    if not raw.startswith("/"):  # "*" or an authority: no route takes them anyway
        return message, None
    refusal = None
    try:
        path = canonical(raw)
    except PathError as err:
        path, refusal = _REFUSED_TARGET, str(err)
    if path == raw:
        return message, None
    # encoded=True: the path is already in its one wire form; yarl must not touch it again.
    url = URL.build(
        scheme=url.scheme,
        authority=url.raw_authority,
        path=path,
        query_string=url.raw_query_string,
        fragment=url.raw_fragment,
        encoded=True,
    )
    return message._replace(url=url, path=str(url)), refusal


def _other_codings(message: RawRequestMessage) -> bool:
    """Whether a chunked request names a transfer coding besides ``chunked`` (``gzip,
    chunked``, several lines): the gateway implements none, so it cannot frame such a body."""
    codings = ",".join(message.headers.getall("Transfer-Encoding", ()))
    return codings.strip().lower() != "chunked"


def _refused(message: RawRequestMessage) -> RawRequestMessage:
    url = message.url
    target = URL.build(
        scheme=url.scheme, authority=url.raw_authority, path=_REFUSED_TARGET, encoded=True
    )
    return message._replace(url=target, path=str(target))


_CODINGS = "codings"  # the refusal of a transfer coding (not of a path)


async def refuse_path(request: web.Request) -> web.StreamResponse:
    """The handler of ``REFUSED_PATH``: the 400 of a path ``gateway.paths`` refused, or the 501
    of a transfer coding the gateway does not implement (RFC 9112, 6.1)."""
    why = request.get(PATH_REFUSAL)
    if why is None:  # unreachable by a client; answer as if the route did not exist
        raise web.HTTPNotFound()
    if why == _CODINGS:
        raise GatewayError(
            "Transfer-Encoding may only be chunked; send the body uncompressed.",
            code="not_implemented",
            status=501,
        )
    raise BadRequest(f"The request path is not acceptable: {why}.")


class StampedRequest(web.Request):
    """A request of an app served by ``QuietAppRunner``: each of its answers is stamped
    (X-Request-ID, Server, the security headers) as its head is prepared, then the app's
    ``on_response_prepare`` signal runs. The stamp is called here, not as a receiver of that
    signal: the signal's machinery (its ``send``, a coroutine per receiver) cost ~1k
    instructions per answer. An answer made before routing (a parser error) is stamped by
    ``QuietRequestHandler.handle_error``, as no signal reaches it either."""

    stamp: Stamp  # a staticmethod of the app's own subclass (``stamped_requests``)
    signalled = True  # whether aiohttp's hook, which sends the signals, has any to send

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        if self._match_info is not None:
            self.stamp(self, response)
            if self.signalled:  # (when not, its coroutine costs ~2.6k instructions an answer)
                await super()._prepare_hook(response)


def stamped_requests(app: web.Application, stamp: Stamp) -> type[StampedRequest]:
    """The class of ``app``'s requests, stamped by ``stamp``; ``app`` is frozen (its signals
    are final). aiohttp's hook is skipped when no ``on_response_prepare`` receiver could run:
    the app has none and no sub-application (whose own it would send)."""
    signalled = bool(app.on_response_prepare) or bool(app._subapps)
    attributes = {"stamp": staticmethod(stamp), "signalled": signalled}
    return type("StampedRequest", (StampedRequest,), attributes)


class QuietServer(web.Server):
    stamp: Stamp | None = None

    def __call__(self) -> RequestHandler:
        handler = QuietRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.stamp = self.stamp
        return handler


class QuietAppRunner(web.AppRunner):
    """An ``AppRunner`` whose connections use ``QuietRequestHandler`` and see normalized
    request paths; the app's ``EDGE``, if it has one, handles every request around the app's
    own handling (routing included), and its ``STAMP`` stamps every answer."""

    async def _make_server(self) -> web.Server:
        app = self.app
        app.router.add_route("*", REFUSED_PATH, refuse_path)  # before the app freezes
        server = await super()._make_server()
        server.__class__ = QuietServer  # same state, one overridden factory method
        stamp = cast(Stamp | None, app.get(STAMP))
        cast(QuietServer, server).stamp = stamp
        cls = web.Request if stamp is None else stamped_requests(app, stamp)
        server.request_factory = normalizing(app._make_request, cls)
        edge = cast(Middleware | None, app.get(EDGE))
        if edge is not None:  # (a partial: no level of its own in the await chain)
            server.request_handler = functools.partial(edge, handler=app._handle)
        return server
