"""The lane of the Redis store: one pipelined connection for every command on one Redis.

Every governed request costs one ``EVALSHA`` to admit and one (batched) to settle. redis-py's
asyncio client spends more CPU on such a call than the rest of the request path together: it
checks a connection out of its pool, packs the command in Python and reads the reply with a
lock held. The lane is an ``asyncio.Protocol`` over a single connection: commands are packed by
``resp.pack`` (as ``hiredis.pack_command`` packs them, cheaper), written together once per loop
iteration, and their replies — which Redis sends in order — are matched to a FIFO of futures
as ``hiredis.Reader`` parses them. Many requests share the connection at once (pipelining), so
no pool is needed. The store's other calls (key records, plans, usage) ride the same connection.

It serves plain ``redis://`` URLs (AUTH and SELECT from the URL); ``rediss://``
and Cluster targets stay on redis-py. Failure semantics are the store's:

- The caller bounds each call: by a deadline (one timer per connection fails the calls past
  theirs with ``TimeoutError``), or by its own ``asyncio.timeout``. A call that timed out fails
  alone: its reply, still owed, is read and dropped when it comes (its future is done), so its
  neighbours on the connection are untouched. redis-py drops the connection instead
  (``socket_timeout``), which fails every call on it and loses the replies of commands Redis
  will still run.
- A server that owes replies and sends nothing for ``hang`` seconds (a hung or stopped Redis)
  loses the connection: its callers fail, and the next call reconnects.
- A lost connection fails every call waiting on it with ``ConnectionError``; nothing is
  retried here (a retried admission could be counted twice).
- An error reply (``-ERR …``, ``-NOSCRIPT …``) is raised as ``LaneError`` to its caller only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url

from gateway.store.resp import Arg as Arg  # the lane's arguments, as its callers name them
from gateway.store.resp import pack as _pack


class LaneError(Exception):
    """An error reply from Redis (its text is the message)."""

    @property
    def noscript(self) -> bool:
        return str(self).startswith("NOSCRIPT")


def supported(url: str) -> bool:
    return url.startswith("redis://")


class _Wire(asyncio.Protocol):
    """Pipelined requests and in-order replies on one transport."""

    def __init__(self, hang: float) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.reader = hiredis.Reader()
        self.out: list[bytes] = []
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.hang = hang
        self.heard = 0.0  # when the server last sent something (or a wait began)
        self._watch: asyncio.TimerHandle | None = None
        # The bounded calls' deadlines (loop time) and futures, in the order sent; one timer,
        # at the soonest deadline, fails those past theirs (a timer per call costs ~7k
        # instructions, and asyncio.timeout ~29k).
        self.bounded: list[tuple[float, list[asyncio.Future[Any]]]] = []
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport

    def send(
        self, packed: bytes, replies: int, deadline: float | None = None
    ) -> list[asyncio.Future[Any]]:
        """The replies' futures of ``replies`` commands (``packed``); with ``deadline``, those
        still unanswered then fail with ``TimeoutError`` (the reply still owed is dropped when
        it comes)."""
        if self.closed:
            raise ConnectionError("redis connection closed")
        if not self.out:  # the first command of this loop iteration: flush once, after it
            self.loop.call_soon(self._flush)
        self.out.append(packed)
        create = self.loop.create_future
        futures = [create()] if replies == 1 else [create() for _ in range(replies)]
        if not self.waiting:
            self.heard = self.loop.time()
        self.waiting.extend(futures)
        if self._watch is None:
            self._watch = self.loop.call_later(self.hang, self._check)
        if deadline is not None:
            self.bounded.append((deadline, futures))
            if self._expiry is None or deadline < self._expiry_at:
                self._expire_at(deadline)
        return futures

    def _expire_at(self, when: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry, self._expiry_at = self.loop.call_at(when, self._expire), when

    def _expire(self) -> None:
        """Fail the calls past their deadline (each alone), forget those answered, and wait
        for the soonest deadline left."""
        self._expiry = None
        now, left = self.loop.time(), []
        for deadline, futures in self.bounded:
            if futures[-1].done():  # answered (replies come in order), failed or expired
                continue
            if deadline <= now:
                for future in futures:
                    if not future.done():
                        future.set_exception(TimeoutError())
                        future.exception()  # retrieved: see ``fail``
            else:
                left.append((deadline, futures))
        self.bounded = left
        if left:
            self._expire_at(min(deadline for deadline, _ in left))

    def _check(self) -> None:
        """Drop a connection whose server owes replies and has been silent for ``hang``."""
        self._watch = None
        if self.closed or not self.waiting:
            return
        silent = self.loop.time() - self.heard
        if silent >= self.hang:
            self.fail(ConnectionError(f"redis sent nothing for {silent:.1f} s"))
        else:
            self._watch = self.loop.call_later(self.hang - silent, self._check)

    def _flush(self) -> None:
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        self.heard = self.loop.time()
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                future = waiting.popleft()
                if future.done():  # its caller gave up (timed out or was cancelled)
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(LaneError(str(reply)))
                    future.exception()  # retrieved: see ``fail``
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked
            self.fail(ConnectionError(f"redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"redis connection lost: {exc or 'closed by the server'}"))

    def fail(self, exc: Exception) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.bounded.clear()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        self.out.clear()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: a caller that left must not log it


def _retrieve(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


class Lane:
    """``Lane(url, timeout)``: connected by the first call (the connection and its AUTH/SELECT
    bounded by ``timeout`` seconds); ``reset()`` drops the connection. A server silent for
    ``HANG_CALLS`` timeouts (at least ``HANG_MIN`` seconds) while it owes replies is given up."""

    HANG_CALLS = 20
    HANG_MIN = 5.0

    def __init__(self, url: str, timeout: float) -> None:
        self._timeout = timeout
        self._hang = max(self.HANG_MIN, self.HANG_CALLS * timeout)
        options = parse_url(url)
        self._host = str(options.get("host", "localhost"))
        self._port = int(options.get("port", 6379))
        self._hello: list[tuple[Arg, ...]] = []
        password, username = options.get("password"), options.get("username")
        if password is not None:
            self._hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if options.get("db"):
            self._hello.append(("SELECT", int(options["db"])))
        self._wire: _Wire | None = None
        self._connecting: asyncio.Future[_Wire] | None = None

    async def call(self, *args: Arg, deadline: float | None = None) -> Any:
        """One command's reply; with ``deadline`` (loop time), ``TimeoutError`` past it."""
        wire = self._wire if self._wire is not None and not self._wire.closed else None
        if wire is None:
            wire = await self._connect(deadline)
        (future,) = wire.send(_pack(args), 1, deadline)
        return await future

    def send_now(self, *args: Arg) -> asyncio.Future[Any] | None:
        """The reply's future of one command sent at once, or None when not connected (then
        ``call``, which connects, is the way). The caller bounds its wait; the future completes
        when the reply comes, however late."""
        return self.send_packed(_pack(args))

    def send_packed(self, packed: bytes) -> asyncio.Future[Any] | None:
        """``send_now`` of a command packed already (``resp``)."""
        wire = self._wire
        if wire is None or wire.closed:
            return None
        return wire.send(packed, 1)[0]

    async def call_many(
        self, commands: Sequence[tuple[Arg, ...]], deadline: float | None = None
    ) -> list[Any]:
        """Commands in one write; their replies in order, an error reply as a ``LaneError``
        in its place (the others still count); with ``deadline``, as in ``call``."""
        return await self.call_packed([_pack(c) for c in commands], deadline)

    async def call_packed(
        self, commands: Sequence[bytes], deadline: float | None = None
    ) -> list[Any]:
        """``call_many`` of commands packed already (``resp``)."""
        wire = self._wire if self._wire is not None and not self._wire.closed else None
        if wire is None:
            wire = await self._connect(deadline)
        futures = wire.send(b"".join(commands), len(commands), deadline)
        replies: list[Any] = []
        for future in futures:
            try:
                replies.append(await future)
            except LaneError as exc:
                replies.append(exc)
        return replies

    async def _connect(self, deadline: float | None = None) -> _Wire:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
            # retrieved here: when every caller gave up, nobody else reads its failure
            self._connecting.add_done_callback(_retrieve)
        # Shielded: a caller that gives up does not cancel the connection the others wait for.
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(self._connecting)

    async def _open(self) -> _Wire:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout):
            _, wire = await loop.create_connection(
                lambda: _Wire(self._hang), self._host, self._port
            )
            try:
                for command in self._hello:
                    (future,) = wire.send(_pack(command), 1)
                    await future
            except BaseException:
                wire.fail(ConnectionError("redis connection setup failed"))
                raise
        self._wire = wire
        return wire

    def reset(self) -> None:
        """Drop the connection (every call waiting on it fails)."""
        if self._wire is not None:
            self._wire.fail(ConnectionError("redis connection dropped"))
            self._wire = None

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        self.reset()
