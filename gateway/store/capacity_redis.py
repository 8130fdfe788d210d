"""Upstream leases on Redis or Redis Cluster (``store.capacity`` semantics), shared by every
gateway process of the store.

Keys: ``gw:{cap}:<upstream>``, a sorted set of lease ids by expiry (ms, Redis ``TIME``), all
under one hash tag so that one script can look at every upstream of a model on a Cluster.
``capacity_acquire.lua`` takes a slot (one EVALSHA per request to a capped upstream);
``capacity_renew.lua`` renews or releases any number of leases in one EVALSHA. Its own
connection through the store's transport (``store.transport``: the lane on one Redis, redis-py
for a Cluster), apart from the main store's.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from gateway.store.capacity import LEASE_SECONDS
from gateway.store.redis_conn import parse
from gateway.store.transport import RedisTransport, Script, transport_for

PREFIX = "gw:{cap}:"


def _script(name: str) -> Script:
    return Script(name, resources.files("gateway.store").joinpath(name).read_text())


ACQUIRE = _script("capacity_acquire.lua")
RENEW = _script("capacity_renew.lua")


class RedisLeaseStore:
    def __init__(self, url: str, timeout_ms: int, lease_seconds: float = LEASE_SECONDS) -> None:
        self.url = url
        self.timeout = timeout_ms / 1000.0
        self.lease_ms = str(max(1, int(lease_seconds * 1000)))
        self._transport: RedisTransport | None = None

    @property
    def transport(self) -> RedisTransport:
        """Made on first use: a gateway without capped upstreams never connects."""
        if self._transport is None:
            self._transport = transport_for(parse(self.url), self.timeout, self.timeout)
        return self._transport

    async def acquire(self, candidates: Sequence[tuple[str, int]], lease: str) -> int:
        keys = [PREFIX + name for name, _ in candidates]
        args = [lease, self.lease_ms, *(str(cap) for _, cap in candidates)]
        (index,) = await self.transport.evalsha(ACQUIRE, [(keys, args)])
        return int(index) - 1

    async def _renew_or_release(self, leases: Sequence[tuple[str, str]], ms: str) -> None:
        if leases:
            keys = [PREFIX + name for name, _ in leases]
            await self.transport.evalsha(RENEW, [(keys, [ms, *(lease for _, lease in leases)])])

    async def renew(self, leases: Sequence[tuple[str, str]]) -> None:
        await self._renew_or_release(leases, self.lease_ms)

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        await self._renew_or_release(leases, "0")

    async def held(self, upstream: str) -> int:
        seconds, micros = await self.transport.call("TIME")
        ms = int(seconds) * 1000 + int(micros) // 1000
        return int(await self.transport.call("ZCOUNT", PREFIX + upstream, str(ms + 1), "+inf"))

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
