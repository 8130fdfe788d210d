"""Upstream slots and the queue in front of full models.

``first`` is the handler's pick. While nobody waits for the model it is the balancer's pick,
plus, on a shared store, one lease (``store.capacity``) when the upstream has a
``max_concurrency``: the cap then counts every gateway process. An upstream without one costs
nothing more than before.

When every upstream of the model is at its cap, the request waits in the model's fair queue
(``limits.fairqueue``: weighted by the owner's plan ``share``, higher ``priority`` first, FIFO
within an owner) until a slot frees, at most ``scheduling.max_wait``: then 503
``queue_timeout``. An owner past its plan's ``max_queued``, or a gateway past
``scheduling.max_queue`` waiting requests, gets 429 ``queue_full``. Both carry a Retry-After
from the rate at which the model's slots have been freeing. A client that leaves takes its
request out at once.

One pump per waiting model hands freed slots to the head of its queue: a slot this process
frees wakes it at once; on a shared store it also asks the store every ``POLL`` seconds, so a
slot another process frees is found within that. A granted slot is counted (``Balancer.acquire``)
before its waiter resumes, so a newcomer cannot take it; the handler counts it again, so the
waiter hands the pump's count back (``Balancer.handover``) just before.

Leases held are renewed every ``RENEW_SECONDS`` in one store call and released in batches.
Leases are fungible per upstream: when this process's in-flight count to an upstream falls below
the leases it holds, one is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.config.schema import Config, Plan, Scheduling, Upstream
from gateway.errors import TooManyRequests, UpstreamUnavailable
from gateway.limits.fairqueue import Entry, FairQueue
from gateway.metrics import Metrics
from gateway.routing.balancer import Balancer
from gateway.routing.chain import Chain
from gateway.routing.router import ModelRoute
from gateway.store.base import StoreError
from gateway.store.capacity import RENEW_SECONDS, LeaseStore

log = logging.getLogger("gateway.routing")

POLL = 0.005  # seconds between a waiting pump's looks at the shared store
TICK = 5.0  # seconds between ``: queued`` comments to a waiting stream
FIRST_TICK = 1.0


@dataclass(slots=True, eq=False)
class Waiter:
    chain: Chain
    plan: Plan
    granted: asyncio.Future[Upstream]
    since: float


class ModelQueue:
    """The requests of this process waiting for one model, and the pump that serves them."""

    def __init__(self, route: ModelRoute) -> None:
        self.route = route
        self.fair: FairQueue[Waiter] = FairQueue()
        self.wake = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None
        self.rate = 0.0  # slots granted per second, smoothed
        self.last_grant = 0.0

    def granted(self, now: float) -> None:
        if self.last_grant:
            gap = max(now - self.last_grant, 1e-3)
            self.rate = 0.8 * self.rate + 0.2 / gap if self.rate else 1.0 / gap
        self.last_grant = now

    def retry_after(self, ahead: int, ceiling: float) -> int:
        """Seconds until about ``ahead`` more slots have freed, at the recent rate."""
        if self.rate <= 0.0:
            return max(1, math.ceil(ceiling))
        return max(1, math.ceil(min((ahead + 1) / self.rate, ceiling)))


class Capacity:
    """Slots of capped upstreams (leases on a shared store) and the queues of full models."""

    def __init__(
        self,
        balancer: Balancer,
        clock: Clock,
        metrics: Metrics,
        scheduling: Scheduling,
        leases: LeaseStore | None = None,
    ) -> None:
        self.balancer, self.clock, self.metrics = balancer, clock, metrics
        self.scheduling = scheduling
        self.leases = leases
        self._queues: dict[str, ModelQueue] = {}
        self._waiting = 0
        self._by_owner: dict[str, int] = {}
        self._held: dict[str, list[str]] = {}  # upstream → leases this process holds
        self._to_release: list[tuple[str, str]] = []
        self._flush: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._me = uuid.uuid4().hex[:12]
        balancer.on_release = self._freed

    def configure(self, config: Config) -> None:
        """The scheduling settings, and a series of every queue metric for each plan (at 0,
        so that a dashboard shows a plan that never waited)."""
        self.scheduling = config.scheduling
        m = self.metrics
        for plan in config.plans:
            m.queue_length.labels(plan)
            m.queue_wait.labels(plan)
            m.queue_grants.labels(plan)
            for bound in ("owner", "gateway"):
                m.queue_refused.labels(plan, bound)

    # -- the request path -------------------------------------------------------------------
    async def first(
        self,
        chain: Chain,
        owner: str,
        plan: Callable[[], Awaitable[Plan]],
        tick: Callable[[], Awaitable[None]] | None = None,
    ) -> Upstream | None:
        """The upstream for a request's first attempt, waiting in the model's queue when every
        one is full; None (today's 503) for a model with fallbacks or without any cap."""
        route = chain.route
        queue = self._queues.get(route.name)
        if queue is None or not len(queue.fair):
            upstream = chain.first()
            if upstream is not None:
                if self.leases is None or upstream.max_concurrency is None:
                    return upstream
                taken = await self._leased(chain, upstream)
                if taken is not None:
                    return taken
                chain.tried.pop()
                chain.attempts -= 1
        if route.fallbacks or not any(u.max_concurrency for u in route.upstreams):
            return None
        return await self._wait(chain, owner, await plan(), tick)

    async def _leased(self, chain: Chain, upstream: Upstream) -> Upstream | None:
        """A lease on ``upstream`` or, if it is full everywhere, on another upstream of the
        model with a slot (the chain's attempt renamed to it)."""
        pool = [upstream, *(u for u in chain.model.upstreams if u is not upstream)]
        taken = await self._lease(pool)
        if taken is not None and taken is not upstream:
            chain.tried[-1] = taken.name
        return taken

    async def _lease(self, pool: list[Upstream]) -> Upstream | None:
        """One store call: a slot on the first upstream of ``pool`` with one free, held."""
        assert self.leases is not None
        capped = [u for u in pool if u.max_concurrency is not None]
        if len(capped) < len(pool):  # an uncapped upstream is never full
            return next(u for u in pool if u.max_concurrency is None)
        lease = f"{self._me}:{next(self._ids)}"
        try:
            index = await self.leases.acquire(
                [(u.name, u.max_concurrency or 0) for u in capped], lease
            )
        except StoreError as exc:  # the store is down: each process keeps its own count
            log.warning("capacity lease failed", extra={"reason": str(exc)})
            return pool[0]
        if index < 0:
            return None
        self._held.setdefault(capped[index].name, []).append(lease)
        self._start_renewer()
        return capped[index]

    async def _wait(
        self,
        chain: Chain,
        owner: str,
        plan: Plan,
        tick: Callable[[], Awaitable[None]] | None,
    ) -> Upstream:
        route = chain.route
        queue = self._queues.get(route.name)
        if queue is None:
            queue = self._queues[route.name] = ModelQueue(route)
        self._refuse_if_full(queue, owner, plan)
        loop = asyncio.get_running_loop()
        waiter = Waiter(chain, plan, loop.create_future(), self.clock.monotonic())
        entry = queue.fair.push(owner, plan.share, plan.priority, waiter)
        self._joined(owner, plan, 1)
        if queue.pump is None or queue.pump.done():
            queue.pump = asyncio.create_task(self._pump(queue))
        try:
            upstream = await self._granted(waiter, tick)
        except TimeoutError:
            self._abandon(queue, entry)
            raise self.timed_out(route, self.scheduling.max_wait) from None
        except BaseException:
            self._abandon(queue, entry)
            raise
        finally:
            self._joined(owner, plan, -1)
            self.metrics.queue_wait.labels(plan.name).observe(self.clock.monotonic() - waiter.since)
        self.balancer.handover(upstream)  # the handler counts it again at once
        return upstream

    async def _granted(
        self, waiter: Waiter, tick: Callable[[], Awaitable[None]] | None
    ) -> Upstream:
        deadline = waiter.since + self.scheduling.max_wait
        pause = FIRST_TICK
        while True:
            if waiter.granted.done():
                return waiter.granted.result()
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise TimeoutError
            step = min(left, pause) if tick is not None else left
            await asyncio.wait((waiter.granted,), timeout=step)
            if (
                not waiter.granted.done()
                and tick is not None
                and deadline - self.clock.monotonic() > 0
            ):
                await tick()
                pause = TICK

    def _abandon(self, queue: ModelQueue, entry: Entry[Waiter]) -> None:
        """The waiter left (timeout, client gone): its place, or the slot it was given, back."""
        waiter = entry.item
        queue.fair.remove(entry)
        if waiter.granted.done() and not waiter.granted.cancelled():
            self.balancer.release(waiter.granted.result())
        else:
            waiter.granted.cancel()

    def timed_out(self, route: ModelRoute, waited: float) -> UpstreamUnavailable:
        queue = self._queues.get(route.name)
        after = queue.retry_after(len(queue.fair), self.scheduling.max_wait) if queue else 1
        return UpstreamUnavailable(
            f"Every upstream of model '{route.name}' stayed busy for the {waited:g} s this "
            f"request waited; retry after {after} s.",
            code="queue_timeout",
            status=503,
            retry_after=after,
        )

    def _refuse_if_full(self, queue: ModelQueue, owner: str, plan: Plan) -> None:
        mine = self._by_owner.get(owner, 0)
        over_owner = plan.max_queued is not None and mine >= plan.max_queued
        if not over_owner and self._waiting < self.scheduling.max_queue:
            return
        ahead = mine if over_owner else len(queue.fair)
        after = queue.retry_after(ahead, self.scheduling.max_wait)
        self.metrics.queue_refused.labels(plan.name, "owner" if over_owner else "gateway").inc()
        what = (
            f"your {mine} requests already waiting for busy upstreams (plan limit)"
            if over_owner
            else f"the gateway's queue of {self._waiting} waiting requests"
        )
        raise TooManyRequests(
            f"Model '{queue.route.name}' is at capacity and {what} is full; retry after {after} s.",
            code="queue_full",
            retry_after=after,
        )

    def _joined(self, owner: str, plan: Plan, delta: int) -> None:
        self._waiting += delta
        left = self._by_owner.get(owner, 0) + delta
        if left > 0:
            self._by_owner[owner] = left
        else:
            self._by_owner.pop(owner, None)
        self.metrics.queue_length.labels(plan.name).inc(delta)

    # -- the pump ---------------------------------------------------------------------------
    async def _pump(self, queue: ModelQueue) -> None:
        """Hands each slot that frees to the head of ``queue``, while anyone waits."""
        poll = POLL if self.leases is not None else None
        while (entry := queue.fair.peek()) is not None:
            queue.wake.clear()
            upstream = await self._slot(entry.item.chain)
            if upstream is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.wake.wait(), poll)
                continue
            if not entry.queued or entry.item.granted.done():  # it left while we asked
                self.balancer.release(upstream)
                continue
            queue.fair.pop()
            queue.granted(self.clock.monotonic())
            self.metrics.queue_grants.labels(entry.item.plan.name).inc()
            entry.item.granted.set_result(upstream)

    async def _slot(self, chain: Chain) -> Upstream | None:
        """A free slot for ``chain``'s request, counted in the balancer, or None."""
        upstream = chain.first()
        if upstream is None:
            return None
        chain.tried.pop()  # the pick is the pump's; the request's own attempt comes later
        chain.attempts -= 1
        if self.leases is not None and upstream.max_concurrency is not None:
            pool = [upstream, *(u for u in chain.model.upstreams if u is not upstream)]
            taken = await self._lease(pool)
            if taken is None:
                return None
            upstream = taken
        self.balancer.acquire(upstream)
        chain.tried.append(upstream.name)
        chain.attempts += 1
        return upstream

    # -- slots freed, leases renewed --------------------------------------------------------
    def _freed(self, upstream: Upstream) -> None:
        """``Balancer.release``'s hook: give a lease back if one is spare, wake the queues."""
        held = self._held.get(upstream.name)
        if held and len(held) > self.balancer.state(upstream.name).in_flight:
            self._to_release.append((upstream.name, held.pop()))
            if self._flush is None or self._flush.done():
                self._flush = asyncio.get_running_loop().create_task(self._release())
        for queue in self._queues.values():
            if len(queue.fair):
                queue.wake.set()

    async def _release(self) -> None:
        await asyncio.sleep(0)  # the releases of this turn of the loop go in one call
        batch, self._to_release = self._to_release, []
        if batch and self.leases is not None:
            try:
                await self.leases.release(batch)
            except StoreError as exc:  # they expire within a lease time
                log.warning("capacity release failed", extra={"reason": str(exc)})

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while any(self._held.values()):
            await asyncio.sleep(RENEW_SECONDS)
            leases = [(name, lease) for name, held in self._held.items() for lease in held]
            if leases and self.leases is not None:
                try:
                    await self.leases.renew(leases)
                except StoreError as exc:
                    log.warning("capacity renewal failed", extra={"reason": str(exc)})

    async def close(self) -> None:
        tasks = [self._renewer, self._flush, *(q.pump for q in self._queues.values())]
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.leases is not None:
            held = [(name, lease) for name, leases in self._held.items() for lease in leases]
            with contextlib.suppress(StoreError):
                await self.leases.release(held)
            await self.leases.close()
