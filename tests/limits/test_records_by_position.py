"""The per-request records the limiter and the stores build by position (a keyword call of a
record costs a dict per call, ~3x the call): their fields must stay in the order those calls
give them (``limits/limiter.py``, ``limits/windows.py``, ``store/memory.py``)."""

from __future__ import annotations

from dataclasses import fields

from gateway.records import Admission, Settlement, Spent, Verdict


def names(record: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(record))


def test_the_fields_are_in_the_order_the_positional_calls_give() -> None:
    assert names(Admission) == (
        "request_id",
        "key_id",
        "owner",
        "rpm",
        "concurrency",
        "daily",
        "monthly",
        "plan_rpm",
        "plan_monthly",
        "reserve",
        "tpm",
        "daily_budget",
        "monthly_budget",
        "plan_tpm",
        "plan_budget",
        "reserve_cost",
    )
    assert names(Verdict) == (
        "admitted",
        "refused",
        "retry_after",
        "requests_limit",
        "requests_remaining",
        "requests_reset",
        "tokens_limit",
        "tokens_remaining",
        "tokens_reset",
        "day",
        "month",
        "now",
        "spent",
    )
    assert names(Spent) == (
        "day_tokens",
        "month_tokens",
        "owner_month_tokens",
        "minute_tokens",
        "owner_minute_tokens",
        "day_cost",
        "month_cost",
        "owner_month_cost",
    )
    assert names(Settlement) == (
        "admission",
        "day",
        "month",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "error",
        "estimated",
        "finished_at",
        "record",
        "api",
        "cost",
    )
