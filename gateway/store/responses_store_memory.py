"""Stored Responses in this process (``store.responses_store`` semantics), time from the
injected clock: the ``memory://`` store's, and the reference the Redis one follows.

Bounded: past ``capacity`` bytes of records, the oldest are dropped first (the records of one
process that restarts are gone anyway).
"""

from __future__ import annotations

from gateway.clock import Clock

CAPACITY = 256 * 1_048_576


class MemoryResponses:
    def __init__(self, clock: Clock, capacity: int = CAPACITY) -> None:
        self._clock = clock
        self._capacity = capacity
        self._size = 0
        self._records: dict[tuple[str, str], tuple[bytes, float]] = {}  # oldest first

    async def put(self, owner: str, response_id: str, record: bytes, ttl: float) -> None:
        self._drop((owner, response_id))
        self._records[(owner, response_id)] = (record, self._clock.time() + ttl)
        self._size += len(record)
        while self._size > self._capacity and self._records:
            self._drop(next(iter(self._records)))

    async def get(self, owner: str, response_id: str) -> bytes | None:
        found = self._records.get((owner, response_id))
        if found is None:
            return None
        if found[1] <= self._clock.time():
            self._drop((owner, response_id))
            return None
        return found[0]

    async def delete(self, owner: str, response_id: str) -> bool:
        return await self.get(owner, response_id) is not None and self._drop((owner, response_id))

    def _drop(self, key: tuple[str, str]) -> bool:
        found = self._records.pop(key, None)
        if found is not None:
            self._size -= len(found[0])
        return found is not None

    async def close(self) -> None:
        return None
