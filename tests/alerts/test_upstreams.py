"""When a process says an upstream is down or up again (pure): down after ``down_after`` seconds
without an answer, said on every look while down; up at the first answer, until it is said."""

from __future__ import annotations

from gateway.alerts.upstreams import UpstreamViews


def looks(views: UpstreamViews, *states: tuple[float, bool]) -> list[list[str]]:
    """The changes of upstream "u" at each (time, answering) look, down_after 10 s."""
    out = []
    for now, healthy in states:
        views.tell("u", healthy)
        out.append([state for _, state in views.changes(now, 10.0)])
    return out


def test_down_after_ten_seconds_without_an_answer_then_up() -> None:
    views = UpstreamViews()
    assert looks(views, (0, False), (9.9, False), (10, False), (11, False), (12, True)) == [
        [], [], ["down"], ["down"], ["up"]
    ]  # fmt: skip
    assert views.since("u") is None
    assert looks(views, (13, True)) == [["up"]]  # not said yet (the store did not take it)
    views.said_up("u")
    assert looks(views, (14, True), (15, True)) == [[], []]


def test_a_blip_is_no_outage() -> None:
    views = UpstreamViews()
    got = looks(views, (0, False), (5, True), (6, False), (15.9, False), (16, False))
    assert got == [[], [], [], [], ["down"]]  # the count starts again after an answer
    assert views.since("u") == 6


def test_upstreams_no_longer_configured_are_forgotten() -> None:
    views = UpstreamViews()
    views.replace([("u", False), ("v", False)])
    views.changes(0, 1.0)
    assert sorted(views.changes(1, 1.0)) == [("u", "down"), ("v", "down")]
    views.replace([("v", True)])
    assert views.changes(2, 1.0) == [("v", "up")] and views.since("u") is None
