"""Upstream slots and the queue in front of full models: the one way to an upstream.

Every call to an upstream takes its slot here: a request's first attempt through
``Capacity.first`` (which may wait for one), every retry and fallback through ``slot``, any
other call through ``Capacity.take``; the caller then counts it in this process's balancer
(``Balancer.acquire``, at once, no await between). When the upstream has a ``max_concurrency``
and the store is shared, the slot is a lease in the store (``store.capacity``), so that the
cap counts every gateway process; ``Balancer.release`` gives both back. An upstream without a
cap costs nothing more than the balancer's count.

When every upstream of a model (all capped, no ``fallbacks``) is full, the request waits in the
model's weighted fair queue (by the owner's plan ``share``, higher ``priority`` first, FIFO
within an owner) until a slot frees, at most ``scheduling.max_wait`` (then 503
``queue_timeout``); past its owner's ``max_queued`` or the process's ``max_queue``, 429
``queue_full``. On ``memory://`` the queue is this process's (``routing.waiting_local``); on a
shared store it is the store's, one queue per model for every process (``routing.waiting_shared``),
and a slot released anywhere goes to its head in the same store call.

The first attempt's lease looks at the model's queue in the same store call: while anyone
waits, a newcomer joins them rather than passing them (one round trip when nobody waits). The
leases asked for in one turn of the loop go to the store in one call, decided in order as one
by one (``store.capacity_batch``); a lease taken for a request that left is given back.
Leases held are renewed every ``RENEW_SECONDS`` in one store call and released in batches.
Leases are fungible per upstream: when this process's in-flight count to an upstream falls below
the leases it holds, one is released, unless the store said the upstream has room to spare and
nobody waits for it: then it is kept idle for this process's next request to it, which takes
it with no store call (``routing.capacity_pool``: given back at once when a request anywhere
starts to wait for it).

On a shared store, every call to an upstream of an ``affinity`` model takes a lease too (an
upstream without a cap: one never reached), so that its lease set counts every process's
requests there; an affinity request's first attempt (and any retry the ring picks) is placed by
the store under the bound (``place``, ``routing.placing``). Such an upstream's leases are never
kept idle (one would count in the bound), and a freed one goes back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence

from gateway.clock import Clock
from gateway.config.schema import Config, Plan, Scheduling, Upstream
from gateway.errors import UpstreamUnavailable
from gateway.metrics import Metrics
from gateway.routing.balancer import Balancer
from gateway.routing.capacity_pool import Pool
from gateway.routing.chain import Chain
from gateway.routing.placing import Bounded, placed
from gateway.routing.placing import local as local_choice
from gateway.routing.router import ModelRoute
from gateway.routing.waiting import Tick, share_label
from gateway.routing.waiting_local import LocalRoom
from gateway.routing.waiting_shared import SharedRoom
from gateway.store.base import StoreError
from gateway.store.capacity import (
    RENEW_SECONDS,
    ROOMY,
    GrantListener,
    LeaseStore,
)

log = logging.getLogger("gateway.routing")


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
        self.leases = leases
        self._me = uuid.uuid4().hex[:12]
        self.local = LocalRoom(clock, metrics, scheduling, balancer)
        self.shared: SharedRoom | None = None
        room = self._room = leases.wait_room if leases is not None else None
        if room is not None:
            self.shared = SharedRoom(
                clock, metrics, scheduling, room, self._me, self._give, self._subscription
            )
        self._held: dict[str, list[str]] = {}  # upstream → leases this process holds
        self.pool = Pool(balancer, clock, self._held, self._give)
        self._listener: GrantListener | None = None
        self._to_release: list[tuple[str, str]] = []
        self._routes: dict[str, tuple[ModelRoute, bool]] = {}  # name → (route, _queues(route))
        self._renewer: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        balancer.on_release = self._freed
        # On a shared store affinity's placements are the store's (``routing.placing``), and
        # every call to an upstream of an affinity pool takes a lease, capped or not, so that
        # the lease sets count every process's requests there: these upstreams (``configure``).
        balancer.placing = leases is not None
        self.bounded = Bounded()

    def configure(self, config: Config) -> None:
        """The scheduling settings, and a series of every queue metric for each plan (at 0,
        so that a dashboard shows a plan that never waited). On a shared store with a capped
        upstream, the store's subscription is made now, off the request path (the pool keeps
        no lease before it is up)."""
        for room in (self.local, self.shared):
            if room is not None:
                room.scheduling = config.scheduling
        if self.leases is not None:  # what the configuration says now: a reload may drop some
            self.bounded.configure(config)
            for name in [n for n in self.pool.roomy if self.bounded.named(n)]:
                self.pool.revoke(name)  # newly bounded: its idle leases would count as load
        if self._room is not None and any(u.max_concurrency for u in config.upstreams.values()):
            with contextlib.suppress(RuntimeError):  # no loop yet: made on first use
                asyncio.get_running_loop()
                self._subscription()
        m = self.metrics
        for name, plan in config.plans.items():
            m.queue_length.labels(name)
            m.queue_wait.labels(name)
            m.queue_grants.labels(name, share_label(plan.share))
            for bound in ("owner", "gateway"):
                m.queue_refused.labels(name, bound)

    # -- the request path -------------------------------------------------------------------
    async def first(
        self,
        chain: Chain,
        owner: str,
        plan: Callable[[], Awaitable[Plan]],
        tick: Tick | None = None,
    ) -> Upstream | None:
        """The upstream of a request's first attempt, its slot taken (the caller counts it
        with ``Balancer.acquire`` at once, and ``Balancer.release`` gives both back), after a
        wait in the model's queue when every one is full; None (today's 503) when full and the
        model has fallbacks or an upstream without a cap."""
        route, local = chain.route, self.local
        upstream = None if local.queues and local.busy(route.name) else chain.first()
        known = self._routes.get(route.name)  # _queued(route), in place
        queued = known[1] if known is not None and known[0] is route else self._queued(route)
        if upstream is not None:
            if chain.pending is not None:  # affinity's placement: the store's choice
                taken = await self.place(chain, route.name if queued else None)
            elif self.leases is None or not self.bounded.leased(upstream):
                return upstream
            elif upstream.name in self.pool.roomy and self.pool.reuse(upstream.name):
                return upstream  # an idle lease of this process: no store call
            else:
                taken = await self._first_lease(route, upstream, queued)
            if taken is not None:
                if taken is not upstream:
                    chain.tried[-1] = taken.name
                return taken
            chain.tried.pop()
            chain.attempts -= 1
        if not queued:
            return None
        if self.shared is None:
            return await self._wait_local(chain, owner, await plan(), tick)
        return await self._wait_shared(chain, owner, await plan(), tick)

    async def _first_lease(
        self, route: ModelRoute, upstream: Upstream, queued: bool
    ) -> Upstream | None:
        """The slot of a first attempt's ``upstream`` (or of another of its model's)."""
        assert self.leases is not None
        pool = self.balancer.expand(route.upstreams)  # the chain's model is the route's
        if not pool or pool[0] is not upstream:
            pool = [upstream, *(u for u in pool if u is not upstream)]
        if not queued:  # the chosen one if it has room, else one without a cap or free
            return await self._lease(pool, None)
        # every one capped: a lease (awaited here: one level less to resume)
        lease, seq = f"{self._me}:l{next(self._ids)}", self.pool.seq
        spec = [(u.name, self.bounded.cap(u)) for u in pool]
        asking = self.leases.acquire_now(spec, lease, route.name, self.bounded.roomy(pool))
        try:
            return self._got(pool, lease, await asking, seq)
        except StoreError as exc:  # the store is down: each process keeps its own count
            return _store_down(exc, pool)
        except asyncio.CancelledError:
            self._left(asking, pool, lease)
            raise

    async def place(self, chain: Chain, queue: str | None) -> Upstream | None:
        """The slot of affinity's placement (``chain.pending``, the candidates in the order
        the key meets them): the store takes the first under the bound over every process's
        leases (``routing.placing``), remembered and told as a local choice; None when every
        one is full. If the store fails, the balancer's own choice (its bound over the counts
        told) stands in, as each process keeps its own count of capped upstreams then."""
        found, chain.pending = chain.pending, None
        assert found is not None and self.leases is not None
        candidates, weights, load_factor, _ = found
        spec = [(u.name, self.bounded.cap(u)) for u in candidates]
        lease = f"{self._me}:l{next(self._ids)}"
        asking = self.leases.acquire_now(spec, lease, queue, False, (load_factor, weights))
        try:
            taken = self._got(candidates, lease, await asking, None)
        except StoreError as exc:
            log.warning("affinity placement failed", extra={"reason": str(exc)})
            self.metrics.store_errors.labels("affinity_placement").inc()
            return local_choice(self.balancer, found)
        except asyncio.CancelledError:
            self._left(asking, candidates, lease)
            raise
        if taken is not None:
            placed(self.balancer, found, taken)
        return taken

    async def take(
        self, upstream: Upstream, alternatives: Sequence[Upstream] = ()
    ) -> Upstream | None:
        """A slot for a call to ``upstream`` (or, when it is full across processes, to the
        first of ``alternatives`` with one), taken for a caller that counts it with
        ``Balancer.acquire`` at once (``Balancer.release`` gives both back); None when every
        one is full. Under a cap on a shared store, a lease; else nothing more than the count."""
        if self.leases is None or not self.bounded.leased(upstream):
            return upstream
        pool = [upstream, *(u for u in alternatives if u is not upstream)]
        return await self._lease(pool, None)

    async def _wait_shared(
        self, chain: Chain, owner: str, plan: Plan, tick: Tick | None
    ) -> Upstream | None:
        assert self.shared is not None
        pool = self._pool(chain)
        spec = [(u.name, u.max_concurrency or 0) for u in pool]
        try:
            name, lease = await self.shared.wait(chain, owner, plan, tick, spec)
        except StoreError as exc:  # the store is down: each process keeps its own queue
            log.warning("capacity queue failed", extra={"reason": str(exc)})
            return await self._wait_local(chain, owner, plan, tick)
        upstream = next((u for u in pool if u.name == name), None)
        if upstream is None:  # the configuration changed while it waited
            self._give(name, lease)
            raise UpstreamUnavailable(
                f"No upstream of model '{chain.route.name}' is available; try again shortly.",
                status=503,
            )
        self._held.setdefault(name, []).append(lease)
        self._start_renewer()
        chain.tried.append(name)
        chain.attempts += 1
        return upstream

    async def _wait_local(
        self, chain: Chain, owner: str, plan: Plan, tick: Tick | None
    ) -> Upstream:
        upstream = await self.local.wait(chain, owner, plan, tick)
        self.balancer.handover(upstream)  # counted by the pump; the caller counts it again
        return upstream

    def _queued(self, route: ModelRoute) -> bool:
        """``_queues(route)``, remembered per route (a reload makes new ones: one per name)."""
        known = self._routes.get(route.name)
        if known is None or known[0] is not route:
            known = self._routes[route.name] = (route, _queues(route))
        return known[1]

    def _pool(self, chain: Chain) -> list[Upstream]:
        return self.balancer.expand(chain.model.upstreams)

    async def _lease(self, pool: list[Upstream], queue: str | None) -> Upstream | None:
        """A slot on ``pool``'s first upstream (the one chosen) if it has one free, held; else
        on an upstream without a cap (never full), else on the next capped one with a slot:
        one store call for every lease asked for in this turn of the loop
        (``LeaseStore.acquire_now``). ``queue``: the model whose waiting requests a newcomer
        may not pass."""
        chosen, free = pool[0], self._unleased(pool)
        if chosen is free or (chosen.name in self.pool.roomy and self.pool.reuse(chosen.name)):
            return chosen
        capped = pool if free is None else [chosen]
        asking, lease = self._ask(capped, queue)
        seq = self.pool.seq
        try:
            taken = self._got(capped, lease, await asking, seq)
        except StoreError as exc:  # the store is down: each process keeps its own count
            return _store_down(exc, capped)
        except asyncio.CancelledError:
            self._left(asking, capped, lease)
            raise
        return taken if taken is not None else free

    def _ask(self, capped: list[Upstream], queue: str | None) -> tuple[asyncio.Future[int], str]:
        assert self.leases is not None
        lease = f"{self._me}:l{next(self._ids)}"
        spec = [(u.name, self.bounded.cap(u)) for u in capped]
        return self.leases.acquire_now(spec, lease, queue, self.bounded.roomy(capped)), lease

    def _unleased(self, pool: list[Upstream]) -> Upstream | None:
        """The first upstream of ``pool`` that takes no lease (never full), if any."""
        for upstream in pool:
            if not self.bounded.leased(upstream):
                return upstream
        return None

    def _got(
        self, capped: list[Upstream], lease: str, index: int, seq: int | None
    ) -> Upstream | None:
        """The upstream whose slot ``lease`` took (None: every one full), held and renewed;
        the pool told whether it has room to spare (``seq``: the pool's when it was asked)."""
        if index < 0:
            return None
        roomy = index >= ROOMY
        taken = capped[index - ROOMY if roomy else index]
        name = taken.name
        if roomy:
            if self._listener is None and self._room is not None:
                self._subscription()
            self.pool.room(name, taken.max_concurrency or 0, seq)
        elif name in self.pool.roomy:  # before ``lease`` is held: not one of the idle
            self.pool.revoke(name)
        held = self._held.get(name)
        if held is None:
            held = self._held[name] = []
        held.append(lease)
        if self._renewer is None:
            self._start_renewer()
        return taken

    def _left(self, asking: asyncio.Future[int], capped: list[Upstream], lease: str) -> None:
        """The caller left while its lease was on its way: if the answer had come (taken, the
        caller not yet resumed), the slot goes back; else the store gives it back when it
        comes."""
        if (index := _taken(asking)) >= 0:
            self._give(capped[index % ROOMY].name, lease)

    def _subscription(self) -> GrantListener:
        """This process's one subscription to the store's grants (its waiting requests') and
        notices (requests starting to wait: the pool's), made on first use."""
        if self._listener is None:
            assert self._room is not None
            shared, pool = self.shared, self.pool
            assert shared is not None
            self._listener = self._room.listen(
                self._me, shared.deliver, shared.missed, pool.wanted, pool.status
            )
        return self._listener

    # -- slots freed, leases renewed --------------------------------------------------------
    def _freed(self, upstream: Upstream) -> None:
        """``Balancer.release``'s hook: give a lease back if one is spare, wake the queues."""
        name = upstream.name
        held = self._held.get(name)
        if held and name not in self.pool.roomy and len(held) > self.balancer.state(name).in_flight:
            if self.bounded.names and self.bounded.bounds(upstream):
                # Out before the answer's end reaches the client, whose next request (often
                # through another process) must not find it still counted: that would raise
                # the bound (``routing.placing``).
                assert self.leases is not None
                self.leases.release_now([(name, held.pop())], True)
            else:
                releasing = self._to_release  # as _give, in place: this runs once per request
                releasing.append((name, held.pop()))
                if len(releasing) == 1:
                    asyncio.get_running_loop().call_soon(self._release)
        if self.local.queues:
            self.local.freed()

    def _give(self, upstream: str, lease: str) -> None:
        """A lease back to the store (with the others of this turn of the loop, in one call
        sent at its end: no task)."""
        self._to_release.append((upstream, lease))
        if len(self._to_release) == 1:
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        batch, self._to_release = self._to_release, []
        if batch and self.leases is not None:
            self.leases.release_now(batch)

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        """While leases are held; then ``_renewer`` is None again (the hot path's test). The
        pool's upstreams' room is asked again in the same call, and its leases idle since the
        last renewal go back."""
        pool = self.pool
        try:
            while any(self._held.values()):
                await asyncio.sleep(RENEW_SECONDS)
                pool.trim()
                leases = [(name, lease) for name, held in self._held.items() for lease in held]
                if leases and self.leases is not None:
                    checks, seq = pool.checks(), pool.seq
                    try:
                        renewed = await self.leases.renew(leases, checks)
                        self._forget(renewed.gone)
                        pool.checked(checks, renewed.room, seq)
                    except StoreError as exc:
                        log.warning("capacity renewal failed", extra={"reason": str(exc)})
        finally:
            self._renewer = None

    def _forget(self, gone: list[tuple[str, str]]) -> None:
        """Leases the store no longer has (it lost them): not held, so never reused."""
        for name, lease in gone:
            held = self._held.get(name)
            if held is not None and lease in held:
                held.remove(lease)

    async def close(self) -> None:
        await self.local.close()
        self.pool.close()
        if self.shared is not None:
            await self.shared.close()
        if self._listener is not None:
            await self._listener.close()
        tasks = [self._renewer]
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.leases is not None:
            held = [(name, lease) for name, leases in self._held.items() for lease in leases]
            pending, self._to_release = self._to_release, []
            with contextlib.suppress(StoreError):
                await self.leases.release(held + pending)
            await self.leases.close()


async def slot(
    capacity: Capacity | None, chain: Chain, upstream: Upstream | None, kind: str | None = None
) -> Upstream | None:
    """The slot of a retry's or a fallback's ``upstream`` (what ``Chain.after`` or
    ``Chain.fall_back`` picked), taken as ``Capacity.take`` does: on it or, when it is full
    across processes, on another untried upstream of the chain's model (the attempt renamed to
    it); when the model is full everywhere, the next fallback's (for a failure of ``kind``).
    None when there is none: the retry is given up (its budget handed back). What every attempt
    after a request's first calls before ``Balancer.acquire``."""
    if capacity is None:
        return upstream
    while upstream is not None:
        if chain.pending is not None:  # affinity's placement: the store's choice
            taken = await capacity.place(chain, None)
        else:
            others = [u for u in chain.model.upstreams if u.name not in chain.tried]
            taken = await capacity.take(upstream, others)
        if taken is not None:
            if taken is not upstream and chain.tried:
                chain.tried[-1] = taken.name
            return taken
        upstream = await chain.fall_back(kind) if kind is not None else None
    chain.done()
    return None


async def take(
    capacity: Capacity | None, upstream: Upstream, alternatives: Sequence[Upstream] = ()
) -> Upstream | None:
    """``Capacity.take`` for a caller whose runtime may have no capacity service: what a call
    to an upstream outside a request's attempts (a token count) takes before
    ``Balancer.acquire``; None when every one is full."""
    if capacity is None:
        return upstream
    return await capacity.take(upstream, alternatives)


def _store_down(exc: StoreError, pool: list[Upstream]) -> Upstream:
    log.warning("capacity lease failed", extra={"reason": str(exc)})
    return pool[0]


def _queues(route: ModelRoute) -> bool:
    """Does a request to ``route`` wait when its upstreams are full? Only if every one has a
    cap (an uncapped one is never full) and the model has no fallbacks to try instead."""
    return not route.fallbacks and all(u.max_concurrency for u in route.upstreams)


def _taken(asking: asyncio.Future[int]) -> int:
    """The index a lease acquisition answered, -1 if none (yet)."""
    if not asking.done() or asking.cancelled() or asking.exception() is not None:
        return -1
    return asking.result()
