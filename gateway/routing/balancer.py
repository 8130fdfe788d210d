"""Choosing an upstream for a request, by the model's policy, region first, skipping upstreams
that are full or ejected after failures.

- ``least_loaded`` (default): least load per weight, ties broken at random (so idle upstreams
  share sequential traffic rather than the first taking it all).
- ``round_robin``: each usable upstream in turn; ``random``: at random, by weight.
- ``affinity``: consistent hashing with bounded loads on the request's key (``routing.ring``),
  except that a prompt extending one sent before goes where that one went while it is under
  its bound (``routing.history``): a conversation the bound moved stays moved. Where this
  process moved a prompt is told to the others (``routing.placements``), and theirs to it.

An upstream's load is the fleet's requests in flight to it: this process's own (exact) plus the
other processes' as they last told it (``routing.loads``); while its worker signals are fresh
(``routing.signals``), plus what the worker held beyond both when last read (requests from
elsewhere) and the share of its KV cache in use. Affinity also keeps the placements the others
were not told of yet under their own bound (``Ring.choose``'s ``unknown``). On a shared store
affinity's placement is the store's, exact across processes (``routing.placing``: this pick
gives it the candidates' order); the bound here stands in while the store fails. Every policy
passes over a worker with a queue while one without is usable.

Per-process state; an upstream keeps its state across reloads as long as its name stays.
Discovered upstreams (``discover: dns``) stand in for the entry they were found for.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence

from gateway.clock import Clock, SystemClock
from gateway.config.schema import ModelRouting, Upstream
from gateway.routing.history import History
from gateway.routing.loads import Loads
from gateway.routing.placements import Placements
from gateway.routing.retry import RetryBudget
from gateway.routing.ring import Ring
from gateway.routing.state import UpstreamState, full

BASE_EJECT = 1.0
MAX_EJECT = 60.0
_AWAY = 1e12  # added to the score of an upstream outside the requested region
_INF = float("inf")
_DEFAULT = ModelRouting()


_View = tuple[Ring, list[UpstreamState], bool]  # a pool's ring, its states, any capped
_Order = tuple[list[Upstream], list[float]]  # upstreams in a key's order, their weights


# Upstreams over all the rings a process keeps (about 17 KB each with its walks: ~35 MB).
RING_UPSTREAMS = 2048


class Balancer:
    """Tracks in-flight counts, failures and signals of every upstream of this process."""

    def __init__(self, clock: Clock, rng: random.Random | None = None) -> None:
        self._clock = clock
        # The clock read per request: the system's own function when it is the system clock.
        self._now = time.monotonic if isinstance(clock, SystemClock) else clock.monotonic
        self.rng = rng or random.Random()  # ties and the random policy; tests seed it
        self._state: dict[str, UpstreamState] = {}
        self._members: dict[str, tuple[Upstream, ...]] = {}  # discovered, by entry name
        self._rings: dict[tuple[tuple[str, float], ...], Ring] = {}
        self._ring_upstreams = 0  # upstreams over the rings kept (their size: RING_UPSTREAMS)
        # By the identity of a route's pool: its ring and its upstreams' states.
        self._views: dict[int, tuple[Sequence[Upstream], _View]] = {}
        self._ejected_until = 0.0  # no upstream is ejected after this (monotonic)
        self._turns: dict[str, int] = {}  # round_robin's position, per model
        self.in_flight = 0  # requests holding an upstream, all upstreams together
        self.budget = RetryBudget()
        self.history = History()  # where affinity sent each prompt
        self.placements = Placements(self.history)  # told to (and by) the other processes
        self.loads = Loads(self, self._now)  # the fleet's counts, told and heard
        self._contested: set[int] = set()  # ids of route pools whose upstreams are contested
        self.on_release: Callable[[Upstream], None] | None = None  # ``routing.capacity``'s
        # Affinity's placements are the shared store's (``routing.placing``): its pick on a
        # pool with slots gives the candidates, the store the choice.
        self.placing = False
        # ``routing.placing``'s orders of the upstreams per ring point, by pool identity.
        self.orders: dict[int, tuple[Sequence[Upstream], dict[int, _Order]]] = {}

    def state(self, name: str) -> UpstreamState:
        state = self._state.get(name)
        if state is None:
            state = self._state[name] = UpstreamState()
        return state

    def healthy(self, upstream: Upstream) -> bool:
        members = self._members.get(upstream.name) if self._members else None
        if members:
            return any(self.healthy(m) for m in members)
        return self.state(upstream.name).ejected_until <= self._clock.monotonic()

    def pick(
        self,
        pool: Sequence[Upstream],
        exclude: Iterable[str] = (),
        region: str | None = None,
        routing: ModelRouting = _DEFAULT,
        key: int | None = None,
        model: str = "",
        prefixes: Sequence[int] = (),
    ) -> Upstream | None:
        """The upstream of ``pool`` the policy chooses, or None if every one is excluded or
        full. ``key``: the request's affinity key, ``prefixes`` its prompt's
        (``routing.affinity``); ``model``: whose round_robin turn it is.

        Ejected upstreams are passed over while another is usable; when every one is ejected the
        least recently failed is tried anyway (Envoy's "panic" mode), so a one-upstream model is
        not black-holed by one failure.
        """
        policy = routing.policy
        if policy == "affinity" and key is not None:
            return self.affinity(pool, exclude, region, routing.load_factor, key, prefixes)
        if self._members:
            pool = self.expand(pool)
        if exclude:
            pool = [u for u in pool if u.name not in exclude]
        if policy == "least_loaded" or policy == "affinity":
            now = self._clock.monotonic()
            chosen = self._least_loaded(pool, region, now) or self._least_loaded(pool, region, _INF)
        else:
            chosen = self._spread(pool, region, policy == "round_robin", model)
        if len(pool) > 1 and id(pool) not in self._contested:
            self._contest(pool)
        if chosen is not None and chosen.max_concurrency is not None:
            self.state(chosen.name).choose(self._now())
        return chosen

    def _contest(self, pool: Sequence[Upstream]) -> None:
        """Every upstream of ``pool`` (more than one) is chosen among others: its load is told
        (``routing.loads``). A route's pool (a tuple, as long-lived as its route) is marked
        once."""
        for upstream in pool:
            self.state(upstream.name).contested = True
        if isinstance(pool, tuple):
            if len(self._contested) >= 1024:
                self._contested.clear()
            self._contested.add(id(pool))

    def _least_loaded(
        self, pool: Sequence[Upstream], region: str | None, now: float
    ) -> Upstream | None:
        best: Upstream | None = None
        best_score = _INF
        ties = 0
        states = self._state
        for upstream in pool:
            state = states.get(upstream.name) or self.state(upstream.name)
            if state.ejected_until > now or full(state, upstream):
                continue
            if state.signals_until > now:
                score = state.in_flight + state.others + state.cache + 1
            else:
                score = state.in_flight + state.told + 1
            if state.chosen:  # (``now`` is infinite in panic: the clock's own for these)
                score += state.pending(self._now())
            score /= upstream.weight
            if region is not None and upstream.region != region:
                score += _AWAY
            if score < best_score:
                best, best_score, ties = upstream, score, 1
            elif score == best_score:  # reservoir sampling: each of k ties kept with 1/k
                ties += 1
                if self.rng.random() * ties < 1.0:
                    best = upstream
        return best

    def _usable(self, pool: Sequence[Upstream], now: float) -> list[bool]:
        usable = []
        for upstream in pool:
            state = self.state(upstream.name)
            usable.append(state.ejected_until <= now and not full(state, upstream))
        return usable

    def _candidates(self, pool: Sequence[Upstream], region: str | None) -> list[Upstream]:
        """The usable upstreams of the best tier: in the region before outside it, without a
        queue before with one; ejected ones only when nothing else is left."""
        now = self._clock.monotonic()
        usable = self._usable(pool, now)
        if not any(usable):
            usable = self._usable(pool, _INF)
        tiers: list[list[Upstream]] = [[], [], [], []]
        for upstream, ok in zip(pool, usable, strict=True):
            if ok:
                away = region is not None and upstream.region != region
                tiers[2 * away + self.state(upstream.name).queued(now)].append(upstream)
        return next((tier for tier in tiers if tier), [])

    def _spread(
        self, pool: Sequence[Upstream], region: str | None, in_turn: bool, model: str
    ) -> Upstream | None:
        candidates = self._candidates(pool, region)
        if not candidates:
            return None
        if in_turn:
            turn = self._turns.get(model, 0)
            self._turns[model] = turn + 1
            return candidates[turn % len(candidates)]
        return self.rng.choices(candidates, [u.weight for u in candidates])[0]

    def affinity(
        self,
        pool: Sequence[Upstream],
        exclude: Iterable[str],
        region: str | None,
        load_factor: float,
        key: int,
        prefixes: Sequence[int],
    ) -> Upstream | None:
        """``pick`` by the ``affinity`` policy, as ``routing.chain`` asks per request.

        The usual case is inlined here, as it runs per request: a route's own pool (nothing
        discovered, excluded, capped, ejected or weighted apart, no region asked), where the
        bound is one number for every upstream (``Ring.choose``'s) and only the upstreams
        the key's walk meets are looked at. Everything else goes through ``_affinity``."""
        known = self._views.get(id(pool))
        if (
            known is None
            or known[0] is not pool
            or exclude
            or region is not None
            or self._members
            or known[1][2]
        ):
            return self._affinity(pool, exclude, region, load_factor, key, prefixes)
        now = self._now()
        ring, states, _ = known[1]
        if now < self._ejected_until or not ring.uniform:
            return self._affinity(pool, exclude, region, load_factor, key, prefixes)
        sent, found, went = self.history.sent, None, None
        for prefix in reversed(prefixes):  # ``History.where``: the longest prefix sent before
            went = sent.get(prefix)
            if went is not None:
                found = prefix
                break
        total = 0.0
        unknown = 0
        for s in states:
            total += s.in_flight + (s.others if s.signals_until > now else s.told)
            unknown += s.unknown
        bound = math.ceil(load_factor * (total + 1.0) / ring.weight * ring.weights[0] - 1e-9)
        untold = (  # nothing untold (nothing shared): every one is under 1
            math.ceil(load_factor * (unknown + 1.0) / ring.weight * ring.weights[0] - 1e-9)
            if unknown
            else 1
        )
        index = ring.names.get(went) if went is not None else None
        if index is not None:
            s = states[index]
            if (
                s.in_flight + (s.others if s.signals_until > now else s.told) >= bound
                or s.unknown >= untold
            ):
                index = None
        if index is None:
            walk = ring.walks[bisect.bisect_left(ring.points, key)]
            for owner in walk:
                s = states[owner]
                if (
                    s.in_flight + (s.others if s.signals_until > now else s.told) < bound
                    and s.unknown < untold
                ):
                    index = owner
                    break
            else:
                return self._affinity(pool, exclude, region, load_factor, key, prefixes)
        chosen = pool[index]
        if prefixes:
            prompt = prefixes[-1]  # ``History.record``
            if found is not None and found != prompt:
                sent.pop(found, None)
            sent[prompt] = chosen.name
            sent.move_to_end(prompt)
            if len(sent) > self.history.capacity:
                sent.popitem(last=False)
            if self.placements.sharing and (found is None or went != chosen.name):
                self._tell(ring, key, found, prompt, index, chosen.name)
        return chosen

    def _tell(
        self, ring: Ring, key: int, found: int | None, prompt: int, index: int, name: str
    ) -> None:
        """Tell the other processes a placement they could not guess: not where this process
        remembered the prompt, nor (nothing remembered) at its ring worker."""
        if found is not None or index != ring.owner(key):
            self.placements.tell(prompt, found, name)

    def _affinity(
        self,
        pool: Sequence[Upstream],
        exclude: Iterable[str],
        region: str | None,
        load_factor: float,
        key: int,
        prefixes: Sequence[int],
    ) -> Upstream | None:
        if self._members:
            pool = self.expand(pool)
        if exclude:
            pool = [u for u in pool if u.name not in exclude]
        ring, states, capped = self._view(pool)
        found = went = None
        sent = self.history.where(prefixes) if prefixes else None
        if sent is not None:
            found, went = sent
        now = self._now()
        loads = [s.load(now) for s in states]
        usable: list[bool] | None = None  # every one
        if capped:
            usable = [
                s.ejected_until <= now and (u.max_concurrency or _INF) > s.in_flight
                for s, u in zip(states, pool, strict=True)
            ]
        elif now < self._ejected_until:
            usable = [s.ejected_until <= now for s in states]
        if region is not None:
            local = [
                (usable is None or usable[i]) and u.region == region for i, u in enumerate(pool)
            ]
            if any(local):
                usable = local  # the region's upstreams first, others only when none is usable
        last = ring.names.get(went) if went is not None else None
        unknown = [s.unknown for s in states]
        index = ring.choose(key, loads, usable, ring.weights, load_factor, last, unknown)
        if index is None:  # panic: every upstream ejected (or full): the ring among the rest
            index = ring.choose(key, loads, self._usable(pool, _INF), ring.weights, load_factor)
        if index is None:
            return None
        chosen = pool[index]
        if chosen.max_concurrency is not None:
            states[index].choose(now)
        if prefixes:
            self.history.record(prefixes, chosen.name, found)
            if self.placements.sharing and (found is None or went != chosen.name):
                self._tell(ring, key, found, prefixes[-1], index, chosen.name)
        return chosen

    def _view(self, pool: Sequence[Upstream]) -> _View:
        """The pool's ring, its upstreams' states and whether any has a cap, gathered once per
        pool (a model's own pool is found by identity: nothing to gather per request)."""
        known = self._views.get(id(pool))
        if known is not None and known[0] is pool:
            return known[1]
        view = (
            self.ring(pool),
            [self.state(u.name) for u in pool],
            any(u.max_concurrency is not None for u in pool),
        )
        if len(pool) > 1:
            self._contest(pool)
        if isinstance(pool, tuple):  # a route's pool lives as long as its route
            if len(self._views) >= 1024:
                self._views.clear()
            self._views[id(pool)] = (pool, view)
        return view

    def ring(self, pool: Sequence[Upstream]) -> Ring:
        """The pool's ring, built once per set of names and weights."""
        shape = tuple((u.name, u.weight) for u in pool)
        ring = self._rings.get(shape)
        if ring is None:
            # Discovery churn and retries' pools (the tried ones left out) must not grow this
            # without bound: a ring of n upstreams holds about n x 100 points and their walks
            # (70 KB for 4 upstreams, 1.7 MB for 100). The oldest go one at a time, by their
            # size: emptying them all at once made every pick rebuild a ring (milliseconds)
            # once more pools were in use than the bound held.
            ring = self._rings[shape] = Ring([n for n, _ in shape], [w for _, w in shape])
            self._ring_upstreams += len(shape)
            while self._ring_upstreams > RING_UPSTREAMS and len(self._rings) > 1:
                oldest = next(iter(self._rings))
                self._ring_upstreams -= len(oldest)
                del self._rings[oldest]
        return ring

    # -- discovery --------------------------------------------------------------------------
    def expand(self, pool: Iterable[Upstream]) -> list[Upstream]:
        """``pool`` with every discovered entry replaced by the upstreams found for it."""
        out: list[Upstream] = []
        for upstream in pool:
            members = self._members.get(upstream.name)
            if members is None:
                out.append(upstream)
            else:
                out.extend(members)
        return out

    def set_members(self, name: str, members: tuple[Upstream, ...] | None) -> None:
        """The upstreams entry ``name`` resolved to (None: it stands for itself again)."""
        if members is None:
            self._members.pop(name, None)
        else:
            self._members[name] = members

    def members(self, name: str) -> tuple[Upstream, ...] | None:
        return self._members.get(name)

    def forget(self, name: str) -> bool:
        """Drop a vanished upstream's state once nothing is in flight to it."""
        state = self._state.get(name)
        if state is not None and state.in_flight > 0:
            return False
        if self._state.pop(name, None) is not None:
            self._views.clear()  # they hold the state dropped
        return True

    # -- the request path -------------------------------------------------------------------
    def acquire(self, upstream: Upstream) -> None:
        state = self._state.get(upstream.name) or self.state(upstream.name)
        state.in_flight += 1
        self.in_flight += 1
        if state.chosen:
            state.counted()
        if self.loads.sharing and state.contested:
            state.unknown += 1
            self.loads.change(upstream.name)

    def release(self, upstream: Upstream) -> None:
        state = self._state.get(upstream.name) or self.state(upstream.name)
        state.in_flight -= 1
        self.in_flight -= 1
        if self.loads.sharing and state.contested:
            if state.unknown > state.in_flight:
                state.unknown = state.in_flight
            self.loads.change(upstream.name)
        if self.on_release is not None:
            self.on_release(upstream)

    def handover(self, upstream: Upstream) -> None:
        """A slot counted for a waiting request, uncounted just before its handler counts it
        (``routing.capacity``): no release, nothing is woken."""
        state = self.state(upstream.name)
        state.in_flight -= 1
        self.in_flight -= 1
        if self.loads.sharing and state.contested:
            state.unknown = max(0, state.unknown - 1)
            self.loads.change(upstream.name)

    # -- what ``routing.loads`` asks and tells ----------------------------------------------
    def count(self, name: str) -> int:
        state = self._state.get(name)
        return state.in_flight if state is not None else 0

    def held(self) -> list[str]:
        return [n for n, state in self._state.items() if state.in_flight and state.contested]

    def telling(self, names: Iterable[str]) -> list[tuple[str, int]]:
        states = self._state
        return [(n, states[n].unknown) for n in names if n in states and states[n].unknown]

    def known(self, told: list[tuple[str, int]]) -> None:
        for name, count in told:
            state = self._state.get(name)
            if state is not None:
                state.unknown = max(0, state.unknown - count)

    def told(self, name: str, total: float) -> None:
        """The other processes' requests in flight to ``name`` now total ``total``."""
        state = self.state(name)
        if total > state.told:  # told now of requests the worker may have shown: not twice
            state.beyond = max(0.0, state.beyond - (total - state.told))
        state.told = total
        state.others = total + state.beyond

    def succeeded(self, upstream: Upstream) -> None:
        state = self._state.get(upstream.name) or self.state(upstream.name)
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
        self._ejected_until = max(self._ejected_until, state.ejected_until)

    def observe(
        self, name: str, waiting: float, running: float, cache: float, until: float
    ) -> None:
        """A worker's signals, believed until ``until`` (monotonic)."""
        state = self.state(name)
        state.waiting, state.running, state.cache = waiting, running, cache
        state.beyond = max(0.0, running + waiting - state.in_flight - state.told)
        state.others = state.told + state.beyond
        state.signals_until = until
