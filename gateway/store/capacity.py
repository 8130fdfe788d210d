"""Upstream slots shared by every gateway process of a store: the Protocol the capacity service
(``routing.capacity``) needs, apart from the main store's seam (``store.base``).

A slot is a lease: a member of the upstream's lease set with an expiry, taken before a request
goes to the upstream, renewed while it lives, removed when it ends. A process that dies stops
renewing, and its leases expire: the slots heal within one lease time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

LEASE_SECONDS = 4.0  # a dead process's slots come back within this
RENEW_SECONDS = 1.0  # how often a live process renews the leases it holds


class LeaseStore(Protocol):
    async def acquire(self, candidates: Sequence[tuple[str, int]], lease: str) -> int:
        """Take a slot as ``lease`` on the first of ``candidates`` (upstream name, cap) with one
        free; its index, or -1 if every one is full."""
        ...

    async def renew(self, leases: Sequence[tuple[str, str]]) -> None:
        """Extend (upstream name, lease) pairs still held by another lease time."""
        ...

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        """Give (upstream name, lease) pairs back."""
        ...

    async def held(self, upstream: str) -> int:
        """Leases of ``upstream`` not expired, all processes together."""
        ...

    async def close(self) -> None: ...
