"""What the routing bench's records say about the bound: the shares of the workers' samples and
arrivals over ceil(load_factor x mean), those a request in transit or requests ending elsewhere
explain, the requests that waited or were served cold, and a slowed worker's share over time."""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from typing import Any

from routing_workload import LOAD_FACTOR

# Seconds from a request's placement to its arrival at its worker, at most (loopback, loaded
# host): an arrival elsewhere within this after an arrival may have been placed before it.
TRANSIT = 0.005


def served_shares(served: list[list[float]]) -> dict[str, float]:
    """Of the requests the workers served: the share that waited in a queue (over 1 ms), their
    mean wait, and the share served cold (under half of the prompt from the cache)."""
    waited = [wait for wait, *_ in served if wait > 0.001]
    cold = sum(1 for _, tokens, hit, *_ in served if hit < tokens / 2)
    count = max(1, len(served))
    return {
        "waited_share": len(waited) / count,
        "wait_mean_ms": 1000 * statistics.mean(waited) if waited else 0.0,
        "cold_share": cold / count,
    }


def over_bound(samples: list[list[float]]) -> tuple[float, list[float]]:
    """Share of the samples with requests in the system where some worker held more than
    ceil(load_factor x mean), and the shares where the most loaded held 1, 2, 3 or more
    requests over that bound."""
    busy = [row for row in samples if sum(row) > 0]
    excess = [0, 0, 0]
    for row in busy:
        over = max(row) - math.ceil(LOAD_FACTOR * sum(row) / len(row))
        if over > 0:
            excess[min(int(over), 3) - 1] += 1
    count = max(1, len(busy))
    return sum(excess) / count, [n / count for n in excess]


def arrivals_over(stats: list[dict[str, Any]], origin: float) -> tuple[float, float, list[float]]:
    """At each arrival, the worker it reached against ceil(load_factor x the fleet's mean) at
    that instant, this request counted (the workers are one process: one moment): the share of
    arrivals over, over by 2 or more, and when (seconds after ``origin``) each over came. What
    consistent hashing with bounded loads bounds is this: a placement; requests ending
    elsewhere afterwards lower the mean under a worker that cannot give its requests back,
    which the samples count too."""
    over = [0, 0]
    count = 0
    times: list[float] = []
    for i, s in enumerate(stats):
        for t, row in zip(s["arrivals"], s.get("placed", ()), strict=False):
            excess = row[i] - math.ceil(LOAD_FACTOR * sum(row) / len(row) - 1e-9)
            count += 1
            over[0] += excess > 0
            over[1] += excess > 1
            if excess > 0:
                times.append(round(t - origin, 3))
    return over[0] / max(1, count), over[1] / max(1, count), sorted(times)


def in_transit(stats: list[dict[str, Any]], origin: float) -> list[float]:
    """Of the arrivals over the bound, when (as ``arrivals_over``) those that the requests
    arriving at other workers within ``TRANSIT`` seconds after them would bring within it:
    requests perhaps placed before them but not yet at their worker, which a placement counts
    and the worker's instant does not (an upper bound of what that explains)."""
    arrivals = sorted((t, i) for i, s in enumerate(stats) for t in s["arrivals"])
    out = []
    for i, s in enumerate(stats):
        for t, row in zip(s["arrivals"], s.get("placed", ()), strict=False):
            if row[i] <= math.ceil(LOAD_FACTOR * sum(row) / len(row) - 1e-9):
                continue
            j = bisect.bisect_right(arrivals, (t, len(stats)))
            later = 0
            while j < len(arrivals) and arrivals[j][0] <= t + TRANSIT:
                later += arrivals[j][1] != i
                j += 1
            if row[i] <= math.ceil(LOAD_FACTOR * (sum(row) + later) / len(row) - 1e-9):
                out.append(round(t - origin, 3))
    return sorted(out)


def departures_only(
    stats: list[dict[str, Any]], samples: list[list[float]], times: list[float]
) -> float:
    """Of the samples over the bound, the share where the busiest worker was within the bound
    at its last arrival before the sample: only requests ending elsewhere put it over."""
    over = within = 0
    for t, row in zip(times, samples, strict=True):
        if not sum(row):
            continue
        bound = math.ceil(LOAD_FACTOR * sum(row) / len(row) - 1e-9)
        w = max(range(len(row)), key=row.__getitem__)
        if row[w] <= bound:
            continue
        over += 1
        arrivals = stats[w]["arrivals"]
        j = bisect.bisect_right(arrivals, t) - 1
        placed = stats[w].get("placed", ())
        if 0 <= j < len(placed):
            prow = placed[j]
            within += prow[w] <= math.ceil(LOAD_FACTOR * sum(prow) / len(prow) - 1e-9)
    return within / over if over else math.nan


def shares(stats: list[dict[str, Any]], origin: float, slow_at: float) -> dict[str, Any]:
    """The slow worker's share of arrivals per 0.5 s; when a second of it (two windows) first
    fell to two thirds of its share before, and its share once settled (3 s to 10 s after)."""
    arrivals = [[t - origin for t in s["arrivals"]] for s in stats]
    end = max(t for a in arrivals for t in a)
    windows = []
    t = 0.0
    while t < end:
        total = sum(1 for a in arrivals for x in a if t <= x < t + 0.5)
        slow = sum(1 for x in arrivals[2] if t <= x < t + 0.5)
        windows.append((t, slow / total if total else 0.0))
        t += 0.5
    before = [s for w, s in windows if 1.0 <= w < slow_at]
    base = statistics.mean(before) if before else 0.0
    seconds = [(w, (a + b) / 2) for (w, a), (_, b) in itertools.pairwise(windows)]
    moved = next((w + 1.0 - slow_at for w, s in seconds if w >= slow_at and s <= base * 2 / 3), -1)
    later = [s for w, s in windows if slow_at + 3 <= w < slow_at + 10]
    return {
        "share_before": base,
        "moved_after_s": moved,
        "share_after": statistics.mean(later) if later else math.nan,
        "windows": windows,
    }
