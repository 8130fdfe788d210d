"""Which thresholds a usage crosses (pure): every token and money limit, 50/80/100 %, the period
each belongs to, and the event data; when a key's expiry notice is due."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.alerts.thresholds import (
    DAY,
    Limits,
    UsageSnapshot,
    crossed,
    expiry_notice,
    limits_of,
)
from gateway.config.schema import Plan
from gateway.records import KeyRecord, Spent, Verdict

DAY1, MONTH = 20261206, 202612


def table(limits: Limits, used: UsageSnapshot) -> list[tuple[str, int, str]]:
    return [(c.limit, c.percent, c.period) for c in crossed(limits, used)]


@pytest.mark.parametrize(
    ("used", "percents"),
    [(0, []), (499, []), (500, [50]), (799, [50]), (800, [50, 80]), (1000, [50, 80, 100]),
     (5000, [50, 80, 100])],
)  # fmt: skip
def test_percents_of_a_daily_limit(used: int, percents: list[int]) -> None:
    got = table(Limits(daily_tokens=1000), UsageSnapshot(DAY1, MONTH, day_tokens=used))
    assert got == [("dailyLimit", p, "2026-12-06") for p in percents]


def test_every_limit_has_its_name_and_period() -> None:
    limits = Limits(
        daily_tokens=10,
        monthly_tokens=10,
        tpm=10,
        daily_budget_micros=10,
        monthly_budget_micros=10,
        plan_monthly_tokens=10,
        plan_monthly_budget_micros=10,
        plan_tpm=10,
    )
    used = UsageSnapshot(DAY1, MONTH, 29_000_000, *([5] * 8))
    got = {(c.limit, c.period, c.window, c.owner_wide, c.money) for c in crossed(limits, used)}
    assert got == {
        ("dailyLimit", "2026-12-06", "20261206", False, False),
        ("monthlyLimit", "2026-12", "202612", False, False),
        ("tpmLimit", "minute", "m29000000", False, False),
        ("dailyBudgetUsd", "2026-12-06", "20261206", False, True),
        ("monthlyBudgetUsd", "2026-12", "202612", False, True),
        ("planMonthlyTokens", "2026-12", "202612", True, False),
        ("planMonthlyBudgetUsd", "2026-12", "202612", True, True),
        ("planTpm", "minute", "m29000000", True, False),
    }


def test_event_data_money_in_dollars_and_owner_limits_name_the_owner() -> None:
    limits = Limits(daily_budget_micros=10_000_000, plan_monthly_tokens=1000)
    used = UsageSnapshot(DAY1, MONTH, day_cost_micros=8_125_000, owner_month_tokens=1000)
    by_name = {c.limit: c for c in crossed(limits, used) if c.percent == 80}
    assert by_name["dailyBudgetUsd"].data("k1", "acme") == {
        "keyId": "k1",
        "owner": "acme",
        "limit": "dailyBudgetUsd",
        "percent": 80,
        "used": 8.125,
        "max": 10.0,
        "unit": "usd",
        "period": "2026-12-06",
    }
    assert by_name["planMonthlyTokens"].data("k1", "acme") == {
        "owner": "acme",
        "limit": "planMonthlyTokens",
        "percent": 80,
        "used": 1000,
        "max": 1000,
        "unit": "tokens",
        "period": "2026-12",
    }


def test_markers_tell_subjects_periods_and_percents_apart() -> None:
    limits = Limits(daily_tokens=100, tpm=100)
    a = crossed(limits, UsageSnapshot(DAY1, MONTH, 1, day_tokens=100, tpm_tokens=100))
    b = crossed(limits, UsageSnapshot(DAY1 + 1, MONTH, 2, day_tokens=100, tpm_tokens=100))
    markers = {c.marker("k1") for c in a + b} | {c.marker("k2") for c in a}
    assert len(markers) == len(a) + len(b) + len(a)  # all different
    assert all(c.ttl() > 86_400 for c in a if c.period != "minute")
    assert all(60 < c.ttl() < 600 for c in a if c.period == "minute")


def test_no_limit_or_a_zero_limit_crosses_nothing() -> None:
    assert crossed(Limits(), UsageSnapshot(DAY1, MONTH, day_tokens=10**9)) == []
    assert crossed(Limits(daily_tokens=0), UsageSnapshot(DAY1, MONTH, day_tokens=5)) == []


def test_limits_of_a_key_and_plan() -> None:
    record = KeyRecord(
        id="k",
        owner="o",
        key_hash="0" * 64,
        daily_limit=5,
        monthly_limit=7,
        tpm_limit=11,
        daily_budget=2_500_000,
        monthly_budget=9_000_000,
    )
    plan = Plan("p", monthly_tokens=9, tpm=13, monthly_budget_usd=12.5)
    assert limits_of(record, plan) == Limits(
        daily_tokens=5,
        monthly_tokens=7,
        tpm=11,
        daily_budget_micros=2_500_000,
        monthly_budget_micros=9_000_000,
        plan_monthly_tokens=9,
        plan_monthly_budget_micros=12_500_000,
        plan_tpm=13,
    )
    assert limits_of(KeyRecord(id="k", owner="o", key_hash="0" * 64), Plan("p")) == Limits()


def test_a_snapshot_from_an_admitting_verdict() -> None:
    spent = Spent(1, 2, 3, 4, 5, 6, 7, 8)
    verdict = Verdict(True, day=DAY1, month=MONTH, now=1_796_000_123.5, spent=spent)
    assert UsageSnapshot.of(verdict) == UsageSnapshot(
        day=DAY1,
        month=MONTH,
        minute=1_796_000_123 // 60,
        day_tokens=1,
        month_tokens=2,
        owner_month_tokens=3,
        tpm_tokens=4,
        owner_tpm_tokens=5,
        day_cost_micros=6,
        month_cost_micros=7,
        owner_month_cost_micros=8,
    )
    assert UsageSnapshot.of(Verdict(True, day=DAY1, month=MONTH)) is None


@given(st.integers(1, 10**12), st.integers(0, 10**13))
def test_a_percent_is_crossed_exactly_when_used_reaches_it(limit: int, used: int) -> None:
    got = [
        c.percent for c in crossed(Limits(daily_tokens=limit), UsageSnapshot(DAY1, MONTH, 0, used))
    ]
    assert got == [p for p in (50, 80, 100) if used * 100 >= limit * p]


@pytest.mark.parametrize(
    ("left_days", "notice"),
    [(30, None), (7.01, None), (7, 7), (3, 7), (1.01, 7), (1, 1), (0.01, 1), (0, None), (-2, None)],
)
def test_expiry_notice(left_days: float, notice: int | None) -> None:
    now = 1_800_000_000.0
    assert expiry_notice(now + left_days * DAY, now) == notice
