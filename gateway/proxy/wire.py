"""A lean HTTP/1.1 client for the chat hot path: keep-alive connections, one POST at a time each.

aiohttp's client costs about as much CPU per request as the rest of the gateway together
(request and response objects, trace hooks, payload registry, cookie and redirect machinery,
a multidict per answer). The gateway needs none of that to POST a JSON body to a worker and
relay what comes back, so this client is an ``asyncio.Protocol`` per connection with
``httptools`` (llhttp, the parser Node.js uses) reading the answers:

- ``Pool.post`` writes the head and body in one ``write`` on an idle connection of that
  host (or a new one, bounded by the connect timeout) and waits for the answer's head.
- The body arrives as ``readany()`` pieces (streams) or whole by ``read()``. Reading pauses
  the socket above ``HIGH_WATER`` buffered bytes, so a slow client holds back the upstream.
- ``release()`` returns a connection whose answer was read to its end, and that both sides
  keep alive, to the pool; anything else is closed (``close()`` too). Idle connections are
  closed after ``IDLE_SECONDS``, or at once when the upstream closes them.
- A non-streamed answer is bounded by ``read_timeout``: it fails if that long passes with
  no data (a window re-opened only when it ends after data arrived). Streams are bounded by
  the caller. The timer is the connection's, kept across its answers (uvloop makes and frees
  a libuv handle for every timer set up and cancelled: a few thousand instructions a request);
  one that ends before the current answer's window does is set again for the window's end.

Failures raise ``WireError`` (``ConnectError`` for the connect step) and ``TimeoutError``;
``gateway.proxy.upstream`` turns them into the client-facing errors. Nothing is retried here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024  # buffered body bytes above which reading pauses
_FRAMING_LENGTHS = frozenset({len(b"content-length"), len(b"transfer-encoding")})
IDLE_SECONDS = 60.0


class WireError(Exception):
    """The connection failed, or the upstream broke HTTP/1.1."""


class TooLarge(WireError):
    """An answer past the size its reader allows."""


class ConnectError(WireError):
    """No connection could be made."""


class ConnectTimeout(ConnectError):
    """No connection within the connect timeout."""


class Origin:
    """Where a pool connects: scheme, host, port (from an upstream URL), and its idle conns."""

    __slots__ = ("authority", "host", "idle", "port", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        default = 443 if self.tls else 80
        self.port = parts.port or default
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if self.port == default else f"{host}:{self.port}"
        self.idle: list[_Conn] = []


class _Conn(asyncio.Protocol):
    """One connection: the answer being read, its body pieces, the parser's callbacks."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.busy = False  # a request is out and its answer not yet fully read
        self._head: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.framed = False  # Content-Length or chunked: the body does not end at EOF
        self.error: Exception | None = None
        self.paused = False
        self.seen = False  # data arrived since the read timer was armed
        # The read timer (``watch``): the current answer's read timeout (None: not timed), when
        # its window of silence began, and the pending timer and when it is due.
        self.timeout: float | None = None
        self.window = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # nothing was asked: a broken or hostile upstream
            self.abort()
            return
        self.seen = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(WireError(f"invalid HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy and not self.complete:
            if self.status and not self.framed and self.error is None:
                self.on_message_complete()  # a body that ends with the connection
            else:
                self._fail(WireError(f"connection lost: {exc or 'closed by the upstream'}"))

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: unsolicited, drop the connection
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only the framing is read of the head, as each line comes (no list of them kept):
        # only the lengths of Content-Length and Transfer-Encoding are worth a lower().
        if len(name) in _FRAMING_LENGTHS:
            lower = name.lower()
            if lower == b"content-length" or (
                lower == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self.framed = True

    def on_headers_complete(self) -> None:
        if self.closed:
            return
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103): the real one follows
            self.framed = False  # (its lines said nothing of the real answer's body)
            return
        self.status = status
        if status in (204, 304):
            self.framed = True
        self._wake_head()

    def on_body(self, body: bytes) -> None:
        if not self.status or self.closed:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.status or self.complete:  # the end of an interim or unsolicited answer
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # (reset once the callback returns)
        self._wake_head()
        self._wake()

    # -- the request --------------------------------------------------------------------
    def send(self, head: bytes, body: bytes) -> asyncio.Future[None]:
        """Write the request; returns what the answer's head resolves (awaited as it is, not
        through a coroutine of this connection's: one level less in the await chain)."""
        assert self.transport is not None
        self.busy, self.complete, self.framed, self.error = True, False, False, None
        self.keep_alive = False
        self.status, self.buffered, self.seen, self.timeout = 0, 0, False, None
        self.chunks.clear()  # (empty already: a connection comes back only read to its end)
        self._head = answered = self.loop.create_future()
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return answered

    def _wake_head(self) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        for future in (self._head, self._waiter):
            if future is not None and not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: a caller that left must not log it
        self.abort()

    def stalled(self) -> None:
        self._fail(TimeoutError())

    # -- the read timer of a non-streamed answer -----------------------------------------
    def watch(self, timeout: float) -> None:
        """Time the current answer: it fails after ``timeout`` with no data; when data came
        meanwhile, a new window opens instead. A pending timer due no later is kept."""
        now = self.loop.time()
        self.timeout, self.window, self.seen = timeout, now, False
        due = now + timeout
        if self._timer is None or self._timer_at > due:
            if self._timer is not None:
                self._timer.cancel()
            self._arm(due)

    def _arm(self, due: float) -> None:
        self._timer_at = due
        self._timer = self.loop.call_at(due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        timeout = self.timeout
        if timeout is None:  # nothing timed now (the answer was read, or released)
            return
        due = self.window + timeout
        if self._timer_at < due:  # set for an earlier window: wait for this one's end
            self._arm(due)
        elif self.seen and not self.complete and self.error is None:
            now = self.loop.time()
            self.window, self.seen = now, False
            self._arm(now + timeout)
        elif not self.complete:
            self.stalled()

    def take(self) -> bytes | None:
        """What came of the body and was not read yet (``b""`` at its end), or None when the
        reader must wait for more; the connection's failure is raised."""
        if self.chunks:
            data = b"".join(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
            self.chunks.clear()
            self.buffered = 0
            if self.paused and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()
            return data
        if self.error is not None:
            raise self.error
        if self.complete:
            return b""
        return None

    async def readany(self) -> bytes:
        while (data := self.take()) is None:
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return data

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Response:
    """An upstream's answer: ``status``, its body by ``read``/``readany``; ``release()`` or
    ``close()`` when done with it."""

    __slots__ = ("_conn", "_pool", "_timed", "_timeout", "status")

    def __init__(self, conn: _Conn, pool: Pool, timeout: float | None) -> None:
        self._conn, self._pool = conn, pool
        self.status = conn.status
        self._timed = False  # its connection's read timer times it (``arm``)
        self._timeout = timeout

    def readany(self) -> Awaitable[bytes]:
        """The next piece of the body (the connection's coroutine itself: no level of its own
        in the await chain)."""
        return self._conn.readany()

    @property
    def ended(self) -> bool:
        """Whether the whole body has been read: ``readany`` would only say ``b""``."""
        conn = self._conn
        return conn.complete and not conn.chunks and conn.error is None

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; past ``limit`` bytes, ``TooLarge`` (the connection closed)."""
        conn, parts, size = self._conn, [], 0
        while True:
            chunk = conn.take()  # what is here already: no coroutine (a small answer is whole)
            if chunk is None:
                chunk = await conn.readany()
            if not chunk:
                break
            size += len(chunk)
            if limit is not None and size > limit:
                self.close()
                raise TooLarge(limit)
            parts.append(chunk)
        self._stop_timer()
        return b"".join(parts)

    def release(self) -> None:
        """Back to the pool if the whole answer was read and the connection stays open."""
        self._stop_timer()
        conn = self._conn
        if self.ended and not conn.closed and conn.keep_alive:
            self._pool.put(conn)
        else:
            conn.abort()

    def close(self) -> None:
        self._stop_timer()
        self._conn.abort()

    # -- the read timer of a non-streamed answer (the connection's: ``_Conn.watch``) -------
    def arm(self) -> None:
        """Start the read timer (``timeout`` given): it fails the answer after that long with
        no data; when data came meanwhile, a new window opens instead."""
        assert self._timeout is not None
        self._timed = True
        self._conn.watch(self._timeout)

    def _stop_timer(self) -> None:
        if self._timed:  # once, before the connection can serve another answer
            self._timed = False
            self._conn.timeout = None


class Pool:
    """Keep-alive connections per origin; ``post`` sends one request and waits for its head."""

    def __init__(self) -> None:
        self._origins: dict[str, Origin] = {}
        self._tls: ssl.SSLContext | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def origin(self, url: str) -> Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = Origin(url)
        return origin

    async def post(
        self,
        origin: Origin,
        path: str,
        headers: dict[str, str],
        body: bytes,
        connect_timeout: float,
        read_timeout: float | None,
    ) -> Response:
        """POST ``body``; returns once the answer's head is in. ``read_timeout``: the
        longest silence before the whole answer is in (None: the caller bounds it)."""
        conn = self._idle(origin) or await self._connect(origin, connect_timeout)
        lines = [f"POST {path} HTTP/1.1\r\nHost: {origin.authority}\r\n"]
        for name, value in headers.items():  # (a loop: a generator costs ~2.5k more)
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        head = conn.send("".join(lines).encode("utf-8", "surrogateescape"), body)
        response = Response(conn, self, read_timeout)
        if read_timeout is not None:
            response.arm()
        try:
            await head
        except BaseException:
            response.close()
            raise
        response.status = conn.status
        return response

    def _idle(self, origin: Origin) -> _Conn | None:
        idle = origin.idle
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, origin: Origin, seconds: float) -> _Conn:
        loop = asyncio.get_running_loop()
        tls: Any = None
        if origin.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(
                    lambda: _Conn(origin),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection within {seconds:g} s") from exc
        except OSError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    def put(self, conn: _Conn) -> None:
        conn.busy = False
        if self._closed:
            conn.abort()
            return
        conn.idle_since = conn.loop.time()
        conn.origin.idle.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(IDLE_SECONDS / 2, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle longer than ``IDLE_SECONDS``; again later while any idle."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        oldest = loop.time() - IDLE_SECONDS
        left = False
        for origin in self._origins.values():
            keep = []
            for conn in origin.idle:
                if conn.closed:
                    continue
                if conn.idle_since < oldest:
                    conn.abort()
                else:
                    keep.append(conn)
            origin.idle[:] = keep
            left = left or bool(keep)
        if left:
            self._sweeper = loop.call_later(IDLE_SECONDS / 2, self._sweep)

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.abort()
            origin.idle.clear()
