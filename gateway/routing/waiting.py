"""What every waiting room of full models shares (``routing.waiting_local`` in one process,
``routing.waiting_shared`` across the processes of a store): the bounds of the process
(``scheduling.max_queue``, a plan's ``max_queued``) and their 429 ``queue_full``, the 503
``queue_timeout``, a ``Retry-After`` from the rate at which each model's slots have been
going to its waiting requests, the wait itself (with ``: queued`` ticks for a stream), and the
queue metrics.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.clock import Clock
from gateway.config.schema import Plan, Scheduling
from gateway.errors import TooManyRequests, UpstreamUnavailable
from gateway.metrics import Metrics

T = TypeVar("T")
Tick = Callable[[], Awaitable[None]]

TICK = 5.0  # seconds between ``: queued`` comments to a waiting stream
FIRST_TICK = 1.0  # the first comes after this, so that a short wait sends none


class Rate:
    """Slots a model's waiting requests got per second, smoothed."""

    __slots__ = ("last", "per_second", "shared")

    def __init__(self) -> None:
        self.per_second = 0.0
        self.last = 0.0
        self.shared = 0.0  # the store's figure for every process (a shared queue), if known

    def granted(self, now: float) -> None:
        if self.last:
            gap = max(now - self.last, 1e-3)
            p = self.per_second
            self.per_second = 0.8 * p + 0.2 / gap if p else 1.0 / gap
        self.last = now

    def retry_after(self, ahead: int, ceiling: float) -> int:
        """Seconds until about ``ahead`` more slots have gone, at the recent rate."""
        per_second = self.shared or self.per_second
        if per_second <= 0.0:
            return max(1, math.ceil(ceiling))
        return max(1, math.ceil(min((ahead + 1) / per_second, ceiling)))


class Room:
    """Counts of this process's waiting requests and the answers every room gives."""

    def __init__(self, clock: Clock, metrics: Metrics, scheduling: Scheduling) -> None:
        self.clock, self.metrics, self.scheduling = clock, metrics, scheduling
        self.waiting = 0
        self._by_owner: dict[str, int] = {}
        self._rates: dict[str, Rate] = {}

    def rate(self, model: str) -> Rate:
        rate = self._rates.get(model)
        if rate is None:
            rate = self._rates[model] = Rate()
        return rate

    def refuse_if_full(self, model: str, owner: str, plan: Plan, ahead: int) -> None:
        """429 ``queue_full`` if the owner has its plan's ``max_queued`` waiting in this process
        or the process ``scheduling.max_queue``."""
        mine = self._by_owner.get(owner, 0)
        if plan.max_queued is not None and mine >= plan.max_queued:
            raise self.full(model, plan, mine, owner_bound=True)
        if self.waiting >= self.scheduling.max_queue:
            raise self.full(model, plan, ahead, owner_bound=False)

    def full(self, model: str, plan: Plan, count: int, owner_bound: bool) -> TooManyRequests:
        after = self.rate(model).retry_after(count, self.scheduling.max_wait)
        self.metrics.queue_refused.labels(plan.name, "owner" if owner_bound else "gateway").inc()
        what = (
            f"your {count} requests already waiting for busy upstreams (plan limit)"
            if owner_bound
            else f"the gateway's queue of {self.waiting} waiting requests"
        )
        return TooManyRequests(
            f"Model '{model}' is at capacity and {what} is full; retry after {after} s.",
            code="queue_full",
            retry_after=after,
        )

    def timed_out(self, model: str, waited: float, ahead: int) -> UpstreamUnavailable:
        after = self.rate(model).retry_after(ahead, self.scheduling.max_wait)
        return UpstreamUnavailable(
            f"Every upstream of model '{model}' stayed busy for the {waited:g} s this "
            f"request waited; retry after {after} s.",
            code="queue_timeout",
            status=503,
            retry_after=after,
        )

    def joined(self, owner: str, plan: Plan, delta: int) -> None:
        self.waiting += delta
        left = self._by_owner.get(owner, 0) + delta
        if left > 0:
            self._by_owner[owner] = left
        else:
            self._by_owner.pop(owner, None)
        self.metrics.queue_length.labels(plan.name).inc(delta)

    def served(self, model: str, plan: Plan) -> None:
        """A slot went to one of this process's waiting requests."""
        self.rate(model).granted(self.clock.monotonic())
        self.metrics.queue_grants.labels(plan.name, share_label(plan.share)).inc()

    def left(self, plan: Plan, since: float) -> float:
        """A request stopped waiting (served or not): how long it waited, observed."""
        waited = self.clock.monotonic() - since
        self.metrics.queue_wait.labels(plan.name).observe(waited)
        return waited

    async def until(self, granted: asyncio.Future[T], since: float, tick: Tick | None) -> T:
        """``granted``'s result, within ``scheduling.max_wait`` of ``since`` (else
        ``TimeoutError``); ``tick`` is awaited after ``FIRST_TICK`` s, then every ``TICK`` s."""
        deadline = since + self.scheduling.max_wait
        pause = FIRST_TICK
        while True:
            if granted.done():
                return granted.result()
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise TimeoutError
            step = min(left, pause) if tick is not None else left
            await asyncio.wait((granted,), timeout=step)
            if not granted.done() and tick is not None and deadline > self.clock.monotonic():
                await tick()
                pause = TICK


def share_label(share: float) -> str:
    """A plan's share as a metric label: ``1``, ``4``, ``0.5``."""
    return f"{share:g}"
