"""Upstream leases in this process (``store.capacity`` semantics), on an injected clock: the
twin the Redis implementation is held to, for tests. The gateway on ``memory://`` needs none:
the balancer's in-flight count is the whole truth of one process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.clock import Clock
from gateway.store.capacity import LEASE_SECONDS, Bound, Renewed, WaitRoom, bounded_choice


class MemoryLeaseStore:
    wait_room: WaitRoom | None = None  # no queues shared: each process's own serve

    def __init__(self, clock: Clock, lease_seconds: float = LEASE_SECONDS) -> None:
        self.clock = clock
        self.lease_seconds = lease_seconds
        self._sets: dict[str, dict[str, float]] = {}

    def _live(self, upstream: str) -> dict[str, float]:
        now = self.clock.monotonic()
        leases = self._sets.setdefault(upstream, {})
        for lease in [lease for lease, until in leases.items() if until <= now]:
            del leases[lease]
        return leases

    def acquire_now(
        self,
        candidates: Sequence[tuple[str, int]],
        lease: str,
        queue: str | None = None,
        room: bool = False,
        bound: Bound | None = None,
    ) -> asyncio.Future[int]:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_result(self._take(candidates, lease, bound))
        return done

    async def acquire(
        self,
        candidates: Sequence[tuple[str, int]],
        lease: str,
        queue: str | None = None,
        bound: Bound | None = None,
    ) -> int:
        return self._take(candidates, lease, bound)

    def _take(self, candidates: Sequence[tuple[str, int]], lease: str, bound: Bound | None) -> int:
        held = [len(self._live(upstream)) for upstream, _ in candidates]
        caps = [cap for _, cap in candidates]
        if bound is not None:
            index = bounded_choice(held, caps, bound)
        else:
            free = (i for i, (n, cap) in enumerate(zip(held, caps, strict=True)) if n < cap)
            index = next(free, -1)
        if index >= 0:
            leases = self._live(candidates[index][0])
            leases[lease] = self.clock.monotonic() + self.lease_seconds
        return index

    async def renew(
        self, leases: Sequence[tuple[str, str]], room: Sequence[tuple[str, int]] = ()
    ) -> Renewed:
        gone = []
        for upstream, lease in leases:
            held = self._live(upstream)
            if lease in held:
                held[lease] = self.clock.monotonic() + self.lease_seconds
            else:
                gone.append((upstream, lease))
        return Renewed([False] * len(room), gone)  # one process: no pool to keep

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        self.release_now(leases)

    def release_now(self, leases: Sequence[tuple[str, str]], at_once: bool = False) -> None:
        for upstream, lease in leases:
            self._sets.get(upstream, {}).pop(lease, None)

    async def held(self, upstream: str) -> int:
        return len(self._live(upstream))

    async def close(self) -> None:
        self._sets.clear()
