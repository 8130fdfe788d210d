"""Upstream slots shared by every gateway process of a store: the Protocols the capacity service
(``routing.capacity``) needs, apart from the main store's seam (``store.base``).

A slot is a lease: a member of the upstream's lease set with an expiry, taken before a request
goes to the upstream, renewed while it lives, removed when it ends. A process that dies stops
renewing, and its leases expire: the slots heal within one lease time.

A shared store also keeps the waiting room of full models (``WaitRoom``): one queue per model in
weighted fair order by owner, served by the store itself. A released lease goes to the head of
the queue of a model waiting for its upstream in the same call, as a lease whose id is the
waiting request's ticket, and the ticket's process is told at once (``GrantListener``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

LEASE_SECONDS = 4.0  # a dead process's slots come back within this
RENEW_SECONDS = 1.0  # how often a live process renews the leases it holds
SWEEP_SECONDS = 0.25  # how often a process with waiting requests vouches for them and sweeps
# Added to ``acquire_now``'s index (asked with ``room``) when the upstream had room to spare
# after the slot was taken: a quarter of its cap (and at least 2) still free, nobody waiting.
ROOMY = 1024

Deliver = Callable[[str, str], None]  # (ticket, upstream) of a grant

# The cap of an upstream that has none but whose requests are counted in the store all the same
# (a pool affinity bounds across processes): never reached.
UNCAPPED = 1 << 30

# An acquisition bounded by affinity's rule: the load factor, and the candidates' weights.
Bound = tuple[float, Sequence[float]]


def bounded_choice(held: Sequence[int], caps: Sequence[int], bound: Bound) -> int:
    """Which candidate a bounded acquisition takes (-1: none): the first, in order, with a free
    slot (``held`` < its cap) and ``held`` under ``ceil(f x (T + 1) x w / W)``, where T and W
    are the live leases and the weights of the candidates with a free slot (consistent hashing
    with bounded loads over every process's requests; ``routing.ring``'s rule, which
    ``capacity_acquire.lua`` applies in Redis). With f >= 1 one is always found while any has
    a free slot: the bounds add up to more than T."""
    factor, weights = bound
    total = weight = 0.0
    for n, cap, w in zip(held, caps, weights, strict=True):
        if n < cap:
            total += n
            weight += w
    if weight <= 0.0:
        return -1
    scale = factor * (total + 1.0) / weight
    for i, (n, cap, w) in enumerate(zip(held, caps, weights, strict=True)):
        if n < cap and n < math.ceil(scale * w - 1e-9):
            return i
    return -1


class Renewed(NamedTuple):
    """A renewal's answer: per upstream asked about, has it room to spare; and the (upstream,
    lease) pairs that were no longer in the store (expired, or lost with its data)."""

    room: list[bool]
    gone: list[tuple[str, str]]


Wanted = Callable[[list[str]], None]  # upstreams a request started to wait for, anywhere
Status = Callable[[bool], None]  # a subscription up (True) or down (False)


class LeaseStore(Protocol):
    def acquire_now(
        self,
        candidates: Sequence[tuple[str, int]],
        lease: str,
        queue: str | None = None,
        room: bool = False,
        bound: Bound | None = None,
    ) -> asyncio.Future[int]:
        """``acquire`` on the hot path: on its way when this returns (with the others of this
        turn of the loop, decided in order as one by one). The future completes whatever its
        awaiter does: a lease taken for a caller that left, or after the store's time ran out
        (then the future fails with ``StoreError``), is given back, as is one whose reply was
        lost with the connection (``StoreLost``). ``room``: ``ROOMY`` is added to the index
        when the upstream had room to spare (a store that cannot tell never adds it; never
        with ``bound``)."""
        ...

    async def acquire(
        self,
        candidates: Sequence[tuple[str, int]],
        lease: str,
        queue: str | None = None,
        bound: Bound | None = None,
    ) -> int:
        """Take a slot as ``lease`` on the first of ``candidates`` (upstream name, cap) with one
        free; its index, or -1 if every one is full (or if requests wait in the queue of model
        ``queue``: a newcomer does not pass them). ``bound``: the first under affinity's bound
        too (``bounded_choice``, every process's leases counted at once; the candidates
        distinct)."""
        ...

    async def renew(
        self, leases: Sequence[tuple[str, str]], room: Sequence[tuple[str, int]] = ()
    ) -> Renewed:
        """Extend (upstream name, lease) pairs still held by another lease time (and tell those
        no longer there); and for each (upstream, cap) of ``room``, has it room to spare now (as
        ``acquire_now`` tells with ``ROOMY``; a store that cannot tell says False)?"""
        ...

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        """Give (upstream name, lease) pairs back (to the waiting room's next, if shared)."""
        ...

    def release_now(self, leases: Sequence[tuple[str, str]], at_once: bool = False) -> None:
        """``release`` on the hot path: on its way when this returns, not awaited (a failure
        is logged; the leases expire within a lease time); sent with the others of this turn of
        the loop at its end, or with ``at_once`` now (before the caller's next write: a bounded
        upstream's freed slot must be gone from the count before its client can send again)."""
        ...

    async def held(self, upstream: str) -> int:
        """Leases of ``upstream`` not expired, all processes together."""
        ...

    async def close(self) -> None: ...

    @property
    def wait_room(self) -> WaitRoom | None:
        """The queues of full models this store keeps for every process (None: none; this
        process's own queues serve)."""
        ...


class GrantListener(Protocol):
    async def ready(self, seconds: float) -> bool:
        """Subscribed (within ``seconds``)?"""
        ...

    async def close(self) -> None: ...


class WaitRoom(Protocol):
    """The queues of full models, shared by every process of the store."""

    async def join(
        self,
        model: str,
        ticket: str,
        owner: str,
        share: float,
        priority: int,
        most: int | None,
        upstreams: Sequence[tuple[str, int]],
    ) -> tuple[int, str | int, float]:
        """Queue ``ticket`` (``<process>:<n>``) of ``owner``: (1, upstream) granted at once,
        (0, requests ahead) waiting, (-1, the owner's waiting) past ``most``; then the slots
        the model's waiting requests got per second lately, all processes together (0: too
        few to tell)."""
        ...

    async def leave(self, model: str, ticket: str) -> int:
        """Take a ticket out: 0 it waited, 1 it had been granted (the slot passed on), -1."""
        ...

    async def sweep(self, model: str, tickets: Sequence[str]) -> list[str]:
        """Vouch for this process's ``tickets``, hand slots freed by expiry on, and tell each
        ticket's fate: '' waiting, an upstream's name granted, '-' gone."""
        ...

    def listen(
        self,
        process: str,
        deliver: Deliver,
        lost: Callable[[], None],
        wanted: Wanted | None = None,
        status: Status | None = None,
    ) -> GrantListener:
        """Grants to ``process``'s tickets, as they happen; ``lost``: some may have been missed.
        ``wanted``: the upstreams a request of any process started to wait for (none waited
        for them before); ``status``: the subscription came up or went down (while it is down,
        ``wanted`` may miss some)."""
        ...
