"""The alert store in this process (``memory://``): the reference of ``store.events`` semantics,
with time from the injected clock. Not durable past the process, as the memory store itself."""

from __future__ import annotations

from collections import OrderedDict

from gateway.clock import Clock
from gateway.store.events import HISTORY, Item


class MemoryEventStore:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._items: dict[str, bytes] = {}
        self._due: dict[str, float] = {}
        self._markers: dict[str, float] = {}  # marker → when it lapses
        self._values: dict[str, tuple[str, float]] = {}
        self._leader: tuple[str, float] | None = None
        self._expiry: dict[str, float] = {}
        self._history: OrderedDict[str, bytes] = OrderedDict()  # oldest first

    def _live(self, until: float) -> bool:
        return until > self.clock.time()

    async def enqueue(self, items: list[Item], once: tuple[str, float] | None = None) -> bool:
        now = self.clock.time()
        if once is not None:
            marker, ttl = once
            if self._live(self._markers.get(marker, 0.0)):
                return False
            self._markers[marker] = now + ttl
            if len(self._markers) > 100_000:  # forget lapsed markers now and then
                self._markers = {m: t for m, t in self._markers.items() if t > now}
        for item_id, payload in items:
            if item_id not in self._items:
                self._items[item_id] = payload
                self._due[item_id] = now
                self._history[item_id] = payload
                self._history.move_to_end(item_id)
        while len(self._history) > HISTORY:
            self._history.popitem(last=False)
        return True

    async def claim(self, count: int, lease: float) -> list[Item]:
        now = self.clock.time()
        due = sorted((at, item_id) for item_id, at in self._due.items() if at <= now)[:count]
        for _, item_id in due:
            self._due[item_id] = now + lease
        return [(item_id, self._items[item_id]) for _, item_id in due]

    async def ack(self, item_id: str, record: bytes | None = None) -> None:
        self._items.pop(item_id, None)
        self._due.pop(item_id, None)
        if record is not None and item_id in self._history:
            self._history[item_id] = record

    async def retry(self, item_id: str, payload: bytes, delay: float) -> None:
        if item_id in self._items:
            self._items[item_id] = payload
            self._due[item_id] = self.clock.time() + delay
            if item_id in self._history:
                self._history[item_id] = payload

    async def depth(self) -> int:
        return len(self._items)

    async def recent(self, count: int) -> list[Item]:
        newest = reversed(self._history.items())
        return [pair for _, pair in zip(range(max(0, count)), newest, strict=False)]

    async def records(self, ids: list[str]) -> list[bytes | None]:
        return [self._history.get(item_id) for item_id in ids]

    async def leader(self, holder: str, ttl: float) -> bool:
        current = self._leader
        if current is not None and current[0] != holder and self._live(current[1]):
            return False
        self._leader = (holder, self.clock.time() + ttl)
        return True

    async def resign(self, holder: str) -> None:
        if self._leader is not None and self._leader[0] == holder:
            self._leader = None

    async def swap(self, name: str, value: str, ttl: float) -> str | None:
        before = self._values.get(name)
        self._values[name] = (value, self.clock.time() + ttl)
        return before[0] if before is not None and self._live(before[1]) else None

    async def watch_expiry(self, key_id: str, expires_at: float) -> None:
        self._expiry[key_id] = expires_at

    async def unwatch_expiry(self, key_id: str) -> None:
        self._expiry.pop(key_id, None)

    async def expiring(self, until: float) -> list[tuple[str, float]]:
        return sorted(
            ((key_id, at) for key_id, at in self._expiry.items() if at <= until),
            key=lambda pair: (pair[1], pair[0]),
        )

    async def close(self) -> None:
        pass
