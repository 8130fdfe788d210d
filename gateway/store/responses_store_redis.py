"""Stored Responses on Redis or Redis Cluster (``store.responses_store`` semantics), shared by
every gateway process of the store.

One string key per response, ``gw:resp:{<id>}:<owner>`` (the owner escaped as
``store.redis_codec`` escapes it for the main store), set with its TTL in one ``SET … PX``: Redis
expires it. The hash tag is the response's own id, not its owner's: a response needs no
atomicity with anything else of its owner, so one busy owner's responses spread over every
shard of a Cluster instead of filling its owner's one. The owner is in the key's name, after
the tag: an owner only ever names its own keys, so another owner's id reads as missing and is
not deleted, and two owners' responses under one id (a native worker's ids may repeat) stay
apart.

Keys of the earlier layout, ``gw:{<owner>}:resp:<id>`` (under the owner's hash tag; the same
value), are still read and deleted when the new key is missing: a response stored before the
upgrade stays found until it expires (``responses.ttl_days``); nothing writes them any more.

Its own connection from ``store.url``, apart from the main store's: a pipelined lane
(``store.redis_lane``, as the main store's calls ride) for a plain ``redis://`` URL, a redis-py
client (``store.redis_conn``) for Cluster and TLS. A call on the lane is bounded by its reply's
deadline (``_Deadlines``: one timer for every reply awaited, where an ``asyncio.timeout``, or a
timer, per call cost as much as the call); one through redis-py by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable
from typing import Any, TypeVar

from gateway.store.base import StoreError
from gateway.store.redis_codec import esc, tag
from gateway.store.redis_conn import ERRORS, client, parse
from gateway.store.redis_lane import Arg, Lane, LaneError, supported

T = TypeVar("T")


def key(owner: str, response_id: str) -> str:
    """A response's key: its own id the hash tag (ids hold no braces: ``valid_id``)."""
    return f"gw:resp:{{{response_id}}}:{_escaped(owner)}"


@functools.lru_cache(maxsize=4096)
def _escaped(owner: str) -> str:
    return esc(owner)  # (once per owner, not per response)


def legacy_key(owner: str, response_id: str) -> str:
    """Where a response was kept before: under its owner's hash tag."""
    return f"{tag(owner)}resp:{response_id}"


def _bytes(value: Any) -> bytes | None:
    return None if value is None else value.encode() if isinstance(value, str) else bytes(value)


class _Deadlines:
    """Replies awaited on the lane, each failed with ``TimeoutError`` once ``timeout`` seconds
    have passed since it was sent: one timer for them all, armed for the oldest reply still
    owed, where a timer per reply cost two timer operations per call."""

    __slots__ = ("_handle", "_loop", "_owed", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._owed: deque[tuple[float, asyncio.Future[Any]]] = deque()  # oldest first
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, reply: asyncio.Future[Any]) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = reply.get_loop()
        self._owed.append((loop.time() + self.timeout, reply))
        if self._handle is None:
            self._handle = loop.call_later(self.timeout, self._expire)

    def _expire(self) -> None:
        """Every reply past its deadline failed (those answered dropped); the timer armed
        again for the oldest still owed."""
        self._handle, owed = None, self._owed
        assert self._loop is not None
        now = self._loop.time()
        while owed and (owed[0][1].done() or owed[0][0] <= now):
            reply = owed.popleft()[1]
            if not reply.done():
                reply.set_exception(TimeoutError())
        if owed:
            self._handle = self._loop.call_later(owed[0][0] - now, self._expire)


class RedisResponses:
    def __init__(self, url: str, timeout_ms: int) -> None:
        self.timeout = max(0.05, timeout_ms / 1000.0)
        self.lane = Lane(url, self.timeout) if supported(url) else None
        self.client = client(parse(url), self.timeout) if self.lane is None else None
        self._deadlines = _Deadlines(self.timeout)

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except (*ERRORS, LaneError, ConnectionError) as exc:
            raise StoreError(f"redis (responses): {exc or type(exc).__name__}") from None

    async def _command(self, *args: Arg) -> Any:
        """One command's reply, within the timeout; every failure a ``StoreError``."""
        if self.lane is None:
            assert self.client is not None
            return await self._call(self.client.execute_command(*args))
        reply = self.lane.send_now(*args)
        if reply is None:  # not connected yet: the lane connects (bounded as redis-py's are)
            return await self._call(self.lane.call(*args))
        self._deadlines.add(reply)
        try:
            return await reply
        except (LaneError, ConnectionError, TimeoutError) as exc:
            raise StoreError(f"redis (responses): {exc or type(exc).__name__}") from None

    async def put(self, owner: str, response_id: str, record: bytes, ttl: float) -> None:
        """(``_command``'s lane path written out: a step less in the await chain of a request
        whose answer waits on it; the milliseconds as text, which the lane packs once and
        keeps, where a number is packed by a call each time)"""
        args = ("SET", key(owner, response_id), record, "PX", str(max(1, int(ttl * 1000))))
        reply = self.lane.send_now(*args) if self.lane is not None else None
        if reply is None:
            await self._command(*args)
            return
        self._deadlines.add(reply)
        try:
            await reply
        except (LaneError, ConnectionError, TimeoutError) as exc:
            raise StoreError(f"redis (responses): {exc or type(exc).__name__}") from None

    async def get(self, owner: str, response_id: str) -> bytes | None:
        found = await self._command("GET", key(owner, response_id))
        if found is None:  # perhaps stored before the upgrade
            found = await self._command("GET", legacy_key(owner, response_id))
        return _bytes(found)

    async def delete(self, owner: str, response_id: str) -> bool:
        if await self._command("DEL", key(owner, response_id)):
            return True
        return bool(await self._command("DEL", legacy_key(owner, response_id)))

    async def close(self) -> None:
        if self.lane is not None:
            await self.lane.close()
            return
        assert self.client is not None
        try:
            await self.client.aclose()
        except ERRORS:
            pass  # closing a connection that is gone already
