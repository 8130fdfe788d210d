"""What a process knows of one upstream: its requests in flight, failures, the worker's signals,
the other processes' requests as told, and the choices not counted yet. Pure."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gateway.config.schema import Upstream

# A choice of a capped upstream is counted as load until its request is counted
# (``Balancer.acquire``) or this many seconds have passed (its request went elsewhere, or waits).
CHOSEN_FOR = 1.0


@dataclass(slots=True)
class UpstreamState:
    in_flight: int = 0
    failures: int = 0
    ejected_until: float = 0.0
    # The worker's own signals (``routing.signals``), believed until ``signals_until``.
    waiting: float = 0.0
    running: float = 0.0
    cache: float = 0.0  # KV cache in use, 0 to 1
    signals_until: float = 0.0
    # The other gateway processes' requests in flight here, as they last told it
    # (``routing.loads``); what the worker held beyond them and this process's when last read
    # (requests from elsewhere); and the two together, the load others put here.
    told: float = 0.0
    beyond: float = 0.0
    # This process's placements here the others have not been told of yet (while sharing).
    unknown: int = 0
    # Chosen among others (a pool of more than one): only such an upstream's load decides
    # anything, so only its count is told (an upstream alone in every pool costs no message).
    contested: bool = False
    others: float = 0.0

    # When this process chose the upstream for requests not counted yet: under a cap on a
    # shared store a lease's round trip comes between the choice and the count, and choices
    # made meanwhile must see the ones before (``routing.capacity``).
    chosen: deque[float] | None = None

    def load(self, now: float) -> float:
        """Requests the worker holds, as far as this process knows (affinity's bound counts
        requests: the cache share, a tie-breaker of least_loaded, would widen it)."""
        pending = self.pending(now) if self.chosen else 0
        if self.signals_until > now:
            return self.in_flight + self.others + pending
        return self.in_flight + self.told + pending

    def choose(self, now: float) -> None:
        if self.chosen is None:
            self.chosen = deque()
        self.chosen.append(now)

    def pending(self, now: float) -> int:
        """Choices not counted yet, the ones older than ``CHOSEN_FOR`` forgotten."""
        chosen = self.chosen
        if not chosen:
            return 0
        while chosen and chosen[0] <= now - CHOSEN_FOR:
            chosen.popleft()
        return len(chosen)

    def counted(self) -> None:
        """A request to the upstream is counted: the oldest choice is no longer pending."""
        if self.chosen:
            self.chosen.popleft()

    def queued(self, now: float) -> bool:
        return self.waiting > 0 and self.signals_until > now


def full(state: UpstreamState, upstream: Upstream) -> bool:
    cap = upstream.max_concurrency
    return cap is not None and state.in_flight >= cap
