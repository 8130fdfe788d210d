"""Balancing: least in-flight per weight (ties at random), round robin, random, affinity with
bounded loads, worker signals, region first, ejection with a growing cool-down, panic mode when
every upstream is ejected, and discovered members standing for their entry."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from gateway.clock import FakeClock
from gateway.config.schema import ModelRouting, Upstream
from gateway.routing.balancer import MAX_EJECT, RING_UPSTREAMS, Balancer
from gateway.routing.ring import key_hash
from gateway.routing.state import CHOSEN_FOR


def up(
    name: str, weight: float = 1.0, region: str | None = None, cap: int | None = 256
) -> Upstream:
    return Upstream(
        name=name, url=f"http://{name}:1", weight=weight, region=region, max_concurrency=cap
    )


def test_least_in_flight_per_weight() -> None:
    b = Balancer(FakeClock())
    a, c = up("a", weight=2), up("c")
    picks = []
    for _ in range(6):
        chosen = b.pick([a, c])
        assert chosen is not None
        b.acquire(chosen)
        picks.append(chosen.name)
    assert picks.count("a") == 4 and picks.count("c") == 2


def test_region_is_preferred_then_falls_back() -> None:
    b = Balancer(FakeClock())
    oslo, bergen = up("oslo", region="oslo"), up("bergen", region="bergen")
    for _ in range(3):
        chosen = b.pick([oslo, bergen], region="bergen")
        assert chosen is bergen
        b.acquire(chosen)
    b.failed(bergen)
    assert b.pick([oslo, bergen], region="bergen") is oslo


def test_full_upstreams_are_skipped() -> None:
    b = Balancer(FakeClock())
    small = up("small", cap=1)
    b.acquire(small)
    assert b.pick([small]) is None


def test_cool_down_grows_is_capped_and_never_overflows() -> None:
    clock = FakeClock()
    b = Balancer(clock)
    a, c = up("a"), up("c")
    b.failed(a)
    assert b.pick([a, c]) is c
    clock.advance(1.01)
    assert b.healthy(a)
    for _ in range(5000):  # an upstream down for hours
        b.failed(a)
    assert not b.healthy(a)
    clock.advance(MAX_EJECT + 0.01)
    assert b.healthy(a)
    b.succeeded(a)
    assert b.state("a").failures == 0


def test_panic_mode_when_all_are_ejected() -> None:
    b = Balancer(FakeClock())
    a = up("a")
    b.failed(a)
    assert b.pick([a]) is a  # a one-upstream model is not black-holed by one failure
    assert b.pick([a], exclude=["a"]) is None


# --- policies ------------------------------------------------------------------------------


def seeded(clock: FakeClock | None = None) -> Balancer:
    return Balancer(clock or FakeClock(), random.Random(7))


def test_ties_are_broken_at_random() -> None:
    """Sequential requests (nothing in flight) to idle upstreams share the traffic: before,
    the first upstream took all 20."""
    b = seeded()
    pool = [up("a"), up("b"), up("c")]
    picks = Counter(b.pick(pool).name for _ in range(300))  # type: ignore[union-attr]
    assert set(picks) == {"a", "b", "c"} and min(picks.values()) > 60, picks


def test_ties_never_beat_a_less_loaded_upstream() -> None:
    b = seeded()
    a, c = up("a", cap=None), up("c", cap=None)  # uncapped: a choice is counted at once
    b.acquire(a)
    assert all(b.pick([a, c]) is c for _ in range(50))


def test_round_robin_takes_turns_and_skips_the_ejected() -> None:
    b = seeded()
    pool = [up("a"), up("b"), up("c")]
    rr = ModelRouting(policy="round_robin")
    names = [b.pick(pool, routing=rr, model="m").name for _ in range(6)]  # type: ignore[union-attr]
    assert names == ["a", "b", "c", "a", "b", "c"]
    b.failed(pool[1])
    names = [b.pick(pool, routing=rr, model="m").name for _ in range(4)]  # type: ignore[union-attr]
    assert "b" not in names and set(names) == {"a", "c"}


def test_random_follows_the_weights() -> None:
    b = seeded()
    pool = [up("a", weight=3), up("b")]
    picks = Counter(
        b.pick(pool, routing=ModelRouting(policy="random")).name  # type: ignore[union-attr]
        for _ in range(4000)
    )
    assert 0.7 < picks["a"] / 4000 < 0.8, picks


@pytest.mark.parametrize("policy", ["least_loaded", "round_robin", "random", "affinity"])
def test_a_worker_with_a_queue_is_passed_over_by_every_policy(policy: str) -> None:
    clock = FakeClock()
    b = seeded(clock)
    pool = [up("a", cap=None), up("b", cap=None)]
    b.observe("a", waiting=4, running=8, cache=0.9, until=clock.monotonic() + 3)
    routing = ModelRouting(policy=policy, load_factor=1.0)  # type: ignore[arg-type]
    for key in range(40):
        chosen = b.pick(pool, routing=routing, key=key_hash(b"%d" % key), model="m")
        assert chosen is not None and chosen.name == "b"


def test_stale_signals_fall_back_to_in_flight_counts() -> None:
    clock = FakeClock()
    b = seeded(clock)
    a, c = up("a"), up("c")
    b.observe("a", waiting=50, running=50, cache=1.0, until=clock.monotonic() + 3)
    assert b.pick([a, c]) is c
    clock.advance(3.01)
    b.acquire(c)
    assert b.pick([a, c]) is a  # the queue it once had is no longer believed


def test_running_requests_from_other_processes_count() -> None:
    clock = FakeClock()
    b = seeded(clock)
    a, c = up("a"), up("c")
    b.observe("a", waiting=0, running=6, cache=0.1, until=clock.monotonic() + 3)
    b.acquire(c)
    b.acquire(c)
    assert b.pick([a, c]) is c  # 2 of ours on c, but a runs 6 (sent by other gateways)


def test_affinity_keeps_a_key_on_its_upstream_until_the_bound() -> None:
    b = seeded()
    pool = [up("a", cap=None), up("b", cap=None), up("c", cap=None)]
    routing = ModelRouting(policy="affinity", load_factor=1.25)
    key = key_hash(b"conversation 1")
    home = b.pick(pool, routing=routing, key=key)
    assert home is not None
    assert all(b.pick(pool, routing=routing, key=key) is home for _ in range(20))
    held = [home]
    b.acquire(home)  # one in flight: its bound with 2 in flight is ceil(1.25 * 2 / 3) = 1
    other = b.pick(pool, routing=routing, key=key)
    assert other is not None and other is not home
    b.acquire(other)
    held.append(other)
    for u in held:
        b.release(u)
    assert b.pick(pool, routing=routing, key=key) is home


@pytest.mark.parametrize("policy", ["least_loaded", "affinity"])
def test_choices_under_a_cap_count_until_their_requests_are_counted(policy: str) -> None:
    """Under a cap on a shared store a lease's round trip comes between the choice and the
    count (``routing.capacity``): requests chosen meanwhile see the ones before, so a burst
    spreads as it would counted at once; a choice never counted is forgotten after
    ``CHOSEN_FOR`` seconds. (Before: all eight went to one upstream.)"""
    clock = FakeClock()
    b = seeded(clock)
    pool = [up(f"u{i}") for i in range(4)]
    routing = ModelRouting(policy=policy, load_factor=1.25)  # type: ignore[arg-type]
    key = key_hash(b"one conversation")
    burst = [b.pick(pool, routing=routing, key=key) for _ in range(8)]
    counts = Counter(u.name for u in burst if u is not None)
    assert max(counts.values()) <= math.ceil(1.25 * 8 / 4), counts
    for u in burst:
        assert u is not None
        b.acquire(u)  # the leases came back: counted, no longer pending
    assert all(b.state(u.name).load(clock.monotonic()) == counts[u.name] for u in pool)
    for u in burst:
        assert u is not None
        b.release(u)
    b.pick(pool, routing=routing, key=key)  # never counted (its request went elsewhere)
    clock.advance(CHOSEN_FOR)
    assert all(b.state(u.name).load(clock.monotonic()) == 0 for u in pool)


def test_affinity_prefers_the_region_and_skips_the_ejected() -> None:
    b = seeded()
    pool = [up(f"u{i}", region="oslo" if i < 2 else "bergen") for i in range(4)]
    routing = ModelRouting(policy="affinity")
    for i in range(50):
        chosen = b.pick(pool, region="bergen", routing=routing, key=key_hash(b"%d" % i))
        assert chosen is not None and chosen.region == "bergen"
    b.failed(pool[2])
    b.failed(pool[3])
    chosen = b.pick(pool, region="bergen", routing=routing, key=1)
    assert chosen is not None and chosen.region == "oslo"
    for u in pool[:2]:
        b.failed(u)
    assert b.pick(pool, routing=routing, key=1) is not None  # panic: all ejected, one tried


def test_affinity_without_a_key_is_least_loaded() -> None:
    b = seeded()
    a, c = up("a"), up("c")
    b.acquire(a)
    assert b.pick([a, c], routing=ModelRouting(policy="affinity"), key=None) is c


def test_discovered_members_stand_for_their_entry() -> None:
    clock = FakeClock()
    b = seeded(clock)
    entry = up("pool")
    m1, m2 = up("pool@10.0.0.1:80"), up("pool@10.0.0.2:80")
    b.set_members("pool", (m1, m2))
    picks = {b.pick([entry]).name for _ in range(40)}  # type: ignore[union-attr]
    assert picks == {m1.name, m2.name}
    b.failed(m1)
    assert b.healthy(entry)
    b.failed(m2)
    assert not b.healthy(entry)
    b.set_members("pool", None)
    assert b.pick([entry]) is entry


def test_in_flight_counts_every_upstream() -> None:
    b = seeded()
    a, c = up("a"), up("c")
    b.acquire(a)
    b.acquire(c)
    b.acquire(c)
    assert b.in_flight == 3
    b.release(c)
    assert b.in_flight == 2


def test_the_rings_of_passing_pools_are_bounded() -> None:
    """Discovery churn and retries (the tried upstreams left out) make new pools: their rings
    (points and walks, 1.7 MB for 100 upstreams) are kept up to RING_UPSTREAMS upstreams in
    all, the oldest going first, one at a time."""
    b = seeded()
    for i in range(RING_UPSTREAMS):
        b.ring([up(f"gone{i}"), up("a"), up("c")])
    assert len(b._rings) == RING_UPSTREAMS // 3
    assert b._ring_upstreams <= RING_UPSTREAMS


def test_more_pools_than_a_few_dozen_do_not_rebuild_their_rings() -> None:
    """70 pools in turn (many models, any discovered upstream): each ring is built once, not
    on every pick (found by review: the cache was emptied whole at 64, and every pick of 70
    pools in rotation rebuilt a ring, milliseconds each)."""
    b = seeded()
    pools = [[up(f"m{i}-{j}") for j in range(8)] for i in range(70)]
    rings = [b.ring(pool) for pool in pools]
    for _ in range(3):
        assert all(b.ring(pool) is ring for pool, ring in zip(pools, rings, strict=True))
