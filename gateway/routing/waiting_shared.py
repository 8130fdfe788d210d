"""The waiting room shared by every gateway process of a store (``store.capacity.WaitRoom``):
each model's queue lives in the store, in weighted fair order by owner, and the store itself
hands a released slot to the head of the queue, in the call that released it.

This side of it: a waiting request is a ticket (``<process>:<n>``) in the model's queue; its
grant is a lease with the ticket's id, of which the store tells this process at once over its
subscription (``GrantListener``). While any ticket of the process waits, a sweeper vouches for
them every ``SWEEP_SECONDS`` (a dead process's tickets expire in a lease time), hands on slots
freed by expiry, and reads each ticket's fate, so that a grant missed by the subscription is
found within a sweep. A ticket that leaves (timeout, client gone) is taken out of the store,
or, if it had been granted, its slot is passed on to the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.clock import Clock
from gateway.config.schema import Plan, Scheduling
from gateway.metrics import Metrics
from gateway.routing.chain import Chain
from gateway.routing.waiting import Room, Tick
from gateway.store.base import StoreError
from gateway.store.capacity import SWEEP_SECONDS, GrantListener, WaitRoom

log = logging.getLogger("gateway.routing")

GONE = "-"
READY_SECONDS = 1.0  # the longest a first waiter waits for the subscription (a sweep covers)


class Gone(Exception):
    """The store no longer knows the ticket (this process failed to vouch for it in time)."""


@dataclass(slots=True, eq=False)
class Ticket:
    id: str
    model: str
    plan: Plan
    granted: asyncio.Future[str]
    joined: bool = False
    ahead: int = 0
    spec: list[tuple[str, int]] = field(default_factory=list)


class SharedRoom(Room):
    def __init__(
        self,
        clock: Clock,
        metrics: Metrics,
        scheduling: Scheduling,
        store: WaitRoom,
        process: str,
        give_back: Callable[[str, str], None],
        subscription: Callable[[], GrantListener],
    ) -> None:
        super().__init__(clock, metrics, scheduling)
        self.store, self.process, self.give_back = store, process, give_back
        self._subscription = subscription  # the process's one (``routing.capacity``'s)
        self._tickets: dict[str, Ticket] = {}
        self._ids = itertools.count()
        self._listener: GrantListener | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._leaving: set[asyncio.Task[None]] = set()

    async def wait(
        self,
        chain: Chain,
        owner: str,
        plan: Plan,
        tick: Tick | None,
        spec: list[tuple[str, int]],
    ) -> tuple[str, str]:
        """(upstream, lease): a slot of ``chain``'s model, held as a lease in the store, after
        a wait in its queue. ``spec``: the model's upstreams and their caps."""
        model = chain.route.name
        self.refuse_if_full(model, owner, plan, self.waiting)
        await self._listening()
        since = self.clock.monotonic()
        loop = asyncio.get_running_loop()
        ticket = Ticket(f"{self.process}:{next(self._ids)}", model, plan, loop.create_future())
        ticket.spec = spec
        self._tickets[ticket.id] = ticket
        self.joined(owner, plan, 1)
        try:
            while True:
                await self._join(ticket, owner)
                try:
                    upstream = await self.until(ticket.granted, since, tick)
                    break
                except Gone:
                    ticket.granted, ticket.joined = loop.create_future(), False
        except TimeoutError:
            self._leave(ticket)
            raise self.timed_out(model, self.scheduling.max_wait, ticket.ahead) from None
        except BaseException:
            self._leave(ticket)
            raise
        finally:
            self._tickets.pop(ticket.id, None)
            self.joined(owner, plan, -1)
            self.left(plan, since)
        self.served(model, plan)
        return upstream, ticket.id

    async def _join(self, ticket: Ticket, owner: str) -> None:
        plan = ticket.plan
        status, value, rate = await self.store.join(
            ticket.model,
            ticket.id,
            owner,
            plan.share,
            plan.priority,
            plan.max_queued,
            ticket.spec,
        )
        if rate > 0:
            self.rate(ticket.model).shared = rate
        if status < 0:
            assert isinstance(value, int)
            raise self.full(ticket.model, plan, value, owner_bound=True)
        ticket.joined = True
        if status > 0:
            self.deliver(ticket.id, str(value))
        else:
            ticket.ahead = int(value)
            self._start_sweeper()

    def deliver(self, ticket_id: str, upstream: str) -> None:
        """A grant (from the subscription, a join's reply or a sweep): its waiter resumes. A
        grant to a ticket that left is the store's to pass on (``leave`` finds it)."""
        ticket = self._tickets.get(ticket_id)
        if ticket is not None and not ticket.granted.done():
            ticket.granted.set_result(upstream)

    def _leave(self, ticket: Ticket) -> None:
        self._tickets.pop(ticket.id, None)
        granted = ticket.granted
        if granted.done() and not granted.cancelled() and granted.exception() is None:
            self.give_back(granted.result(), ticket.id)  # granted, never used: passed on
            return
        granted.cancel()
        task = asyncio.get_running_loop().create_task(self._left(ticket))
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def _left(self, ticket: Ticket) -> None:
        try:
            await self.store.leave(ticket.model, ticket.id)
        except StoreError as exc:  # it expires within a lease time
            log.warning("capacity queue leave failed", extra={"reason": str(exc)})

    def missed(self) -> None:
        """Grants may have been missed (the subscription came back): sweep at once."""
        self._kick.set()

    async def _listening(self) -> None:
        """The subscription, started by the first waiter if not yet (which gives it a moment:
        a grant published before it listens is found by the next sweep instead)."""
        if self._listener is None:
            self._listener = self._subscription()
            await self._listener.ready(READY_SECONDS)

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while self._tickets:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_SECONDS):
                    await self._kick.wait()
            self._kick.clear()
            by_model: dict[str, list[Ticket]] = {}
            for ticket in self._tickets.values():
                if ticket.joined and not ticket.granted.done():
                    by_model.setdefault(ticket.model, []).append(ticket)
            for model, tickets in by_model.items():
                try:
                    fates = await self.store.sweep(model, [t.id for t in tickets])
                except StoreError as exc:
                    log.warning("capacity queue sweep failed", extra={"reason": str(exc)})
                    continue
                for ticket, fate in zip(tickets, fates, strict=False):
                    if fate == GONE and not ticket.granted.done():
                        ticket.granted.set_exception(Gone())
                    elif fate and fate != GONE:
                        self.deliver(ticket.id, fate)

    async def close(self) -> None:
        """The leaves under way finish (briefly), the sweeper stops (the subscription is the
        capacity service's to close)."""
        if self._leaving:
            await asyncio.wait(self._leaving, timeout=1.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
