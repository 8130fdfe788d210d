"""``gateway.tally`` gives the metrics what direct calls would have: the same samples, whatever
the values (bucket edges, zeros, many children), so that a change in ``prometheus_client``'s
internals that the bulk path reads fails here."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.metrics import DURATION_BUCKETS
from gateway.tally import Tally

EDGES = st.sampled_from([*DURATION_BUCKETS, 0.0])
VALUES = st.one_of(EDGES, st.floats(min_value=0, max_value=4000, allow_nan=False))
EVENTS = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), VALUES, st.integers(min_value=0, max_value=10**6)),
    max_size=60,
)


def _metrics() -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["l"], registry=registry)
    histogram = Histogram("h", "h", ["l"], buckets=DURATION_BUCKETS, registry=registry)
    return registry, counter, histogram


def _samples(registry: CollectorRegistry) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    )


@settings(max_examples=200)
@given(EVENTS, st.integers(min_value=0, max_value=3))
def test_a_flushed_tally_is_what_direct_calls_give(
    events: list[tuple[str, float, int]], flushes: int
) -> None:
    direct, d_counter, d_histogram = _metrics()
    bulk, b_counter, b_histogram = _metrics()
    tally = Tally()
    for i, (label, value, amount) in enumerate(events):
        d_counter.labels(label).inc(amount)
        d_histogram.labels(label).observe(value)
        tally.inc(b_counter.labels(label), amount)
        tally.observe(b_histogram.labels(label), value)
        if flushes and i % (flushes + 1) == 0:
            tally.flush()  # flushed in the middle too: nothing counted twice or lost
    tally.flush()
    tally.flush()  # a flush with nothing gathered adds nothing
    got, expected = _samples(bulk), _samples(direct)
    assert [s[:2] for s in got] == [s[:2] for s in expected]
    for (name, _, value), (_, _, wanted) in zip(got, expected, strict=True):
        # a sum added in another order may differ in its last bits; every count is exact
        assert value == (pytest.approx(wanted) if name.endswith("_sum") else wanted), name


def test_nothing_reaches_the_metrics_before_a_flush() -> None:
    registry, counter, histogram = _metrics()
    tally = Tally()
    tally.inc(counter.labels("a"), 3)
    tally.observe(histogram.labels("a"), 0.2)
    assert ("c_total", (("l", "a"),), 0.0) in _samples(registry)
    tally.flush()
    assert ("c_total", (("l", "a"),), 3.0) in _samples(registry)
    assert ("h_bucket", (("l", "a"), ("le", "0.25")), 1.0) in _samples(registry)
