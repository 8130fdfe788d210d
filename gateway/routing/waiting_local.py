"""The waiting room of one process (``store.url: memory://``): per model, a fair queue
(``limits.fairqueue``) and a pump that hands each slot this process frees to its head.

A slot is the balancer's own count against ``max_concurrency``: the pump counts it
(``Balancer.acquire``) before its waiter resumes, so a newcomer cannot take it, and the waiter
returns it counted. A waiter that leaves after being granted gives its slot back.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.config.schema import Plan, Scheduling, Upstream
from gateway.limits.fairqueue import Entry, FairQueue
from gateway.metrics import Metrics
from gateway.routing.balancer import Balancer
from gateway.routing.chain import Chain
from gateway.routing.waiting import Room, Tick


@dataclass(slots=True, eq=False)
class Waiter:
    chain: Chain
    plan: Plan
    granted: asyncio.Future[Upstream]
    since: float


class ModelQueue:
    """The requests of this process waiting for one model, and the pump that serves them."""

    def __init__(self) -> None:
        self.fair: FairQueue[Waiter] = FairQueue()
        self.wake = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None


class LocalRoom(Room):
    """Weighted fair queues of full models, served by the slots this process frees."""

    def __init__(
        self, clock: Clock, metrics: Metrics, scheduling: Scheduling, balancer: Balancer
    ) -> None:
        super().__init__(clock, metrics, scheduling)
        self.balancer = balancer
        self.queues: dict[str, ModelQueue] = {}  # by model, once one waited

    def busy(self, model: str) -> bool:
        """Requests wait for ``model``: a newcomer joins them rather than passing them."""
        queue = self.queues.get(model)
        return queue is not None and len(queue.fair) > 0

    async def wait(self, chain: Chain, owner: str, plan: Plan, tick: Tick | None) -> Upstream:
        """A slot of ``chain``'s model, counted, after a wait in its queue."""
        name = chain.route.name
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = ModelQueue()
        self.refuse_if_full(name, owner, plan, len(queue.fair))
        since = self.clock.monotonic()
        waiter = Waiter(chain, plan, asyncio.get_running_loop().create_future(), since)
        entry = queue.fair.push(owner, plan.share, plan.priority, waiter)
        self.joined(owner, plan, 1)
        if queue.pump is None or queue.pump.done():
            queue.pump = asyncio.create_task(self._pump(queue, name))
        try:
            return await self.until(waiter.granted, since, tick)
        except TimeoutError:
            self._abandon(queue, entry)
            raise self.timed_out(name, self.scheduling.max_wait, len(queue.fair)) from None
        except BaseException:
            self._abandon(queue, entry)
            raise
        finally:
            self.joined(owner, plan, -1)
            self.left(plan, since)

    def _abandon(self, queue: ModelQueue, entry: Entry[Waiter]) -> None:
        """The waiter left (timeout, client gone): its place, or the slot it was given, back."""
        waiter = entry.item
        queue.fair.remove(entry)
        if waiter.granted.done() and not waiter.granted.cancelled():
            self.balancer.release(waiter.granted.result())
        else:
            waiter.granted.cancel()

    def freed(self) -> None:
        """A slot of this process freed: every queue looks again."""
        for queue in self.queues.values():
            if len(queue.fair):
                queue.wake.set()

    async def _pump(self, queue: ModelQueue, model: str) -> None:
        """Hands each slot that frees to the head of ``queue``, while anyone waits."""
        while (entry := queue.fair.peek()) is not None:
            queue.wake.clear()
            chain = entry.item.chain
            upstream = chain.first()
            if upstream is None:
                await queue.wake.wait()
                continue
            self.balancer.acquire(upstream)  # the pick is the request's first attempt
            queue.fair.pop()
            self.served(model, entry.item.plan)
            entry.item.granted.set_result(upstream)

    async def close(self) -> None:
        pumps = [q.pump for q in self.queues.values() if q.pump is not None]
        for task in pumps:
            task.cancel()
        for task in pumps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
