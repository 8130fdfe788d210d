"""Consistent hashing with bounded loads: no upstream past its bound under any workload, keys
move only to or from an upstream added or removed, and every process agrees on the ring."""

from __future__ import annotations

import math
import os
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from gateway.routing.ring import Ring, key_hash

NAMES = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.@:", min_size=1, max_size=12),
    min_size=1,
    max_size=8,
    unique=True,
)
KEYS = st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=1, max_size=200)


def equal(names: list[str]) -> Ring:
    return Ring(names, [1.0] * len(names))


@given(
    names=NAMES,
    factor=st.floats(min_value=1.0, max_value=3.0),
    weights=st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=8, max_size=8),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 2**64 - 1)), max_size=300),
)
def test_no_upstream_is_given_more_than_its_bound(
    names: list[str], factor: float, weights: list[float], ops: list[tuple[bool, int]]
) -> None:
    """Any sequence of arrivals (keyed) and departures: each arrival lands on an upstream whose
    load, this request included, is at most ceil(load_factor * total * its weight share)."""
    w = weights[: len(names)]
    ring = Ring(names, w)
    loads = [0.0] * len(names)
    usable = [True] * len(names)
    placed: list[int] = []
    for arrive, key in ops:
        if not arrive and placed:
            loads[placed.pop(key % len(placed))] -= 1
            continue
        index = ring.choose(key, loads, usable, w, factor)
        assert index is not None
        loads[index] += 1
        placed.append(index)
        total = sum(loads)
        bound = math.ceil(factor * total * w[index] / sum(w) - 1e-9)
        assert loads[index] <= bound, (loads, index, bound)


@given(names=NAMES, keys=KEYS, extra=st.text(alphabet="xyz", min_size=13, max_size=14))
def test_adding_an_upstream_moves_only_the_keys_it_takes(
    names: list[str], keys: list[int], extra: str
) -> None:
    before, after = equal(names), equal([*names, extra])
    for key in keys:
        old, new = names[before.owner(key)], [*names, extra][after.owner(key)]
        assert new in (old, extra)


@given(names=NAMES.filter(lambda n: len(n) > 1), keys=KEYS, gone=st.integers(0, 7))
def test_removing_an_upstream_moves_only_its_keys(
    names: list[str], keys: list[int], gone: int
) -> None:
    removed = names[gone % len(names)]
    rest = [n for n in names if n != removed]
    before, after = equal(names), equal(rest)
    for key in keys:
        old = names[before.owner(key)]
        if old != removed:
            assert rest[after.owner(key)] == old


@given(names=NAMES, keys=KEYS)
def test_an_ejected_upstream_gives_up_only_its_keys(names: list[str], keys: list[int]) -> None:
    """Skipping an unusable upstream is the same as removing it: the rest keep their keys."""
    ring = equal(names)
    usable = [True] * len(names)
    usable[0] = False
    loads = [0.0] * len(names)
    for key in keys:
        chosen = ring.choose(key, loads, usable, [1.0] * len(names), 1.25)
        if ring.owner(key) != 0:
            assert chosen == ring.owner(key)
        elif len(names) > 1:
            assert chosen is not None and chosen != 0


def test_nothing_usable_is_none() -> None:
    ring = equal(["a", "b"])
    assert ring.choose(1, [0.0, 0.0], [False, False], [1.0, 1.0], 1.25) is None


def test_shares_follow_the_weights() -> None:
    ring = Ring(["a", "b", "c"], [1.0, 1.0, 2.0])
    counts = [0, 0, 0]
    for i in range(20_000):
        counts[ring.owner(key_hash(b"k%d" % i))] += 1
    shares = [c / 20_000 for c in counts]
    assert abs(shares[2] - 0.5) < 0.06 and abs(shares[0] - 0.25) < 0.06, shares


def test_every_process_builds_the_same_ring() -> None:
    """Another interpreter, with another hash seed, places the same keys on the same names."""
    names = ["gpu-a", "gpu-b", "gpu-c", "pool@10.0.0.5:8000"]
    keys = [b"conversation %d" % i for i in range(200)]
    here = [names[equal(names).owner(key_hash(k))] for k in keys]
    code = (
        "from gateway.routing.ring import Ring, key_hash\n"
        f"names = {names!r}\n"
        "ring = Ring(names, [1.0] * len(names))\n"
        f"print(','.join(names[ring.owner(key_hash(b'conversation %d' % i))] for i in range(200)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip().split(",") == here
    assert len(set(here)) == len(names)  # and the keys do spread


@given(
    names=NAMES,
    factor=st.floats(min_value=1.0, max_value=3.0),
    loads=st.lists(st.integers(0, 9), min_size=8, max_size=8),
    unknown=st.lists(st.integers(0, 4), min_size=8, max_size=8),
    key=st.integers(0, 2**64 - 1),
)
def test_untold_placements_never_take_a_request_past_the_load_bound(
    names: list[str], factor: float, loads: list[int], unknown: list[int], key: int
) -> None:
    """Whatever this process has placed without telling the others yet, the upstream chosen
    is under the fleet's load bound (some always is); the untold bound only ranks those."""
    n = len(names)
    ring, load, untold = equal(names), [float(x) for x in loads[:n]], unknown[:n]
    index = ring.choose(key, load, None, ring.weights, factor, None, untold)
    assert index is not None
    assert load[index] < math.ceil(factor * (sum(load) + 1) / n - 1e-9)
