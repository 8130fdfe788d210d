"""The public listener's HTTP protocol: aiohttp's, except for requests it cannot parse.

aiohttp answers a malformed request itself, before any middleware, with a text body and a log
line that both quote the offending bytes — which can include an ``Authorization`` header. Here
such a request gets a JSON error that names the problem without echoing input, and one log line
with the client and the parser's verdict (its class), never the data. It carries the headers
every answer of the app carries (X-Request-ID, Server, the security headers): no signal of the
app reaches it, so the runner hands the app's stamper to its connections.
"""

from __future__ import annotations

import logging
from typing import cast

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.web.middlewares import STAMP, Stamp

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


class QuietServer(web.Server):
    stamp: Stamp | None = None

    def __call__(self) -> RequestHandler:
        handler = QuietRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.stamp = self.stamp
        return handler


class QuietAppRunner(web.AppRunner):
    """An ``AppRunner`` whose connections use ``QuietRequestHandler``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = QuietServer  # same state, one overridden factory method
        cast(QuietServer, server).stamp = cast(Stamp | None, self.app.get(STAMP))
        return server
