"""Window math: periods, rollovers and the header forms."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.limits import windows


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_periods_and_rollovers() -> None:
    t = at("2026-12-31T23:59:59.5")
    assert windows.day_id(t) == 20261231
    assert windows.month_id(t) == 202612
    assert windows.seconds_to_midnight(t) == pytest.approx(0.5)
    assert windows.seconds_to_month_end(t) == pytest.approx(0.5)
    assert windows.day_id(t + 1) == 20270101
    leap = at("2028-02-28T12:00:00")
    assert windows.seconds_to_month_end(leap) == pytest.approx(36 * 3600)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (1, "1s"), (59.2, "1m0s"), (360, "6m0s"), (3723, "1h2m3s"), (0, "0ms")],
)
def test_reset_text(seconds: float, text: str) -> None:
    assert windows.reset_text(seconds) == text


@pytest.mark.parametrize(("seconds", "after"), [(0.01, 1), (1.0, 1), (1.2, 2), (59.9, 60)])
def test_retry_seconds_round_up_to_at_least_one(seconds: float, after: int) -> None:
    assert windows.retry_seconds(seconds) == after


def test_days_back() -> None:
    assert windows.days_back(at("2026-03-01T10:00:00"), 3) == [20260227, 20260228, 20260301]
    assert windows.day_text(20260301) == "2026-03-01"


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_the_calendar_cache_agrees_with_the_functions(epoch: float) -> None:
    calendar = windows.Calendar()
    for t in (epoch, epoch + 0.5, epoch + 86400 * 40, epoch - 3600):  # forward, back, far
        day, month, to_midnight, to_month = calendar.periods(t)
        assert (day, month) == (windows.day_id(t), windows.month_id(t))
        assert to_midnight == pytest.approx(windows.seconds_to_midnight(t), abs=1e-6)
        assert to_month == pytest.approx(windows.seconds_to_month_end(t), abs=1e-6)
