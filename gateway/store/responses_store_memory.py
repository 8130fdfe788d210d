"""Stored Responses in this process (``store.responses_store`` semantics), time from the
injected clock: the ``memory://`` store's, and the reference the Redis one follows.

Bounded: past ``capacity`` bytes of records, the oldest record of the owner that holds the most
bytes is dropped, so one owner filling the store evicts its own records, never another's (the
records of one process that restarts are gone anyway).
"""

from __future__ import annotations

from gateway.clock import Clock

CAPACITY = 256 * 1_048_576


class MemoryResponses:
    def __init__(self, clock: Clock, capacity: int = CAPACITY) -> None:
        self._clock = clock
        self._capacity = capacity
        self._size = 0
        # owner → response id → (record, expiry), each owner's oldest first
        self._owners: dict[str, dict[str, tuple[bytes, float]]] = {}
        self._held: dict[str, int] = {}  # owner → bytes of its records

    async def put(self, owner: str, response_id: str, record: bytes, ttl: float) -> None:
        self._drop(owner, response_id)
        self._owners.setdefault(owner, {})[response_id] = (record, self._clock.time() + ttl)
        self._held[owner] = self._held.get(owner, 0) + len(record)
        self._size += len(record)
        while self._size > self._capacity and self._owners:
            heaviest = max(self._held, key=self._held.__getitem__)
            self._drop(heaviest, next(iter(self._owners[heaviest])))

    async def get(self, owner: str, response_id: str) -> bytes | None:
        found = self._owners.get(owner, {}).get(response_id)
        if found is None:
            return None
        if found[1] <= self._clock.time():
            self._drop(owner, response_id)
            return None
        return found[0]

    async def delete(self, owner: str, response_id: str) -> bool:
        return await self.get(owner, response_id) is not None and self._drop(owner, response_id)

    def _drop(self, owner: str, response_id: str) -> bool:
        records = self._owners.get(owner)
        found = records.pop(response_id, None) if records is not None else None
        if found is None:
            return False
        self._size -= len(found[0])
        self._held[owner] -= len(found[0])
        if not records:
            del self._owners[owner], self._held[owner]
        return True

    async def close(self) -> None:
        return None
