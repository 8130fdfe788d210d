"""Balancing: least in-flight per weight, region first, ejection with a growing cool-down, and
panic mode when every upstream is ejected."""

from __future__ import annotations

from gateway.clock import FakeClock
from gateway.config.schema import Upstream
from gateway.routing.balancer import MAX_EJECT, Balancer


def up(name: str, weight: float = 1.0, region: str | None = None, cap: int = 256) -> Upstream:
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
