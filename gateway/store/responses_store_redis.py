"""Stored Responses on Redis or Redis Cluster (``store.responses_store`` semantics), shared by
every gateway process of the store.

One string key per response, ``gw:{<owner>}:resp:<id>``, under the owner's hash tag (the owner
escaped as ``store.redis_codec`` escapes it for the main store), set with its TTL in one ``SET …
PX``: Redis expires it. Its own connection from ``store.url``, apart from the main store's: a
pipelined lane (``store.redis_lane``, as the main store's calls ride: a Responses request stores
one record, and redis-py's per-call cost was most of what storing it cost) for a plain
``redis://`` URL, a redis-py client (``store.redis_conn``) for Cluster and TLS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from gateway.store.base import StoreError
from gateway.store.redis_codec import tag
from gateway.store.redis_conn import ERRORS, client, parse
from gateway.store.redis_lane import Lane, LaneError, supported

T = TypeVar("T")


def key(owner: str, response_id: str) -> str:
    return f"{tag(owner)}resp:{response_id}"


class RedisResponses:
    def __init__(self, url: str, timeout_ms: int) -> None:
        self.timeout = max(0.05, timeout_ms / 1000.0)
        self.lane = Lane(url, self.timeout) if supported(url) else None
        self.client = client(parse(url), self.timeout) if self.lane is None else None

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except (*ERRORS, LaneError, ConnectionError) as exc:
            raise StoreError(f"redis (responses): {exc or type(exc).__name__}") from None

    async def put(self, owner: str, response_id: str, record: bytes, ttl: float) -> None:
        name, ms = key(owner, response_id), max(1, int(ttl * 1000))
        if self.lane is not None:
            await self._call(self.lane.call("SET", name, record, "PX", ms))
        else:
            assert self.client is not None
            await self._call(self.client.set(name, record, px=ms))

    async def get(self, owner: str, response_id: str) -> bytes | None:
        name = key(owner, response_id)
        if self.lane is not None:
            found = await self._call(self.lane.call("GET", name))
        else:
            assert self.client is not None
            found = await self._call(self.client.get(name))
        if found is None:
            return None
        return found.encode() if isinstance(found, str) else bytes(found)

    async def delete(self, owner: str, response_id: str) -> bool:
        name = key(owner, response_id)
        if self.lane is not None:
            return bool(await self._call(self.lane.call("DEL", name)))
        assert self.client is not None
        return bool(await self._call(self.client.delete(name)))

    async def close(self) -> None:
        if self.lane is not None:
            await self.lane.close()
            return
        assert self.client is not None
        try:
            await self.client.aclose()
        except ERRORS:
            pass  # closing a connection that is gone already
