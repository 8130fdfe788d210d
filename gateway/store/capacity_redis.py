"""Upstream leases on Redis or Redis Cluster (``store.capacity`` semantics), shared by every
gateway process of the store.

Keys: ``gw:{cap}:<upstream>``, a sorted set of lease ids by expiry (ms, Redis ``TIME``), all
under one hash tag so that one script can look at every upstream of a model on a Cluster.
``capacity_acquire.lua`` takes a slot (one EVALSHA per request to a capped upstream);
``capacity_renew.lua`` renews or releases any number of leases in one EVALSHA. Its own redis-py
client (``store.redis_conn``), as the alert store has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from importlib import resources
from typing import Any, TypeVar

from redis.commands.core import AsyncScript

from gateway.store.base import StoreError
from gateway.store.capacity import LEASE_SECONDS
from gateway.store.redis_conn import ERRORS, Client, client, parse

T = TypeVar("T")
PREFIX = "gw:{cap}:"


def _lua(name: str) -> str:
    return resources.files("gateway.store").joinpath(name).read_text()


class RedisLeaseStore:
    def __init__(self, url: str, timeout_ms: int, lease_seconds: float = LEASE_SECONDS) -> None:
        self.url = url
        self.timeout = timeout_ms / 1000.0
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self._client: Client | None = None
        self._acquire: AsyncScript | None = None
        self._renew: AsyncScript | None = None

    def _scripts(self) -> tuple[AsyncScript, AsyncScript]:
        if self._acquire is None or self._renew is None:
            self._client = client(parse(self.url), self.timeout)
            self._acquire = self._client.register_script(_lua("capacity_acquire.lua"))
            self._renew = self._client.register_script(_lua("capacity_renew.lua"))
        return self._acquire, self._renew

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except ERRORS as exc:
            raise StoreError(f"redis (capacity): {exc or type(exc).__name__}") from None

    async def acquire(self, candidates: Sequence[tuple[str, int]], lease: str) -> int:
        keys = [PREFIX + name for name, _ in candidates]
        args: list[Any] = [lease, self.lease_ms, *(cap for _, cap in candidates)]
        index = await self._call(self._scripts()[0](keys, args))
        return int(index) - 1

    async def _renew_or_release(self, leases: Sequence[tuple[str, str]], ms: int) -> None:
        if leases:
            keys = [PREFIX + name for name, _ in leases]
            await self._call(self._scripts()[1](keys, [ms, *(lease for _, lease in leases)]))

    async def renew(self, leases: Sequence[tuple[str, str]]) -> None:
        await self._renew_or_release(leases, self.lease_ms)

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        await self._renew_or_release(leases, 0)

    async def held(self, upstream: str) -> int:
        self._scripts()
        assert self._client is not None
        key = PREFIX + upstream
        now = await self._call(self._client.time())
        ms = int(now[0]) * 1000 + int(now[1]) // 1000
        return int(await self._call(self._client.zcount(key, ms + 1, "+inf")))

    async def close(self) -> None:
        if self._client is None:
            return
        try:
            await self._client.aclose()
        except ERRORS:
            pass  # closing a connection that is gone already
