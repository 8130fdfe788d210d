"""Affinity's placement decided by the shared store, exact across gateway processes.

On a shared store each process sees the others' requests only as they tell them
(``routing.loads``), so two processes placing at once can both take an upstream's last place
under the bound. There, affinity's choice is the store's: the process computes the order in
which the request's key meets the usable upstreams (the one its prompt went to before first,
then the ring's walk: ``placement``), and the lease script (``store.capacity``'s
``bounded_choice`` rule, in Redis) takes the first of them under ``ceil(load_factor x (T + 1)
x its weight share)``, T every process's live leases on them at that instant, in one step
that Redis serialises. Where the request went is then remembered and told as with a local
choice (``placed``). If the store fails, the local choice stands in (``local``): the
balancer's bound over the told counts.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.config.schema import Config, Upstream
from gateway.routing.balancer import Balancer
from gateway.routing.ring import Ring
from gateway.routing.state import UpstreamState
from gateway.store.capacity import UNCAPPED

# What remembering a placement needs: the ring, the request's key and prompt prefixes, the
# prefix remembered and where it went, and what was asked (pool, exclusions, region) for the
# local choice.
Memo = tuple[Ring, int, Sequence[int], int | None, str | None, tuple[Any, ...]]
# A request's candidates in the order its key meets them, their weights, the load factor, and
# the memo. (A plain tuple: a dataclass of as many fields costs 0.5 µs more to make, per
# request.)
Placement = tuple[list[Upstream], list[float], float, Memo]


def placement(
    balancer: Balancer,
    pool: Sequence[Upstream],
    exclude: Iterable[str],
    region: str | None,
    load_factor: float,
    key: int,
    prefixes: Sequence[int],
) -> Placement | None:
    """The usable upstreams of ``pool`` (not ejected; of ``region`` when any is; every one in
    panic) in the order the key meets them, the prompt's last upstream first (not in panic, as
    ``Balancer.affinity``); None when the pool is empty. (Per request, on a route's own pool
    with every upstream usable: the order from the key's point on the ring is made once and
    kept.)"""
    asked = (pool, exclude, region)
    if balancer._members:
        pool = balancer.expand(pool)
    if exclude:
        pool = [u for u in pool if u.name not in exclude]
    if not pool:
        return None
    known = balancer._views.get(id(pool))
    ring, states, _ = known[1] if known is not None and known[0] is pool else balancer._view(pool)
    seen = balancer.history.where(prefixes) if prefixes else None
    found, went = seen if seen is not None else (None, None)
    at = bisect.bisect_left(ring.points, key)
    usable, panic = None, False
    if region is not None or balancer._now() < balancer._ejected_until:
        usable, panic = _usable(balancer, pool, states, region)
    if usable is None and type(pool) is tuple and ring.size <= _KEPT:  # kept per ring point
        kept = balancer.orders.get(id(pool))
        order = kept[1].get(at) if kept is not None and kept[0] is pool else None
        if order is None:
            order = _keep(balancer, pool, ring, key, at)
        candidates, weights = order
    else:
        candidates, weights = _order(pool, ring, key, at, usable)
    if went is not None and not panic and candidates[0].name != went:  # where it went, first
        for i, upstream in enumerate(candidates):
            if upstream.name == went:
                candidates = [upstream, *candidates[:i], *candidates[i + 1 :]]
                weights = [weights[i], *weights[:i], *weights[i + 1 :]]
                break
    return candidates, weights, load_factor, (ring, key, prefixes, found, went, asked)


_KEPT = 8  # a pool of at most this many upstreams has its orders kept (per point of its ring)
Order = tuple[list[Upstream], list[float]]  # candidates, their weights


def _order(
    pool: Sequence[Upstream], ring: Ring, key: int, at: int, usable: list[bool] | None
) -> Order:
    """The usable upstreams in the order ``key`` meets them (from the ring's point ``at``, its
    place), and their weights."""
    walk: Sequence[int] = ring.walks[at]
    if len(walk) < ring.size:
        walk = ring.walk(key)
    if usable is not None:
        walk = [i for i in walk if usable[i]]
    weights = ring.weights
    return [pool[i] for i in walk], [weights[i] for i in walk]


def _keep(balancer: Balancer, pool: tuple[Upstream, ...], ring: Ring, key: int, at: int) -> Order:
    """``_order`` with every upstream usable, kept for the next request meeting the ring at
    ``at`` (shared: its lists are never changed)."""
    kept = balancer.orders.get(id(pool))
    if kept is None or kept[0] is not pool:
        if len(balancer.orders) >= 1024:
            balancer.orders.clear()
        kept = balancer.orders[id(pool)] = (pool, {})
    order = kept[1][at] = _order(pool, ring, key, at, None)
    return order


def _usable(
    balancer: Balancer, pool: Sequence[Upstream], states: list[UpstreamState], region: str | None
) -> tuple[list[bool] | None, bool]:
    """Which upstreams a placement may take (None: every one): not ejected, of ``region`` when
    any such is; and whether every one is ejected (panic: then the ring alone decides, among
    them all, as in ``Balancer.affinity``)."""
    usable: list[bool] | None = None
    now = balancer._now()
    if now < balancer._ejected_until:
        usable = [s.ejected_until <= now for s in states]
        if not any(usable):
            return None, True
    if region is not None:
        local = [(usable is None or usable[i]) and u.region == region for i, u in enumerate(pool)]
        if any(local):
            usable = local
    return usable, False


def placed(balancer: Balancer, found: Placement, upstream: Upstream) -> None:
    """The store placed the request on ``upstream``: remembered (and told to the other
    processes when they could not guess it), as ``Balancer.affinity`` does its own choice."""
    ring, key, prefixes, remembered, went, _ = found[3]
    if not prefixes:
        return
    name, prompt = upstream.name, prefixes[-1]
    sent = balancer.history.sent  # ``History.record``, in place: this runs once per request
    if remembered is not None and remembered != prompt:
        sent.pop(remembered, None)
    sent[prompt] = name
    sent.move_to_end(prompt)
    if len(sent) > balancer.history.capacity:
        sent.popitem(last=False)
    if balancer.placements.sharing and (remembered is None or went != name):
        index = ring.names.get(name)
        if index is not None:
            balancer._tell(ring, key, remembered, prompt, index, name)


def local(balancer: Balancer, found: Placement) -> Upstream | None:
    """The balancer's own choice for the same request (the store failed): its bound over the
    counts the processes told each other."""
    _, key, prefixes, _, _, (pool, exclude, region) = found[3]
    return balancer.affinity(pool, exclude, region, found[2], key, prefixes)


class Bounded:
    """The upstreams of the affinity pools on a shared store (``Capacity.configure``, at each
    reload): every call to one takes a lease, capped or not, so that its lease set counts
    every process's requests there; and none is kept idle (an idle lease would count in the
    bound) or given back later than at once."""

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names: frozenset[str] = frozenset()

    def configure(self, config: Config) -> None:
        self.names = frozenset(
            name
            for model in config.models.values()
            if model.routing.policy == "affinity"
            for name in model.upstreams
        )

    def bounds(self, upstream: Upstream) -> bool:
        """Is ``upstream`` in an affinity pool (a discovered one: its entry)?"""
        return self.named(upstream.name)

    def named(self, name: str) -> bool:
        names = self.names
        return bool(names) and (name in names or name.partition("@")[0] in names)

    def leased(self, upstream: Upstream) -> bool:
        """Does a call to ``upstream`` take a lease? Capped, or in an affinity pool."""
        return upstream.max_concurrency is not None or self.bounds(upstream)

    def cap(self, upstream: Upstream) -> int:
        cap = upstream.max_concurrency
        return UNCAPPED if cap is None else cap

    def roomy(self, pool: Sequence[Upstream]) -> bool:
        """May the store say an upstream of ``pool`` has room to spare (its freed leases kept
        idle by the process)? Not one affinity bounds."""
        return not self.names or not any(self.bounds(u) for u in pool)
