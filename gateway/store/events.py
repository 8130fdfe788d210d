"""The alert service's storage seam: a durable queue of deliveries, a leader lease, shared
upstream states and the index of keys that expire. Apart from ``store.base`` because it serves
another part of the gateway; the same two backends implement it (``events_memory``,
``events_redis``), and one contract suite runs against memory, Redis and Redis Cluster.

Semantics every backend keeps:

- ``enqueue`` adds items (id → opaque bytes) due at once; an id already queued is left as it is,
  so a retried enqueue adds nothing. With ``once`` = (marker, ttl) the items are added only if
  the marker was never set (within its ttl), atomically with setting it: "each threshold once
  per period" cannot lose an event between the check and the enqueue. Returns whether added.
- ``claim`` hands out up to ``count`` due items and hides them for ``lease`` seconds: a sender
  that dies with them lets them come back. ``ack`` removes an item for good; ``retry`` stores
  its new bytes and makes it due ``delay`` seconds from now. ``depth`` counts queued items.
- The history: ``enqueue`` also records each item it adds (its payload) in a history of the
  ``HISTORY`` most recent items, oldest forgotten first; ``retry`` records the item's new
  payload there, ``ack`` its final ``record`` when one is given (an item already forgotten
  stays forgotten). ``recent(count)`` lists the history newest first; ``records(ids)`` looks
  items up in it (None: not there). What ``GET /admin/alerts/events`` shows.
- ``leader(holder, ttl)`` takes or renews a lease that one holder at a time has; it lapses
  ``ttl`` seconds after its last renewal. ``resign`` gives it up (only its holder can).
- ``swap(name, value, ttl)`` sets a shared value and returns the one before (None: unset or
  lapsed): processes that each see an upstream fail agree on who reports the change.
- ``watch_expiry``/``unwatch_expiry``/``expiring(until)``: key ids by expiry time.
- Time is the store's (Redis ``TIME``, or the injected clock). Every call is bounded by the
  store's timeout and raises only ``StoreError``.
"""

from __future__ import annotations

from typing import Protocol

Item = tuple[str, bytes]  # (id, payload)
HISTORY = 1000  # items the history keeps


class EventStore(Protocol):
    # -- the queue ----------------------------------------------------------------------------
    async def enqueue(self, items: list[Item], once: tuple[str, float] | None = None) -> bool: ...

    async def claim(self, count: int, lease: float) -> list[Item]: ...

    async def ack(self, item_id: str, record: bytes | None = None) -> None: ...

    async def retry(self, item_id: str, payload: bytes, delay: float) -> None: ...

    async def depth(self) -> int: ...

    # -- the history --------------------------------------------------------------------------
    async def recent(self, count: int) -> list[Item]: ...

    async def records(self, ids: list[str]) -> list[bytes | None]: ...

    # -- coordination ---------------------------------------------------------------------------
    async def leader(self, holder: str, ttl: float) -> bool: ...

    async def resign(self, holder: str) -> None: ...

    async def swap(self, name: str, value: str, ttl: float) -> str | None: ...

    # -- keys that expire ---------------------------------------------------------------------
    async def watch_expiry(self, key_id: str, expires_at: float) -> None: ...

    async def unwatch_expiry(self, key_id: str) -> None: ...

    async def expiring(self, until: float) -> list[tuple[str, float]]: ...

    async def close(self) -> None: ...
