"""The fair queue's order (``limits.fairqueue``): tables of pushes and pops, and a property that
backlogged owners are served in proportion to their shares."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.limits.fairqueue import FairQueue


def drain(q: FairQueue[str]) -> list[str]:
    out = []
    while (entry := q.pop()) is not None:
        out.append(entry.item)
    return out


@pytest.mark.parametrize(
    ("pushes", "order"),
    [
        # one owner: first come, first served
        ([("a", 1, 0, "a1"), ("a", 1, 0, "a2"), ("a", 1, 0, "a3")], ["a1", "a2", "a3"]),
        # equal shares alternate, whoever queued more first
        (
            [("a", 1, 0, "a1"), ("a", 1, 0, "a2"), ("b", 1, 0, "b1"), ("b", 1, 0, "b2")],
            ["a1", "b1", "a2", "b2"],
        ),
        # share 2 gets two turns for the other's one
        (
            [("a", 1, 0, f"a{i}") for i in range(1, 3)]
            + [("b", 2, 0, f"b{i}") for i in range(1, 5)],
            ["b1", "a1", "b2", "b3", "a2", "b4"],
        ),
        # a higher priority goes first, whatever its share and arrival
        ([("a", 4, 0, "a1"), ("b", 1, 1, "b1"), ("a", 4, 0, "a2")], ["b1", "a1", "a2"]),
    ],
)
def test_order(pushes: list[tuple[str, float, int, str]], order: list[str]) -> None:
    q: FairQueue[str] = FairQueue()
    for owner, share, priority, item in pushes:
        q.push(owner, share, priority, item)
    assert drain(q) == order


def test_removed_request_frees_its_place_and_counts() -> None:
    q: FairQueue[str] = FairQueue()
    a1 = q.push("a", 1, 0, "a1")
    q.push("a", 1, 0, "a2")
    q.push("b", 1, 0, "b1")
    assert (len(q), q.queued("a")) == (3, 2)
    assert q.remove(a1) and not q.remove(a1)
    assert (len(q), q.queued("a")) == (2, 1)
    assert drain(q) == ["b1", "a2"]


def test_a_removed_last_request_hands_its_owner_time_back() -> None:
    """An owner whose only request left early is not charged for it: its next one is first."""
    q: FairQueue[str] = FairQueue()
    q.push("b", 1, 0, "b1")
    gone = q.push("a", 1, 0, "a1")
    q.remove(gone)
    q.push("a", 1, 0, "a2")
    assert drain(q) == ["b1", "a2"]
    q2: FairQueue[str] = FairQueue()
    gone = q2.push("a", 1, 0, "x")
    q2.remove(gone)
    q2.push("b", 1, 0, "b1")
    q2.push("a", 1, 0, "a1")
    assert drain(q2) == ["b1", "a1"]  # equal tags: arrival decides, a is not pushed back


def test_idle_owner_gets_no_credit() -> None:
    """An owner that comes back after others were served starts at the virtual time: it does
    not take every slot to catch up."""
    q: FairQueue[str] = FairQueue()
    for i in range(10):
        q.push("a", 1, 0, f"a{i}")
    for _ in range(8):
        q.pop()
    q.push("b", 1, 0, "b0")
    q.push("b", 1, 0, "b1")
    assert drain(q) == ["a8", "b0", "a9", "b1"]


def test_ahead_counts_who_goes_first() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("a", 1, 0, "a1")
    q.push("a", 1, 0, "a2")
    b = q.push("b", 1, 0, "b1")
    assert q.ahead(b) == 1


@given(
    shares=st.lists(st.sampled_from([1.0, 4.0]), min_size=2, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_backlogged_owners_share_by_weight(shares: list[float], seed: int) -> None:
    """Owners that keep requests waiting get slots in proportion to their shares, within ±10 %
    over a long run, whatever the order in which they refill the queue."""
    import random

    rng = random.Random(seed)
    q: FairQueue[int] = FairQueue()
    owners = [f"o{i}" for i in range(len(shares))]
    for owner, share in zip(owners, shares, strict=True):
        for _ in range(rng.randint(1, 5)):
            q.push(owner, share, 0, 0)
    served: Counter[str] = Counter()
    for _ in range(2000):
        entry = q.pop()
        assert entry is not None
        served[entry.owner] += 1
        # the served owner sends another request; others top up at random
        q.push(entry.owner, entry.share, 0, 0)
        other = rng.choice(owners)
        if q.queued(other) < 3:
            q.push(other, shares[owners.index(other)], 0, 0)
    total = sum(shares)
    for owner, share in zip(owners, shares, strict=True):
        expected = 2000 * share / total
        assert abs(served[owner] - expected) <= 0.1 * expected, (served, shares)
