"""The fleet's loads: each gateway process tells the others its requests in flight per upstream,
on the store's broadcast, so that every policy's load of an upstream is the fleet's.

Each process bounds what it sees. With only its own requests and the workers' signals (read
every ``routing.signals_interval``), what another process sent since the last read is unseen,
and two processes could crowd one worker between two reads (``bench/routing.py`` found the
busiest worker over ``ceil(load_factor x mean)`` by 2 to 3 in 2.5-8.7 % of its samples). So each
process tells its in-flight counts: the upstreams whose count changed, one ``PUBLISH`` per
batch (at most one per ``INTERVAL`` and one in flight, never awaited by a request; a burst of
changes goes out as the counts at send time), and every count again each
``KEEP`` seconds while any is not zero (a long stream changes nothing for minutes). A receiver
keeps each other process's last told counts and forgets a process not heard from for ``AGE``
seconds (one that stopped). On the request path a change costs a set insertion. While the
store is down nothing is told: the others forget this process after ``AGE``, and its own
placements, never known to them, stay under the untold bound (``Ring.choose``'s ``unknown``),
i.e. each process bounds its own share.

What a receiver does with the counts is the balancer's (``Balancer.told``): an upstream's load is
this process's own in flight (exact) plus the others' last told, plus what the worker's signals
show beyond both (requests from outside these gateways). Affinity's bound on a shared store is
not these counts' but the store's (``routing.placing``), exact: they stand in for it only while
the store fails.

Messages are ``load:`` then JSON ``[origin, full, [upstream, count, upstream, count, …]]``
(``full``: every non-zero count is in it, the others are zero); the store's other broadcasts
never start so.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Protocol

import orjson

from gateway.routing.telling import Teller

PREFIX = "load:"
INTERVAL = 0.01  # seconds at least between two messages of a process
KEEP = 1.0  # every count told again this often while any is not zero
AGE = 3.5 * KEEP  # another process not heard from for this long is forgotten

Unknown = list[tuple[str, int]]  # (upstream, placements the others do not know of yet)


class Counts(Protocol):
    """What the balancer gives: its counts, and what it is told."""

    def count(self, name: str) -> int:
        """This process's requests in flight to ``name``."""

    def held(self) -> Iterable[str]:
        """The upstreams this process has requests in flight to."""

    def told(self, name: str, total: float) -> None:
        """The other processes' requests in flight to ``name`` now total ``total``."""

    def telling(self, names: Iterable[str]) -> Unknown:
        """The placements on ``names`` the others do not know of, now being told."""

    def known(self, told: Unknown) -> None:
        """Those placements reached the other processes."""


class Loads(Teller):
    """This process's in-flight counts to tell, and the other processes' as told."""

    __slots__ = ("_counts", "_now", "_unknown", "changed", "heard", "origin", "others", "told")

    def __init__(self, counts: Counts, now: Callable[[], float], origin: int | None = None) -> None:
        super().__init__(INTERVAL, "loads")
        self._counts = counts
        self._now = now  # monotonic seconds
        self._unknown: Unknown = []  # placements in the message being sent
        self.origin = random.getrandbits(62) if origin is None else origin
        self.changed: set[str] = set()  # upstreams whose count changed since the last message
        self.others: dict[int, dict[str, float]] = {}  # origin → its counts as last told
        self.heard: dict[int, float] = {}  # origin → when last heard (monotonic)
        self.told: dict[str, float] = {}  # upstream → the others' counts, summed

    # -- telling ------------------------------------------------------------------------------
    def change(self, upstream: str) -> None:
        """This process's count for ``upstream`` changed (the request path: no await): told
        ``INTERVAL`` after the last message."""
        changed = self.changed
        if not changed:
            self.soon()
        changed.add(upstream)

    def message(self, every: bool = False) -> str | None:
        """The changed counts (``every``: all non-zero ones too) as one message, none changed
        after; None when there is nothing to tell."""
        names = self.changed
        self.changed = set()
        if every:
            names.update(self._counts.held())
        if not names:
            return None
        counts: list[str | int] = []
        count = self._counts.count
        for name in sorted(names):
            counts += (name, count(name))
        self._unknown = self._counts.telling(names)
        return PREFIX + orjson.dumps([self.origin, every, counts]).decode()

    def more(self) -> bool:
        return bool(self.changed)

    def delivered(self) -> None:
        """The last message reached the store: its placements are known to the others."""
        unknown, self._unknown = self._unknown, []
        self._counts.known(unknown)

    def beat(self) -> None:
        """Every ``KEEP`` seconds: tell every count again (while any is not zero), and forget
        the processes not heard from for ``AGE`` seconds."""
        self.forget(self._now() - AGE)
        if self._publish is not None and self._sending is None and any(self._counts.held()):
            self.emit(self.message(every=True))

    # -- hearing ------------------------------------------------------------------------------
    def receive(self, message: str) -> bool:
        """Learn another process's counts; False if ``message`` is not counts."""
        if not message.startswith(PREFIX):
            return False
        try:
            origin, every, counts = orjson.loads(message[len(PREFIX) :])
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return True
        if origin == self.origin or not isinstance(counts, list):
            return True
        self.learn(origin, bool(every), counts)
        return True

    def learn(self, origin: int, every: bool, counts: list[object]) -> None:
        """``origin``'s counts (``every``: those not given are zero)."""
        self.heard[origin] = self._now()
        held = self.others.setdefault(origin, {})
        given: dict[str, float] = {}
        for i in range(0, len(counts) - 1, 2):
            name, count = counts[i], counts[i + 1]
            if isinstance(name, str) and type(count) is int and count >= 0:
                given[name] = float(count)
        if every:
            given.update({name: 0.0 for name in held if name not in given})
        for name, count in given.items():
            self._add(name, count - held.get(name, 0.0))
            if count:
                held[name] = count
            else:
                held.pop(name, None)

    def forget(self, before: float) -> None:
        """Drop the counts of every process last heard from before ``before``."""
        for origin in [o for o, heard in self.heard.items() if heard < before]:
            del self.heard[origin]
            for name, count in self.others.pop(origin, {}).items():
                self._add(name, -count)

    def _add(self, name: str, delta: float) -> None:
        if delta:
            total = self.told.get(name, 0.0) + delta
            if total > 0.5:
                self.told[name] = total
            else:
                total = 0.0
                self.told.pop(name, None)
            self._counts.told(name, total)
