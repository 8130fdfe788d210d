"""Choosing an upstream for a request: least in-flight requests per weight, region first,
skipping upstreams that are full or ejected after failures.

Per-process state; an upstream keeps its state across reloads as long as its name stays.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.config.schema import Upstream

BASE_EJECT = 1.0
MAX_EJECT = 60.0


@dataclass(slots=True)
class UpstreamState:
    in_flight: int = 0
    failures: int = 0
    ejected_until: float = 0.0


class Balancer:
    """Tracks in-flight counts and failures of every upstream of this process."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._state: dict[str, UpstreamState] = {}

    def state(self, name: str) -> UpstreamState:
        state = self._state.get(name)
        if state is None:
            state = self._state[name] = UpstreamState()
        return state

    def healthy(self, upstream: Upstream) -> bool:
        return self.state(upstream.name).ejected_until <= self._clock.monotonic()

    def pick(
        self, pool: Iterable[Upstream], exclude: Iterable[str] = (), region: str | None = None
    ) -> Upstream | None:
        """The best upstream of ``pool``, or None if every one is excluded or full.

        Ejected upstreams are passed over while another is usable; when every one is ejected the
        least recently failed is tried anyway (Envoy's "panic" mode), so a one-upstream model is
        not black-holed by one failure.
        """
        pool = [u for u in pool if u.name not in exclude]
        return self._least_loaded(pool, region, self._clock.monotonic()) or self._least_loaded(
            pool, region, float("inf")
        )

    def _least_loaded(
        self, pool: list[Upstream], region: str | None, now: float
    ) -> Upstream | None:
        best: Upstream | None = None
        best_score = (2, 0.0)
        for upstream in pool:
            state = self.state(upstream.name)
            if state.ejected_until > now or state.in_flight >= upstream.max_concurrency:
                continue
            score = (
                0 if region is None or upstream.region == region else 1,
                (state.in_flight + 1) / upstream.weight,
            )
            if score < best_score:
                best, best_score = upstream, score
        return best

    def acquire(self, upstream: Upstream) -> None:
        self.state(upstream.name).in_flight += 1

    def release(self, upstream: Upstream) -> None:
        self.state(upstream.name).in_flight -= 1

    def succeeded(self, upstream: Upstream) -> None:
        state = self.state(upstream.name)
        if state.failures:
            state.failures = 0
            state.ejected_until = 0.0

    def failed(self, upstream: Upstream) -> None:
        """Eject for a cool-down that doubles with each failure in a row (1 s … 60 s)."""
        state = self.state(upstream.name)
        state.failures += 1
        # The exponent is capped: 2 ** 1024 does not fit a float, and 60 s is reached at 2 ** 6.
        cool_down = min(MAX_EJECT, BASE_EJECT * 2 ** min(state.failures - 1, 16))
        state.ejected_until = self._clock.monotonic() + cool_down
