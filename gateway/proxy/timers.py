"""Timers of the request path that asyncio's own would make costly per chunk."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.errors import GatewayError, RequestTimeout, UpstreamTimeout


class Silence:
    """``with Silence(limit) as s``: the task is cancelled (and the block raises TimeoutError)
    once a wait that began at ``s.since`` has lasted ``limit`` seconds; ``s.since = None``
    between waits. One timer re-armed at most once per ``limit``, where rescheduling an
    ``asyncio.timeout`` around every wait cost two timer operations per stream chunk.

    The other side of a relay is bounded too: a stream whose client takes nothing holds its
    slots as long as it likes. The relay adds 1 to ``s.moved`` each time a wait on the worker
    ended; a whole ``limit`` spent outside those waits with ``moved`` unchanged is spent
    waiting on the client (nothing else in a relay waits), and it ends the same way with
    ``s.stalled`` set: the client took no bytes for ``limit`` seconds."""

    __slots__ = (
        "_cancelling",
        "_fired",
        "_handle",
        "_limit",
        "_loop",
        "_seen",
        "_task",
        "moved",
        "since",
        "stalled",
    )

    def __init__(self, limit: float) -> None:
        self.since: float | None = None
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self._fired = False
        self.moved = self._seen = 0
        self.stalled = False

    def __enter__(self) -> Silence:
        self._cancelling = self._task.cancelling()
        self._handle = self._loop.call_later(self._limit, self._check)
        return self

    def _check(self) -> None:
        since, now = self.since, self._loop.time()
        if since is not None and now - since >= self._limit:
            self._fire()
        elif since is None and self.moved == self._seen:  # a whole limit on the client
            self.stalled = True
            self._fire()
        else:
            self._seen = self.moved
            start = since if since is not None else now
            self._handle = self._loop.call_at(max(start + self._limit, now + 0.001), self._check)

    def timed_out(self, upstream: str) -> GatewayError:
        """After the block raised TimeoutError: the worker's silence, returned (for an error
        event), or the client's stall, raised (the edge cuts the connection)."""
        if self.stalled:
            raise stalled(self._limit) from None
        return UpstreamTimeout(
            f"Upstream '{upstream}' went silent for {self._limit:g} s in the middle of the answer."
        )

    def _fire(self) -> None:
        self._handle, self._fired = None, True
        self._task.cancel()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: object
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fired:
            ours = self._task.uncancel() <= self._cancelling  # no one else cancelled the task
            if ours and kind is asyncio.CancelledError:
                raise TimeoutError from exc


CLIENT_STALLED = "client_stalled"


def stalled(limit: float) -> GatewayError:
    """What a stream whose client took no bytes for ``limit`` seconds ends with: the edge cuts
    the connection (the head is out), and the access log says why."""
    return RequestTimeout(
        f"The client took no bytes of the stream for {limit:g} s.", code=CLIENT_STALLED
    )


async def bounded_write(client: web.StreamResponse, data: bytes, limit: float) -> None:
    """A piece of a stream, the client's wait for it bounded by ``limit`` (``stalled`` past
    it): a client that stops reading must not hold what its request holds for ever."""
    try:
        async with asyncio.timeout(limit):
            await client.write(data)
    except TimeoutError:
        raise stalled(limit) from None


async def last_write(client: web.StreamResponse, data: bytes, limit: float) -> None:
    """A stream's last bytes and its end, the client's wait for them bounded by ``limit``."""
    try:
        async with asyncio.timeout(limit):
            await client.write(data)
            await client.write_eof()
    except TimeoutError:
        raise stalled(limit) from None
