"""Affinity's placement on a shared store (``routing.placing``) decides as the balancer's own
choice would with the same counts: the candidates' order (the prompt's last upstream first,
then the ring's walk, the ejected left out, the region's first) with the store's rule
(``store.capacity.bounded_choice``) gives the upstream ``Balancer.affinity`` picks from its
own counts. So one process on ``memory://`` and a fleet on Redis place alike."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.config.schema import Upstream
from gateway.routing.balancer import Balancer
from gateway.routing.placing import placed, placement
from gateway.store.capacity import UNCAPPED, bounded_choice


@settings(max_examples=300, deadline=None)
@given(
    loads=st.lists(st.integers(0, 6), min_size=2, max_size=6),
    weights=st.lists(st.sampled_from([1.0, 1.0, 2.0, 0.5]), min_size=6, max_size=6),
    ejected=st.sets(st.integers(0, 5), max_size=2),
    regions=st.lists(st.sampled_from(["eu", "us"]), min_size=6, max_size=6),
    region=st.sampled_from([None, "eu"]),
    factor=st.sampled_from([1.0, 1.25, 2.0]),
    key=st.integers(0, 2**64 - 1),
    before=st.sampled_from([None, 0, 1, 2, 3, 4, 5]),
)
def test_the_store_s_rule_on_the_placement_order_is_the_balancer_s_choice(
    loads: list[int],
    weights: list[float],
    ejected: set[int],
    regions: list[str],
    region: str | None,
    factor: float,
    key: int,
    before: int | None,
) -> None:
    n = len(loads)
    pool = tuple(
        Upstream(name=f"u{i}", url="http://x:1", weight=weights[i], region=regions[i])
        for i in range(n)
    )
    clock = FakeClock()
    balancer = Balancer(clock, random.Random(0))
    for upstream, load in zip(pool, loads, strict=True):
        for _ in range(load):
            balancer.acquire(upstream)
    for i in ejected:
        if i < n:
            balancer.failed(pool[i])
    prefixes = (7, 8)
    if before is not None and before < n:
        balancer.history.record(prefixes[:1], pool[before].name)
    found = placement(balancer, pool, (), region, factor, key, prefixes)
    assert found is not None
    candidates, order_weights, _, _ = found
    held = [balancer.state(u.name).in_flight for u in candidates]
    index = bounded_choice(held, [UNCAPPED] * len(held), (factor, order_weights))
    local = balancer.affinity(pool, (), region, factor, key, prefixes)
    assert local is not None and index >= 0
    assert candidates[index] is local
    placed(balancer, found, candidates[index])
    assert balancer.history.where(prefixes) == (8, local.name)
