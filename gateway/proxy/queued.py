"""A stream's head sent early, while its request waits for a slot of a full model
(``routing.capacity``): the first ``: queued`` comment goes out with a 200 head, and one more
every few seconds, so that proxies between the client and the gateway keep the connection.

Once the head is out, the answer can no longer be a status: a wait that ends in
``queue_timeout``, a failure of every attempt, or the worker's own refusal reaches the client
as an error event in its dialect and no ``[DONE]``, as any failure in the middle of a stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import orjson
from aiohttp import web

from gateway.errors import BadRequest, GatewayError
from gateway.proxy.bodies import upstream_error
from gateway.proxy.exchange import Exchange

T = TypeVar("T")
COMMENT = b": queued\n\n"


class EarlyHead:
    """The client's event stream, whose head may go out before any upstream answered."""

    def __init__(
        self, request: web.Request, client: web.StreamResponse, headers: dict[str, str] | None
    ) -> None:
        self.request, self.client, self.headers = request, client, headers
        self.sent = False

    async def tick(self) -> None:
        """One ``: queued`` comment (the first with the head)."""
        if not self.sent:
            if self.headers:
                self.client.headers.update(self.headers)
            await self.client.prepare(self.request)
            self.sent = True
        await self.client.write(COMMENT)

    async def opening(
        self, ex: Exchange, error: Callable[[GatewayError], bytes], opening: Awaitable[T]
    ) -> T | None:
        """What ``opening`` (the upstream's answer) gives, or None when it failed after the
        head went out: then the failure was written as ``error`` makes it, and the stream
        ended. Before the head, a failure is raised, to be answered with its status."""
        try:
            return await opening
        except GatewayError as err:
            if not self.sent:
                raise
            ex.refusal = err.code  # the access log's error: the gateway's own, in the stream
            await self.fail(ex, error(err))
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            if not self.sent:
                raise
        return None

    async def refused(
        self, ex: Exchange, error: Callable[[GatewayError], bytes], status: int, raw: bytes
    ) -> None:
        """The worker refused the request (``status``, its body ``raw``) after the head went
        out: its refusal as an error event."""
        try:
            answer = upstream_error(ex, status, raw)
            message = orjson.loads(answer.body)["error"]["message"]  # type: ignore[arg-type]
            err: GatewayError = BadRequest(str(message))
            err.status = status
        except GatewayError as failure:  # the worker refused the gateway's own credentials
            err = failure
        await self.fail(ex, error(err))

    async def fail(self, ex: Exchange, event: bytes) -> None:
        ex.error = True
        try:
            await self.client.write(event)
            await self.client.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the client left meanwhile
