"""Affinity's placement in the lease script (``capacity_acquire.lua``): a bounded acquisition
takes the first of its upstreams, in its order, with a free slot and under ``ceil(load_factor
x (T + 1) x its weight share)`` over every process's live leases, T and the shares over those
with a free slot. Decided by Redis in one batch exactly as one by one, and as the Python rule
(``store.capacity.bounded_choice``) that the memory twin applies."""

from __future__ import annotations

import asyncio
import itertools
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.store.capacity import UNCAPPED, Bound, bounded_choice
from gateway.store.capacity_memory import MemoryLeaseStore
from gateway.store.capacity_redis import RedisLeaseStore
from tests.redis_server import RedisServer
from tests.store.test_admission_batches import evalsha_calls
from tests.store.test_capacity_batches import live_leases, seed, warm

HYPOTHESIS = settings(
    deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
UPSTREAMS = ("a", "b", "c")
LONG = 60.0

# One acquisition: its upstreams in its order, the model it may not pass, and its bound (None:
# a plain lease, as a capped upstream's).
Ask = tuple[list[str], str | None, Bound | None]

_weights = st.sampled_from([1.0, 2.0, 0.5, 3.0])
_factor = st.sampled_from([1.0, 1.25, 1.5, 2.0, 1.1])


@st.composite
def _ask(draw: st.DrawFn) -> Ask:
    ups = draw(st.lists(st.sampled_from(UPSTREAMS), min_size=1, max_size=3, unique=True))
    queue = draw(st.sampled_from([None, None, "idle", "busy"]))
    bound = None
    if draw(st.booleans()) or draw(st.booleans()):
        bound = (draw(_factor), [draw(_weights) for _ in ups])
    return ups, queue, bound


_caps = st.fixed_dictionaries({u: st.sampled_from([0, 1, 2, 3, 5, UNCAPPED]) for u in UPSTREAMS})
_seeded = st.fixed_dictionaries(
    {u: st.tuples(st.integers(0, 4), st.integers(0, 2)) for u in UPSTREAMS}
)


def reference(
    asks: list[Ask], caps: dict[str, int], live: dict[str, int]
) -> tuple[list[int], dict[str, int]]:
    """One after the other: a plain ask the first with a free slot, a bounded one by
    ``bounded_choice``; none while its model's queue has someone waiting."""
    held, got = dict(live), []
    for ups, queue, bound in asks:
        index = -1
        if queue != "busy":
            counts, limits = [held[u] for u in ups], [caps[u] for u in ups]
            if bound is None:
                free = (i for i, (n, c) in enumerate(zip(counts, limits, strict=True)) if n < c)
                index = next(free, -1)
            else:
                index = bounded_choice(counts, limits, bound)
        if index >= 0:
            held[ups[index]] += 1
        got.append(index)
    return got, held


def test_the_rule_keeps_every_upstream_under_its_bound_and_always_finds_one() -> None:
    """With a load factor of at least 1 and a free slot somewhere, one is taken, and it is
    under ``ceil(f x (T + 1) x w / W)``: the first such in the order."""
    for held in itertools.product(range(5), repeat=3):
        for factor in (1.0, 1.25, 2.0):
            weights = [1.0, 2.0, 1.0]
            index = bounded_choice(list(held), [UNCAPPED] * 3, (factor, weights))
            scale = factor * (sum(held) + 1) / sum(weights)
            under = [n < math.ceil(scale * w - 1e-9) for n, w in zip(held, weights, strict=True)]
            assert index == under.index(True)


@HYPOTHESIS
@given(asks=st.lists(_ask(), min_size=1, max_size=12), caps=_caps, seeded=_seeded)
async def test_a_bounded_batch_decides_as_one_by_one_and_as_the_rule(
    redis_process: RedisServer,
    asks: list[Ask],
    caps: dict[str, int],
    seeded: dict[str, tuple[int, int]],
) -> None:
    """Asks of one turn (bounded and plain, mixed) in one EVALSHA, and the same asks each in
    a call of its own: the same answers, the same leases, and the rule's (expired leases, a
    dead process's, not counted)."""
    expected, counts = reference(asks, caps, {u: live for u, (live, _) in seeded.items()})
    outcomes = []
    for together in (True, False):
        assert redis_process.call("FLUSHALL") == "OK"
        store = RedisLeaseStore(redis_process.url, 5000, LONG)
        try:
            await warm(store)
            await seed(store, seeded)
            calls = [
                ([(u, caps[u]) for u in ups], f"l{i}", q, b) for i, (ups, q, b) in enumerate(asks)
            ]
            before = evalsha_calls(redis_process)
            if together:
                got = list(
                    await asyncio.gather(
                        *(store.acquire_now(c, lease, q, bound=b) for c, lease, q, b in calls)
                    )
                )
                assert evalsha_calls(redis_process) - before == 1
            else:
                got = [await store.acquire(c, lease, q, b) for c, lease, q, b in calls]
            assert got == expected
            leases = await live_leases(store)
            assert {u: len(held) for u, held in leases.items()} == counts
            outcomes.append(leases)
        finally:
            await store.close()
    assert outcomes[0] == outcomes[1]


@HYPOTHESIS
@given(asks=st.lists(_ask(), min_size=1, max_size=12), caps=_caps)
async def test_the_memory_twin_decides_as_the_rule(asks: list[Ask], caps: dict[str, int]) -> None:
    expected, counts = reference(
        [(u, None, b) for u, _, b in asks], caps, dict.fromkeys(UPSTREAMS, 0)
    )
    store = MemoryLeaseStore(FakeClock(), LONG)
    got = [
        await store.acquire([(u, caps[u]) for u in ups], f"l{i}", None, b)
        for i, (ups, _, b) in enumerate(asks)
    ]
    assert got == expected
    assert {u: await store.held(u) for u in UPSTREAMS} == counts


async def test_a_bounded_lease_is_never_kept_idle(redis_process: RedisServer) -> None:
    """Room to spare is never told for a bounded acquisition: an idle lease kept by a process
    would count in every later bound."""
    assert redis_process.call("FLUSHALL") == "OK"
    store = RedisLeaseStore(redis_process.url, 5000, LONG)
    try:
        await warm(store)
        plain = await store.acquire_now([("a", 64)], "p", None, True)
        bounded = await store.acquire_now([("b", 64)], "q", None, True, (1.25, [1.0]))
        assert plain >= 1024 and bounded == 0
    finally:
        await store.close()


async def test_on_a_cluster_a_bounded_batch_decides_as_the_rule(cluster_url: str) -> None:
    """Every lease set in one slot: the same script, the same answers on a Cluster."""
    store = RedisLeaseStore(cluster_url, 5000, LONG)
    try:
        caps = {"a": UNCAPPED, "b": 2, "c": UNCAPPED}
        bound: Bound = (1.25, [1.0, 1.0, 2.0])
        asks: list[Ask] = [(["a", "b", "c"], None, bound)] * 9 + [(["b", "a"], None, None)] * 2
        expected, counts = reference(asks, caps, dict.fromkeys(UPSTREAMS, 0))
        got = await asyncio.gather(
            *(
                store.acquire_now([(u, caps[u]) for u in ups], f"l{i}", q, bound=b)
                for i, (ups, q, b) in enumerate(asks)
            )
        )
        assert list(got) == expected
        assert {u: len(held) for u, held in (await live_leases(store)).items()} == counts
    finally:
        await store.close()
