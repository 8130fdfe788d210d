"""Stored Responses on Redis or Redis Cluster (``store.responses_store`` semantics), shared by
every gateway process of the store.

One string key per response, ``gw:{<owner>}:resp:<id>``, under the owner's hash tag (the owner
escaped as ``store.redis_codec`` escapes it for the main store), set with its TTL in one ``SET …
PX``: Redis expires it. Its own redis-py client from ``store.url`` (``store.redis_conn``: Cluster
and TLS as the main store), off the hot path of chat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from gateway.store.base import StoreError
from gateway.store.redis_codec import tag
from gateway.store.redis_conn import ERRORS, client, parse

T = TypeVar("T")


def key(owner: str, response_id: str) -> str:
    return f"{tag(owner)}resp:{response_id}"


class RedisResponses:
    def __init__(self, url: str, timeout_ms: int) -> None:
        self.timeout = max(0.05, timeout_ms / 1000.0)
        self.client = client(parse(url), self.timeout)

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except ERRORS as exc:
            raise StoreError(f"redis (responses): {exc or type(exc).__name__}") from None

    async def put(self, owner: str, response_id: str, record: bytes, ttl: float) -> None:
        await self._call(
            self.client.set(key(owner, response_id), record, px=max(1, int(ttl * 1000)))
        )

    async def get(self, owner: str, response_id: str) -> bytes | None:
        found = await self._call(self.client.get(key(owner, response_id)))
        if found is None:
            return None
        return found.encode() if isinstance(found, str) else bytes(found)

    async def delete(self, owner: str, response_id: str) -> bool:
        return bool(await self._call(self.client.delete(key(owner, response_id))))

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except ERRORS:
            pass  # closing a connection that is gone already
