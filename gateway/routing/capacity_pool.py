"""This process's idle leases of capped upstreams with room to spare (``routing.capacity``'s
pool): a lease its request freed, kept for its next request to the same upstream, which then
takes its slot with no store call.

A lease is kept only while the store last said, in the reply that gave this process one of the
upstream's leases, that the upstream had room to spare (a quarter of its cap, and 2, still free
after it, idle leases of every process counted as taken) and that no request anywhere waited
for it; and only while this process hears the store's notices (``store.capacity.Wanted``). The
first request that starts to wait for the upstream, in any process, publishes its name: the
pool gives that upstream's idle leases back at once (the released slots go to the head of the
queue in the same store call) and keeps none until a later reply says there is room again. A
reply to a call made before a notice or before the subscription came back does not count.

Idle leases count toward the cap, so the cap stays exact. At each renewal (every second), the
leases idle since the last one go back (``trim``), and the store is asked again whether each
upstream still has room (``checks``); its word lasts ``ROOM_SECONDS``: past it without
another, the idle leases go back and the next request asks the store (a notice missed by a
subscription that failed silently costs a waiting request a renewal's period at most).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.clock import Clock
from gateway.routing.balancer import Balancer

ROOM_SECONDS = 2.5  # how long the store's "room to spare" is believed without another word


class Pool:
    """Which upstreams' freed leases are kept (``roomy``), and the idle leases' comings and
    goings; the leases themselves are the capacity service's ``held`` lists (busy and idle:
    idle = held - the balancer's in-flight count)."""

    def __init__(
        self,
        balancer: Balancer,
        clock: Clock,
        held: dict[str, list[str]],
        give: Callable[[str, str], None],
    ) -> None:
        self.balancer, self.clock, self.held, self._give = balancer, clock, held, give
        self.roomy: dict[str, float] = {}  # upstream → until when its freed leases are kept
        self._caps: dict[str, int] = {}  # upstream → its cap, as the store was last asked
        self.seq: int | None = None  # None: not hearing the store's notices
        self._count = 0
        self._up_at = 0
        self._noticed: dict[str, int] = {}  # upstream → seq of its last notice
        self._low: dict[str, int] = {}  # upstream → fewest idle since the last trim

    def reuse(self, name: str) -> bool:
        """Take one of ``name``'s idle leases for a request (the caller counts it with
        ``Balancer.acquire`` at once); False when none is idle."""
        idle = len(self.held[name]) - self.balancer.state(name).in_flight - 1
        if idle < 0:
            return False
        if idle < self._low.get(name, idle + 1):
            self._low[name] = idle
        return True

    def room(self, name: str, cap: int, seq: int | None) -> None:
        """The store's reply to a call made at ``seq`` (``self.seq`` then) said ``name`` (of
        ``cap``) has room to spare (a reply that did not: ``revoke``)."""
        if seq is not None and seq >= self._up_at and self._noticed.get(name, 0) <= seq:
            if name not in self.roomy:
                self._low[name] = 0  # nothing has been idle a whole period yet
            self.roomy[name] = self.clock.monotonic() + ROOM_SECONDS
            self._caps[name] = cap

    def checks(self) -> list[tuple[str, int]]:
        """The upstreams whose room to ask the store about again: (name, cap)."""
        return [(name, self._caps[name]) for name in self.roomy]

    def checked(self, checks: list[tuple[str, int]], answers: list[bool], seq: int | None) -> None:
        """The store's answers to ``checks`` (asked at ``seq``)."""
        for (name, cap), roomy in zip(checks, answers, strict=True):
            if roomy:
                self.room(name, cap, seq)
            else:
                self.revoke(name)

    def revoke(self, name: str) -> None:
        """No more keeping ``name``'s leases: the idle ones go back at once."""
        if self.roomy.pop(name, None) is None:
            return
        self._low.pop(name, None)
        held = self.held.get(name)
        if held:
            for _ in range(len(held) - self.balancer.state(name).in_flight):
                self._give(name, held.pop())

    def wanted(self, names: list[str]) -> None:
        """The store's notice: a request started to wait for these upstreams."""
        if self.seq is None:
            return
        self._count += 1
        self.seq = self._count
        for name in names:
            self._noticed[name] = self._count
            self.revoke(name)

    def status(self, up: bool) -> None:
        """The notices' subscription came up (replies to later calls count) or went down
        (nothing is kept: a notice may be missed)."""
        self._count += 1
        if up:
            self.seq = self._up_at = self._count
            return
        self.seq = None
        for name in list(self.roomy):
            self.revoke(name)

    def trim(self) -> None:
        """At each renewal: leases idle since the last go back; an upstream whose room the
        store has not confirmed for ``ROOM_SECONDS`` keeps none."""
        now = self.clock.monotonic()
        for name, until in list(self.roomy.items()):
            if until <= now:
                self.revoke(name)
                continue
            held = self.held.get(name) or []
            idle = len(held) - self.balancer.state(name).in_flight
            spare = min(self._low.get(name, idle), idle)
            for _ in range(spare):
                self._give(name, held.pop())
            self._low[name] = idle - max(spare, 0)

    def close(self) -> None:
        self.roomy.clear()
