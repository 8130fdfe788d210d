"""Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2017). Pure.

Each upstream owns points on a 64-bit ring, placed by a stable hash of its name (BLAKE2b, never
Python's per-process ``hash``), so every gateway process builds the same ring. A request's key
is hashed onto the ring and walks clockwise to the first upstream that may take it: usable
(not ejected, not full) and, with ``m`` requests in flight counting this one, carrying less
than ``ceil(load_factor * m * its weight share)``. Every upstream past that bound is skipped,
so none carries more than ``load_factor`` times its share of the mean. Adding or removing an
upstream moves only the keys whose walk meets its points.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence

# Points per unit of weight: a share within about 20 % of its weight (4 upstreams of weight 1
# get 21 % to 29 % of the keys); the bound evens out the rest.
POINTS_PER_WEIGHT = 100
_MAX_POINTS = 10_000
_INF = float("inf")


def key_hash(data: bytes) -> int:
    """A 64-bit position on the ring, the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


# Each point keeps the first upstreams its walk meets (at most this many): a request's walk is
# then one list, made when the ring is; a walk past them (all over their bound) goes on by
# ``walk``.
_WALK = 8


class Ring:
    """The points of a pool's upstreams (by their index in the pool), sorted."""

    __slots__ = ("names", "owners", "points", "size", "uniform", "walks", "weight", "weights")

    def __init__(self, names: Sequence[str], weights: Sequence[float]) -> None:
        placed: list[tuple[int, int]] = []
        for index, (name, weight) in enumerate(zip(names, weights, strict=True)):
            count = min(_MAX_POINTS, max(1, round(POINTS_PER_WEIGHT * weight)))
            seed = name.encode("utf-8", "surrogateescape")
            placed.extend((key_hash(seed + b"#%d" % i), index) for i in range(count))
        placed.sort()
        self.points = [p for p, _ in placed]
        self.owners = [o for _, o in placed]
        self.size = len(names)
        self.names = {name: i for i, name in enumerate(names)}
        self.weights = list(weights)
        self.weight = sum(self.weights)
        self.uniform = len(set(self.weights)) <= 1
        self.walks = self._walks()

    def _walks(self) -> list[tuple[int, ...]]:
        """For each point (and once more for a key past the last: the first), the first
        ``_WALK`` distinct upstreams met from it clockwise; built backwards in one pass."""
        owners, depth = self.owners, min(_WALK, self.size)
        if not owners:
            return [()]
        walks: list[tuple[int, ...]] = [()] * len(owners)
        ahead: list[int] = []  # distinct owners met from the point after, nearest first
        for i in range(2 * len(owners) - 1, -1, -1):  # twice round: the wrap is seen
            owner = owners[i % len(owners)]
            if owner in ahead:
                ahead.remove(owner)
            ahead.insert(0, owner)
            del ahead[depth:]
            if i < len(owners):
                walks[i] = tuple(ahead)
        return [*walks, walks[0]]

    def walk(self, key: int) -> list[int]:
        """Every upstream once, in the order the key meets them clockwise."""
        order: list[int] = []
        seen = 0
        points, owners = len(self.points), self.owners
        start = bisect.bisect_left(self.points, key)
        for step in range(points):
            owner = owners[(start + step) % points]
            if not seen >> owner & 1:
                seen |= 1 << owner
                order.append(owner)
                if len(order) == self.size:
                    break
        return order

    def owner(self, key: int) -> int:
        """The upstream the key belongs to when nothing is loaded or excluded."""
        return self.walks[bisect.bisect_left(self.points, key)][0]

    def choose(
        self,
        key: int,
        loads: Sequence[float],
        usable: Sequence[bool] | None,
        weights: Sequence[float],
        load_factor: float,
        first: int | None = None,
        unknown: Sequence[float] | None = None,
    ) -> int | None:
        """The index of the first usable upstream on the key's walk under its bound, or None
        when no upstream is usable (``usable`` None: every one is). With ``load_factor`` ≥ 1
        some usable upstream is always under its bound (the bounds add up to at least the load
        plus this request). ``first``: an upstream taken before the walk if it is usable and
        under its bound. (Spilling in the walk's order, not to the least loaded, keeps a
        conversation between few upstreams, each with some of its cache: the least loaded
        spill measured worse in ``bench/routing_sim.py``.)

        ``unknown``: per upstream, requests placed by this process that the other processes
        sharing the fleet have not been told of yet. Each must stay under the same bound
        computed over them alone, so that no burst of placements the others cannot see lands
        on one upstream; an upstream under both bounds is taken first, else, of those under
        the load bound (some usable upstream always is), the one with the fewest untold: the
        load bound is never given up for the untold one."""
        if unknown is not None and any(unknown):
            return self._choose_both(key, loads, usable, weights, load_factor, first, unknown)
        if usable is None or all(usable):  # the usual case, in C: no loop over the upstreams
            usable = None
            total = sum(loads)
            weight = self.weight if weights is self.weights else sum(weights)
        else:
            total = sum(load for load, ok in zip(loads, usable, strict=True) if ok)
            weight = sum(w for w, ok in zip(weights, usable, strict=True) if ok)
        if weight <= 0.0:
            return None
        # Upstream i may take one more while its load < ceil(scale * its weight); 1e-9 absorbs
        # the float error of the scale (the bound is a whole number of requests).
        scale = load_factor * (total + 1.0) / weight
        if self.uniform and weights is self.weights:  # one bound for all: computed once
            bound = math.ceil(scale * weights[0] - 1e-9)
            walk = self.walks[bisect.bisect_left(self.points, key)]
            if usable is None:
                if first is not None and loads[first] < bound:
                    return first
                for owner in walk:
                    if loads[owner] < bound:
                        return owner
            else:
                if first is not None and usable[first] and loads[first] < bound:
                    return first
                for owner in walk:
                    if usable[owner] and loads[owner] < bound:
                        return owner
            if len(walk) == self.size:
                return None
        elif (
            first is not None
            and (usable is None or usable[first])
            and _under(loads, weights, first, scale)
        ):
            return first
        for owner in self.walk(key):
            if (usable is None or usable[owner]) and _under(loads, weights, owner, scale):
                return owner
        return None

    def _choose_both(
        self,
        key: int,
        loads: Sequence[float],
        usable: Sequence[bool] | None,
        weights: Sequence[float],
        load_factor: float,
        first: int | None,
        unknown: Sequence[float],
    ) -> int | None:
        """``choose`` with every upstream also under its bound over ``unknown``: the first
        under both (``first``, then the walk); when none is, the first under the load bound
        with the fewest untold per weight."""
        scale = _scale(loads, usable, weights, load_factor)
        untold = _scale(unknown, usable, weights, load_factor)
        if scale <= 0.0:
            return None
        best, fewest = None, _INF
        for owner in ([first] if first is not None else []) + self.walk(key):
            if (usable is None or usable[owner]) and _under(loads, weights, owner, scale):
                if _under(unknown, weights, owner, untold):
                    return owner
                if unknown[owner] / weights[owner] < fewest:
                    best, fewest = owner, unknown[owner] / weights[owner]
        return best


def _scale(
    loads: Sequence[float], usable: Sequence[bool] | None, weights: Sequence[float], factor: float
) -> float:
    """``load_factor`` x (the usable upstreams' load + 1) / their weight (0: none usable)."""
    if usable is None:
        total, weight = sum(loads), sum(weights)
    else:
        total = sum(load for load, ok in zip(loads, usable, strict=True) if ok)
        weight = sum(w for w, ok in zip(weights, usable, strict=True) if ok)
    return factor * (total + 1.0) / weight if weight > 0.0 else 0.0


def _under(loads: Sequence[float], weights: Sequence[float], index: int, scale: float) -> bool:
    return loads[index] < math.ceil(scale * weights[index] - 1e-9)
