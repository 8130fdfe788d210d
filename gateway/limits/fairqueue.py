"""Weighted fair queuing by owner: the order in which requests waiting for a full model get the
slots that free up. Pure: data in, data out; no I/O, no clock.

Each owner has a virtual finish time. A request that joins gets the tag
``finish = max(V, owner's last finish) + 1 / share`` and the owner's last finish becomes it;
``V``, the queue's virtual time, is the tag of the last request served (self-clocked fair
queuing). Requests leave in the order (higher ``priority`` first, then smaller tag, then
arrival), so with every owner backlogged each gets slots in proportion to its ``share``, an
owner gets no credit for the time it was idle (its tags start at ``V``), and an owner's own
requests keep their arrival order (its tags grow).

A request that leaves the queue before its turn (its client went, or it waited too long) is
removed at once: it stops counting against its owner's ``max_queued`` and the queue's length,
and if it was its owner's last it hands the owner's virtual time back. When the queue empties,
everything is forgotten (the virtual time starts at 0 again). The store's queue shared by every
gateway process (``store/capacity_queue.lua``) keeps exactly this order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class Entry(Generic[T]):
    """One waiting request: its place in the order and what the caller keeps with it."""

    owner: str
    share: float
    priority: int
    finish: float
    seq: int
    item: T
    queued: bool = field(default=True)

    def key(self) -> tuple[int, float, int]:
        return (-self.priority, self.finish, self.seq)

    def __lt__(self, other: Entry[T]) -> bool:
        return self.key() < other.key()


class FairQueue(Generic[T]):
    """Waiting requests of one model, served in weighted fair order by owner."""

    def __init__(self) -> None:
        self._heap: list[Entry[T]] = []
        self._last: dict[str, float] = {}  # owner → finish tag of its latest request
        self._count: dict[str, int] = {}  # owner → requests queued
        self._size = 0
        self._seq = 0
        self.vtime = 0.0

    def __len__(self) -> int:
        return self._size

    def queued(self, owner: str) -> int:
        """Requests of ``owner`` waiting now."""
        return self._count.get(owner, 0)

    def push(self, owner: str, share: float, priority: int, item: T) -> Entry[T]:
        """Queue a request of ``owner`` (``share`` > 0); the entry is the handle to remove it."""
        finish = max(self.vtime, self._last.get(owner, 0.0)) + 1.0 / share
        self._last[owner] = finish
        if len(self._last) > 1024 + 4 * len(self._count):
            self._forget()
        self._seq += 1
        entry = Entry(owner, share, priority, finish, self._seq, item)
        heapq.heappush(self._heap, entry)
        self._count[owner] = self._count.get(owner, 0) + 1
        self._size += 1
        return entry

    def peek(self) -> Entry[T] | None:
        """The request whose turn is next, left in the queue."""
        heap = self._heap
        while heap and not heap[0].queued:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def pop(self) -> Entry[T] | None:
        """The request whose turn is next, taken out; the virtual time moves to its tag."""
        entry = self.peek()
        if entry is None:
            return None
        heapq.heappop(self._heap)
        self.vtime = max(self.vtime, entry.finish)
        self._leave(entry)
        return entry

    def remove(self, entry: Entry[T]) -> bool:
        """Take a request out before its turn; False if it had left already."""
        if not entry.queued:
            return False
        self._leave(entry)
        if self._last.get(entry.owner) == entry.finish:  # its owner's latest: hand the time back
            self._last[entry.owner] = entry.finish - 1.0 / entry.share
        if len(self._heap) > 64 and len(self._heap) > 2 * self._size:
            self._heap = [e for e in self._heap if e.queued]
            heapq.heapify(self._heap)
        return True

    def ahead(self, entry: Entry[T]) -> int:
        """Requests that will be served before ``entry`` (linear: for refusals, not per turn)."""
        key = entry.key()
        return sum(1 for e in self._heap if e.queued and e.key() < key)

    def _forget(self) -> None:
        """Drop owners with nothing queued whose tags the virtual time has passed."""
        v, count = self.vtime, self._count
        self._last = {o: f for o, f in self._last.items() if o in count or f > v}

    def _leave(self, entry: Entry[T]) -> None:
        entry.queued = False
        self._size -= 1
        if not self._size:  # nobody waits: no credit or debt is left to remember
            self._heap.clear()
            self._last.clear()
            self._count.clear()
            self.vtime = 0.0
            return
        left = self._count[entry.owner] - 1
        if left:
            self._count[entry.owner] = left
        else:
            del self._count[entry.owner]
            if self._last.get(entry.owner, 0.0) <= self.vtime:  # no credit left to remember
                self._last.pop(entry.owner, None)
