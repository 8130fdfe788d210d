"""Admission and settlement of requests against every limit of their key and owner (the
limits of docs/api.md).

``admit`` is one store round trip. Its verdict becomes the ``x-ratelimit-*`` headers (and the
``anthropic-ratelimit-*`` ones) or a 429 with a true ``Retry-After``. Settlements are queued and
written in batches by one background task, after the answer is sent; while the store is down
they wait in a bounded buffer (the bound and any loss are metrics) and are written when it is
back. With ``store.on_error: open`` a request is admitted without limits while the store is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from gateway.bounded import remember
from gateway.clock import Clock
from gateway.config.schema import Config, Plan
from gateway.errors import StoreUnavailable, TooManyRequests
from gateway.limits import money
from gateway.limits.deadlines import Deadlines
from gateway.limits.windows import rate_headers
from gateway.periodic import Periodic
from gateway.records import Admission, KeyRecord, Refusal, Settlement, Verdict
from gateway.store.base import LEASE_SECONDS, PRESUMED, Store, StoreError, StoreLost

T = TypeVar("T")
log = logging.getLogger("gateway.limits")

# An owner's plan is cached this long (a change is broadcast to every process at once; the TTL
# bounds a missed broadcast), for at most PLANS_MAX owners.
PLAN_TTL = 300.0
PLANS_MAX = 100_000
BATCH = 256
CATCH_UP = 0.1  # seconds between an admission's tries to write a backlog first
RETRY_MAX = 0.25  # seconds at most between the writer's tries while the store is down
_CODES: dict[Refusal, tuple[str, str]] = {
    "rpm": ("rate_limit_exceeded", "The key's requests-per-minute limit is reached"),
    "concurrency": ("concurrency_limit_exceeded", "The key has too many requests in flight"),
    "daily": ("daily_limit_exceeded", "The key's daily token limit is reached"),
    "monthly": ("monthly_limit_exceeded", "The key's monthly token limit is reached"),
    "tpm": ("tpm_exceeded", "The key's tokens-per-minute limit is reached"),
    "daily_budget": ("budget_exceeded", "The key's daily budget is spent"),
    "monthly_budget": ("budget_exceeded", "The key's monthly budget is spent"),
    "plan_rpm": ("plan_limit_exceeded", "requests-per-minute limit"),
    "plan_monthly": ("plan_limit_exceeded", "monthly token limit"),
    "plan_tpm": ("tpm_exceeded", "tokens-per-minute limit"),
    "plan_budget": ("budget_exceeded", "monthly budget"),
}


def _plan_refusal(limit: str, owner: str, plan: str) -> str:
    """Which plan refused, and how an operator moves the owner to another one."""
    return (
        f"The owner '{owner[:64]}' is on plan '{plan}', whose {limit} is reached "
        f"(an operator can change the plan: gateway owners set {owner[:64]} --plan NAME)"
    )


@dataclass(slots=True)
class Ticket:
    """An admitted request: what to settle when it ends, and the headers it carries."""

    admission: Admission
    verdict: Verdict | None  # None: admitted without the store (on_error: open)
    headers: dict[str, str]
    started: float


@dataclass
class Buffer:
    """Settlements waiting to be written; bounded, counting what it had to drop."""

    limit: int
    items: deque[Settlement] = field(default_factory=deque)
    dropped: int = 0
    writing: int = 0  # taken by the writer, not yet confirmed by the store

    @property
    def pending(self) -> int:
        """Records not yet in the store: waiting, or being written."""
        return len(self.items) + self.writing

    def add(self, item: Settlement) -> None:
        if self.limit <= 0:  # buffer_max: 0 keeps nothing: the record is lost, and counted
            self.dropped += 1
            return
        if len(self.items) >= self.limit:
            self.items.popleft()
            self.dropped += 1
        self.items.append(item)

    def take(self, count: int) -> list[Settlement]:
        items = self.items
        if len(items) <= count:  # (the usual batch: everything waiting)
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(count)]
        self.writing = len(batch)
        return batch

    def put_back(self, batch: list[Settlement]) -> None:
        """Return an unwritten batch to the front, oldest first, within the bound."""
        self.writing = 0
        room = max(0, self.limit - len(self.items))
        self.dropped += max(0, len(batch) - room)
        self.items.extendleft(reversed(batch[:room]))


def _pass_on(waiting: asyncio.Future[Verdict], done: asyncio.Future[Verdict]) -> None:
    if waiting.done():
        return
    if done.cancelled():
        waiting.set_exception(StoreError("store: the admission was cancelled"))
    elif (exc := done.exception()) is not None:
        waiting.set_exception(exc)
    else:
        waiting.set_result(done.result())


class Limiter:
    def __init__(self, store: Store, config: Config, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self._plans: dict[str, tuple[Plan, float]] = {}
        self.buffer = Buffer(config.store.buffer_max)
        self._waking: asyncio.Future[None] | None = None  # the writer's, while nothing waits
        self._in_flight: dict[str, Ticket] = {}
        self._per_key: dict[str, int] = {}  # key id → its tickets in ``_in_flight``
        self._reading: dict[str, int] = {}  # key id → its bodies read before their admission
        self._tasks: list[asyncio.Task[None]] = []
        self._deadlines = Deadlines()  # of the admissions waiting on the store
        self._renewals: Periodic | None = None
        self.on_store_error: Callable[[str], None] = lambda op: None
        self._writing = asyncio.Lock()
        self._behind: float | None = None  # when writing settlements last failed, if it did
        self._recovered = asyncio.Event()  # a write succeeded (the writer need not back off)
        # told of every admission the store decided (alerts watch the thresholds; must not await)
        self.on_admitted: Callable[[KeyRecord, Plan, Verdict], None] = lambda r, p, v: None

    def configure(self, config: Config) -> None:
        self.config = config
        self.buffer.limit = config.store.buffer_max
        self._plans.clear()

    def invalidate(self, message: str) -> None:
        if message == "*":
            self._plans.clear()
        elif message.startswith("plan:"):
            self._plans.pop(message[5:], None)

    def _known_plan(self, owner: str) -> Plan | None:
        """The owner's plan while the cache still holds it (no await: the request path's way)."""
        cached = self._plans.get(owner)
        return cached[0] if cached is not None and cached[1] > self.clock.monotonic() else None

    async def plan_of(self, owner: str) -> Plan:
        known = self._known_plan(owner)
        if known is not None:
            return known
        now = self.clock.monotonic()
        name = budget = None
        try:
            name = await self.store.get_plan(owner)
            budget = await self.store.get_owner_budget(owner)
        except StoreError:
            self.on_store_error("plan")
        plans = self.config.plans
        plan = plans.get(name or self.config.default_plan) or plans[self.config.default_plan]
        if budget is not None:  # the owner's own budget, over the plan's
            plan = replace(plan, monthly_budget_usd=money.usd(budget))
        remember(self._plans, owner, (plan, now + PLAN_TTL), PLANS_MAX)
        return plan

    # -- the request path -------------------------------------------------------------------
    async def admit(
        self,
        request_id: str,
        record: KeyRecord,
        reserve: int,
        anthropic: bool,
        model: str = "",
        reserve_cost: int = 0,
    ) -> Ticket:
        """Admit a request reserving ``reserve`` tokens that may cost ``reserve_cost``
        micro-dollars, against every limit of its key and its owner's plan."""
        plan = self._known_plan(record.owner) or await self.plan_of(record.owner)
        admission = Admission(  # (by position: a keyword call of a record costs a dict per call)
            request_id,
            record.id,  # key_id
            record.owner,
            record.rpm_limit,  # rpm
            record.max_concurrency,  # concurrency
            record.daily_limit,  # daily
            record.monthly_limit,  # monthly
            plan.rpm,  # plan_rpm
            # plan_monthly: a plan that allows overage serves past its monthly tokens (usage
            # reports it apart)
            plan.monthly_tokens if plan.overage == "block" else None,
            reserve,
            record.tpm_limit,  # tpm
            record.daily_budget,
            record.monthly_budget,
            plan.tpm,  # plan_tpm
            money.micros(plan.monthly_budget_usd),  # plan_budget
            reserve_cost,
        )
        if self._behind is not None:
            await self._catch_up()
        try:
            deciding = self.store.admit_now(admission)
            verdict: Verdict | None = (
                deciding.result()  # the memory store: decided already
                if deciding.done()
                else await self._decide(admission, model, deciding)
            )
        except StoreError:
            self.on_store_error("admit")
            if self.config.store.on_error == "closed":
                raise StoreUnavailable(
                    "The gateway's store is unavailable, so limits cannot be checked; "
                    "try again shortly."
                ) from None
            verdict = None
        headers = rate_headers(verdict, anthropic) if verdict is not None else {}
        if verdict is not None and not verdict.admitted:
            assert verdict.refused is not None
            code, what = _CODES[verdict.refused]
            if verdict.refused.startswith("plan_"):
                what = _plan_refusal(what, record.owner, plan.name)
            raise TooManyRequests(
                f"{what}; retry after {verdict.retry_after} s.",
                code=code,
                retry_after=verdict.retry_after,
                headers=headers,
            )
        ticket = Ticket(admission, verdict, headers, self.clock.monotonic())
        self._in_flight[request_id] = ticket
        per_key = self._per_key
        per_key[record.id] = per_key.get(record.id, 0) + 1
        if verdict is not None:
            self.on_admitted(record, plan, verdict)
        return ticket

    def refuse_if_full(self, record: KeyRecord) -> None:
        """429 from the request's head when this process alone holds the key's
        ``maxConcurrency`` requests, admitted (the store would refuse it too: every process's
        count is at least this one's) or having their bodies read (``while_reading``: they are
        in flight, only not counted by the store yet); its body need not be read."""
        limit = record.max_concurrency
        key_id = record.id
        if (
            limit is not None
            and self._per_key.get(key_id, 0) + self._reading.get(key_id, 0) >= limit
        ):
            code, what = _CODES["concurrency"]
            raise TooManyRequests(f"{what}; retry after 1 s.", code=code, retry_after=1)

    async def while_reading(self, key_id: str, reading: Awaitable[T]) -> T:
        """``reading`` (a request's body, before its admission) counted as one of the key's
        requests in this process while it lasts: requests sent at once, none admitted yet,
        are not all read (a key allowed one at a time held a body per connection)."""
        counts = self._reading
        counts[key_id] = counts.get(key_id, 0) + 1
        try:
            return await reading
        finally:
            left = counts[key_id] - 1
            if left > 0:
                counts[key_id] = left
            else:
                del counts[key_id]

    async def _decide(
        self, admission: Admission, model: str, deciding: asyncio.Future[Verdict]
    ) -> Verdict:
        """The store's verdict (``deciding``) within ``store.timeout_ms``. A verdict that comes
        after its caller stopped waiting (timed out, or its client left) is given back at once
        when it admitted: lease and reservation released, no usage recorded."""
        waiting: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._deadlines.add(waiting, self.config.store.timeout_ms / 1000.0)
        deciding.add_done_callback(functools.partial(_pass_on, waiting))
        try:
            return await waiting
        except (asyncio.CancelledError, StoreError):
            deciding.add_done_callback(functools.partial(self._abandoned, admission, model))
            raise

    def _abandoned(self, admission: Admission, model: str, done: asyncio.Future[Verdict]) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        if isinstance(exc, StoreLost):
            verdict = self._presumed(admission)  # its reply was lost: perhaps admitted
        elif exc is not None:
            return  # nothing was admitted
        else:
            verdict = done.result()
        if verdict.admitted:
            ticket = Ticket(admission, verdict, {}, self.clock.monotonic())
            self.release(ticket, model)

    def _presumed(self, admission: Admission) -> Verdict:
        """The verdict an admission whose reply was lost may have had: admitted, in periods
        the store reads off its lease (``PRESUMED``: the lease's expiry less its seconds; the
        gateway's clock and Redis' may differ, and midnight may have passed). Its release gives
        back the lease and the reservation if the store holds them, and does nothing if it does
        not (a settlement counts only while its lease is held)."""
        return Verdict(admitted=True, day=PRESUMED, month=int(LEASE_SECONDS))

    def release(self, ticket: Ticket, model: str) -> None:
        """Give back what an admission took, for a request that was never served."""
        self.settle(ticket, model, 0, 0, False, False, 0, "chat", False)

    def settle(
        self,
        ticket: Ticket,
        model: str,
        prompt: int,
        completion: int,
        error: bool,
        estimated: bool,
        cost: int = 0,
        api: str = "chat",
        record: bool = True,  # False: no usage (``release``)
    ) -> None:
        """Queue the settlement; the background writer sends it (batched) right after."""
        admission = ticket.admission
        if self._in_flight.pop(admission.request_id, None) is not None:  # the key holds one less
            per_key, key_id = self._per_key, admission.key_id
            left = per_key.get(key_id, 1) - 1
            if left > 0:
                per_key[key_id] = left
            else:
                per_key.pop(key_id, None)
        verdict = ticket.verdict
        self.buffer.add(
            Settlement(  # (by position: a keyword call of a record costs a dict)
                admission,
                verdict.day if verdict else 0,
                verdict.month if verdict else 0,
                model,
                prompt,  # prompt_tokens
                completion,  # completion_tokens
                (self.clock.monotonic() - ticket.started) * 1000.0,  # latency_ms
                error,
                estimated,
                self.clock.time(),  # finished_at
                record,
                api,
                cost,
            )
        )
        waking = self._waking
        if waking is not None and not waking.done():
            waking.set_result(None)

    # -- background -------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._writer())]
        self._renewals = Periodic(LEASE_SECONDS / 4, self._renew).start()

    async def stop(self, flush_seconds: float = 5.0) -> None:
        """Flush what is buffered (bounded by ``flush_seconds``) and stop the tasks."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_seconds):
                while self.buffer.items:
                    if not await self._write_batch():
                        await asyncio.sleep(0.05)
        if self._renewals is not None:
            await self._renewals.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _writer(self) -> None:
        backoff, loop = 0.05, asyncio.get_running_loop()
        while True:
            if not self.buffer.items:  # (a future, not an Event: a few µs less per batch)
                self._waking = loop.create_future()
                await self._waking
            while self.buffer.items:
                if await self._write_batch():
                    backoff = 0.05
                    continue
                # The store is down: retry, more slowly each time, but often enough that what
                # waits (leases, reservations) is written soon after it is back; at once when
                # an admission's catch-up found it back.
                self._recovered.clear()
                with contextlib.suppress(TimeoutError):  # (wait_for could swallow a cancel)
                    async with asyncio.timeout(backoff):
                        await self._recovered.wait()
                backoff = min(RETRY_MAX, backoff * 2)

    async def _write_batch(self) -> bool:
        async with self._writing:  # one batch at a time (the writer's, or a catch-up's)
            batch = self.buffer.take(BATCH)
            try:
                await self.store.settle_many(batch)
            except StoreError:
                self.on_store_error("settle")
                self.buffer.put_back(batch)
                self._behind = self.clock.monotonic()
                return False
            self.buffer.writing = 0
            if not self.buffer.items:
                self._behind = None
            self._recovered.set()
            return True

    async def caught_up(self) -> bool:
        """Whether nothing written while the store failed still waits (tries a write first)."""
        if self._behind is not None and self.buffer.items:
            self._behind = 0.0  # due now
            await self._catch_up()
        return self._behind is None or not self.buffer.items

    async def _catch_up(self) -> None:
        """After the store failed, what waits in the buffer goes first (at most one try per
        ``CATCH_UP`` seconds): settlements hold leases and reservations, and an admission
        decided before they are written would be refused for slots already free."""
        behind = self._behind
        if behind is not None and self.clock.monotonic() - behind >= CATCH_UP:
            self._behind = self.clock.monotonic()
            while self.buffer.items and await self._write_batch():
                pass

    async def _renew(self) -> None:
        """Leases of requests running for a while (long streams) are extended: every admitted
        request holds one, and its settlement counts only while it is held."""
        old = self.clock.monotonic() - LEASE_SECONDS / 4
        due = [t.admission for t in self._in_flight.values() if t.started < old and t.verdict]
        if due:
            try:
                await self.store.renew_leases(due)
            except StoreError:
                self.on_store_error("renew")
