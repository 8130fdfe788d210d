"""The request path's counts and observations, added to their metrics in bulk.

With several worker processes (``prometheus_client``'s multiprocess mode) every ``inc`` or
``observe`` writes to a file shared by the workers, under a lock: measured 6 µs an ``inc`` and
11 µs an ``observe`` on this project's 2-CPU machine, and a request made five of those writes.
So the request path adds here instead (a dict update), and ``flush`` adds what gathered to the
metrics whenever no request is open in the process (the edge keeps ``open``: so a process
that is not saturated adds each count at once, as before), every second (with the access log),
before ``/metrics`` is rendered in this process, and at exit. Only while a process stays busy
may a scrape miss up to its last second, never a count.

A histogram's observations are kept as its bucket counts and sum, and go in as those: the same
series ``observe`` would have made, one write a bucket touched instead of two writes an
observation (``test_tally`` holds the two equal, so a change of ``prometheus_client``'s
internals read here fails there).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any


class Tally:
    """Counter increments and histogram observations of this process, not yet in the
    metrics. Keys are labelled children (``metric.labels(...)``), made by the caller."""

    __slots__ = ("_counts", "_observed", "open")

    def __init__(self) -> None:
        self.open = 0  # requests begun and not ended in this process (the edge counts them)
        self._counts: dict[Any, float] = {}  # counter child → amount to add
        self._observed: dict[Any, list[float]] = {}  # histogram child → [sum, per bucket…]

    def inc(self, child: Any, amount: float = 1.0) -> None:
        counts = self._counts
        counts[child] = counts.get(child, 0.0) + amount

    def observe(self, child: Any, value: float) -> None:
        pending = self._observed.get(child)
        bounds = child._upper_bounds  # ascending, the last +Inf
        if pending is None:
            pending = self._observed[child] = [0.0] * (len(bounds) + 1)
        pending[0] += value
        pending[bisect_left(bounds, value) + 1] += 1  # the first bucket whose bound ≥ value

    def flush(self) -> None:
        """Add everything gathered to the metrics."""
        counts, self._counts = self._counts, {}
        for child, amount in counts.items():
            child.inc(amount)
        observed, self._observed = self._observed, {}
        for child, pending in observed.items():
            child._sum.inc(pending[0])
            for bucket, count in zip(child._buckets, pending[1:], strict=True):
                if count:
                    bucket.inc(count)
