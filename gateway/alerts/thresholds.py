"""Which usage thresholds a key or its owner has crossed: 50, 80 and 100 % of every token and
money limit, each named as the API names it (``dailyLimit``, ``planMonthlyBudgetUsd``, …) and
tied to its period (a UTC day, a calendar month, or the minute of a tokens-per-minute limit).

``crossed`` takes the limits and the amounts used and returns every threshold at or past which
the usage stands; the alert service sends each once per period. Money is integer micro-dollars
here, as in the store; it becomes dollars only in an event's body. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config.schema import Plan
from gateway.limits.money import micros
from gateway.records import KeyRecord, Verdict

PERCENTS = (50, 80, 100)
MICROS = 1_000_000
EXPIRY_DAYS = (7, 1)  # key.expiring is sent this many days before a key's expiry
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The token and money limits of one key and its owner's plan; None: no such limit."""

    daily_tokens: int | None = None  # dailyLimit
    monthly_tokens: int | None = None  # monthlyLimit
    tpm: int | None = None  # tpmLimit
    daily_budget_micros: int | None = None  # dailyBudgetUsd
    monthly_budget_micros: int | None = None  # monthlyBudgetUsd
    plan_monthly_tokens: int | None = None  # the plan's monthly_tokens, owner-wide
    plan_monthly_budget_micros: int | None = None  # the plan's monthly_budget_usd
    plan_tpm: int | None = None  # the plan's tpm, owner-wide


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    """What a key and its owner have used, as the store counted it at an admission (the
    reservations of requests in flight included). ``day`` is YYYYMMDD and ``month`` YYYYMM, the
    store's periods; ``minute`` the epoch minute (epoch seconds // 60) of the tpm window."""

    day: int
    month: int
    minute: int = 0
    day_tokens: int = 0
    month_tokens: int = 0
    owner_month_tokens: int = 0
    day_cost_micros: int = 0
    month_cost_micros: int = 0
    owner_month_cost_micros: int = 0
    tpm_tokens: int = 0
    owner_tpm_tokens: int = 0

    @staticmethod
    def of(verdict: Verdict) -> UsageSnapshot | None:
        """What an admitting verdict says the counters hold (None: it says nothing)."""
        spent = verdict.spent
        if spent is None:
            return None
        return UsageSnapshot(
            day=verdict.day,
            month=verdict.month,
            minute=int(verdict.now // 60),
            day_tokens=spent.day_tokens,
            month_tokens=spent.month_tokens,
            owner_month_tokens=spent.owner_month_tokens,
            day_cost_micros=spent.day_cost,
            month_cost_micros=spent.month_cost,
            owner_month_cost_micros=spent.owner_month_cost,
            tpm_tokens=spent.minute_tokens,
            owner_tpm_tokens=spent.owner_minute_tokens,
        )


@dataclass(frozen=True, slots=True)
class Crossing:
    """One threshold at or past which the usage stands. ``period`` is what the event says
    (``2026-12-06``, ``2026-12``, ``minute``); ``window`` tells one period from the next (for a
    tpm limit, which minute)."""

    limit: str
    percent: int
    used: int
    max: int
    period: str
    window: str
    owner_wide: bool = False
    money: bool = False

    def marker(self, subject: str) -> str:
        """What makes this crossing once per period: the subject (key id or owner), the limit,
        the period and the percent."""
        return f"{subject}|{self.limit}|{self.window}|{self.percent}"

    def data(self, key_id: str, owner: str) -> dict[str, Any]:
        """The ``usage.threshold`` event's data: money in dollars, tokens as counted."""
        subject = {"owner": owner} if self.owner_wide else {"keyId": key_id, "owner": owner}
        return {
            **subject,
            "limit": self.limit,
            "percent": self.percent,
            "used": round(self.used / MICROS, 6) if self.money else self.used,
            "max": round(self.max / MICROS, 6) if self.money else self.max,
            "unit": "usd" if self.money else "tokens",
            "period": self.period,
        }

    def ttl(self) -> float:
        """How long the once-marker must outlive the crossing: past the end of its period."""
        if self.window.startswith("m"):
            return 180.0
        return 3 * 86_400.0 if len(self.window) == 8 else 40 * 86_400.0


def day_text(day: int) -> str:
    return f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d}"


def month_text(month: int) -> str:
    return f"{month // 100:04d}-{month % 100:02d}"


def limits_of(record: KeyRecord, plan: Plan) -> Limits:
    """The limits that alerts watch, read from a key and its owner's plan."""
    return Limits(
        daily_tokens=record.daily_limit,
        monthly_tokens=record.monthly_limit,
        tpm=record.tpm_limit,
        daily_budget_micros=record.daily_budget,
        monthly_budget_micros=record.monthly_budget,
        plan_monthly_tokens=plan.monthly_tokens,
        plan_monthly_budget_micros=micros(plan.monthly_budget_usd),
        plan_tpm=plan.tpm,
    )


_Row = tuple[str, int | None, int, str, bool, bool]


def _rows(limits: Limits, used: UsageSnapshot) -> tuple[_Row, ...]:
    """(name, limit, used, period, owner-wide, money) of every limit."""
    return (
        ("dailyLimit", limits.daily_tokens, used.day_tokens, "day", False, False),
        ("monthlyLimit", limits.monthly_tokens, used.month_tokens, "month", False, False),
        ("tpmLimit", limits.tpm, used.tpm_tokens, "minute", False, False),
        ("dailyBudgetUsd", limits.daily_budget_micros, used.day_cost_micros, "day", False, True),
        (
            "monthlyBudgetUsd",
            limits.monthly_budget_micros,
            used.month_cost_micros,
            "month",
            False,
            True,
        ),
        (
            "planMonthlyTokens",
            limits.plan_monthly_tokens,
            used.owner_month_tokens,
            "month",
            True,
            False,
        ),
        (
            "planMonthlyBudgetUsd",
            limits.plan_monthly_budget_micros,
            used.owner_month_cost_micros,
            "month",
            True,
            True,
        ),
        ("planTpm", limits.plan_tpm, used.owner_tpm_tokens, "minute", True, False),
    )


def _period(kind: str, used: UsageSnapshot) -> tuple[str, str]:
    """(the period as the event says it, the window id that tells one period from the next)."""
    if kind == "day":
        return day_text(used.day), str(used.day)
    if kind == "month":
        return month_text(used.month), str(used.month)
    return "minute", f"m{used.minute}"


def crossed(limits: Limits, used: UsageSnapshot) -> list[Crossing]:
    """Every (limit, percent) with used ≥ percent % of the limit, lowest percent first."""
    out: list[Crossing] = []
    for name, limit, amount, kind, owner_wide, money in _rows(limits, used):
        if limit is None or limit <= 0 or amount * 2 < limit:  # below 50 %: the common case
            continue
        period, window = _period(kind, used)
        out.extend(
            Crossing(name, percent, amount, limit, period, window, owner_wide, money)
            for percent in PERCENTS
            if amount * 100 >= limit * percent
        )
    return out


def expiry_notice(expires_at: float, now: float) -> int | None:
    """Which ``key.expiring`` notice is due (7 or 1 days before), or None (more than 7 days
    left, or expired already). A key that has 1 day left gets only the 1-day notice."""
    left = expires_at - now
    if left <= 0:
        return None
    due = [days for days in EXPIRY_DAYS if left <= days * DAY]
    return min(due) if due else None
