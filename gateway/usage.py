"""Usage reports from the store's per-key, per-model, per-day rows: a key's daily
usage and request history, and an owner's summary with cost and latency percentiles."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gateway.config.schema import Config
from gateway.limits import windows
from gateway.records import LATENCY_BOUNDS_MS, UsageDay

if TYPE_CHECKING:
    from gateway.routing.router import Router

PERIODS = {"7d": 7, "30d": 30, "90d": 90}


def percentile(buckets: list[int], fraction: float) -> float:
    """The latency (ms) under which ``fraction`` of requests fell, interpolated in its bucket."""
    total = sum(buckets)
    if total == 0:
        return 0.0
    rank = fraction * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            low = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0
            high = LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else low * 2
            return round(low + (high - low) * (rank - seen) / count, 1)
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])


def sum_buckets(rows: Iterable[UsageDay]) -> list[int]:
    out = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for row in rows:
        for i, count in enumerate(row.latency_buckets):
            out[i] += count
    return out


def key_usage(key_id: str, days: list[int], rows: list[UsageDay]) -> dict[str, Any]:
    by_day: dict[str, dict[str, int]] = {
        windows.day_text(d): {"requests": 0, "promptTokens": 0, "completionTokens": 0, "errors": 0}
        for d in days
    }
    for row in rows:
        day = by_day.get(row.date)
        if day is not None:
            day["requests"] += row.requests
            day["promptTokens"] += row.prompt_tokens
            day["completionTokens"] += row.completion_tokens
            day["errors"] += row.errors
    daily: list[dict[str, Any]] = [
        {"date": date, **v, "totalTokens": v["promptTokens"] + v["completionTokens"]}
        for date, v in by_day.items()
    ]
    totals = {
        name: sum(int(d[name]) for d in daily)
        for name in ("requests", "promptTokens", "completionTokens", "totalTokens", "errors")
    }
    return {"keyId": key_id, "days": len(days), "totals": totals, "daily": daily}


def key_requests(rows: list[UsageDay], limit: int) -> list[dict[str, Any]]:
    by_day: dict[str, list[UsageDay]] = defaultdict(list)
    for row in rows:
        by_day[row.date].append(row)
    out = []
    for date in sorted(by_day, reverse=True)[:limit]:
        day = by_day[date]
        requests = sum(r.requests for r in day)
        latency = sum(r.latency_ms_total for r in day)
        out.append(
            {
                "date": date,
                "requests": requests,
                "tokens": sum(r.prompt_tokens + r.completion_tokens for r in day),
                "errors": sum(r.errors for r in day),
                "avgLatencyMs": round(latency / requests, 1) if requests else 0.0,
            }
        )
    return out


def usage_cost(config: Config, rows: Iterable[UsageDay]) -> float:
    """What rows cost at their models' prices (a model no longer configured costs nothing)."""
    total = 0.0
    for row in rows:
        model = config.models.get(row.model)
        if model is not None:
            pricing = model.pricing
            total += (
                row.prompt_tokens * pricing.input_per_mtok
                + row.completion_tokens * pricing.output_per_mtok
            ) / 1e6
    return total


def _group(config: Config, rows: list[UsageDay], name: str, by: str) -> list[dict[str, Any]]:
    """Rows summed per ``by`` (an attribute of the rows), as ``{name: value, totals...}``."""
    groups: dict[str, list[UsageDay]] = defaultdict(list)
    for row in rows:
        groups[getattr(row, by)].append(row)
    return [
        {
            name: value,
            "requests": sum(r.requests for r in group),
            "inputTokens": sum(r.prompt_tokens for r in group),
            "outputTokens": sum(r.completion_tokens for r in group),
            "cost": round(usage_cost(config, group), 6),
            "errors": sum(r.errors for r in group),
        }
        for value, group in sorted(groups.items())
    ]


def summary(config: Config, period: str, rows: list[UsageDay]) -> dict[str, Any]:
    models = _group(config, rows, "model", "model")
    requests = sum(m["requests"] for m in models)
    buckets = sum_buckets(rows)
    return {
        "period": period,
        "totalRequests": requests,
        "inputTokens": sum(m["inputTokens"] for m in models),
        "outputTokens": sum(m["outputTokens"] for m in models),
        "cost": round(sum(m["cost"] for m in models), 6),
        "latency": {"p50Ms": percentile(buckets, 0.5), "p95Ms": percentile(buckets, 0.95)},
        "errorRate": round(sum(m["errors"] for m in models) / requests, 4) if requests else 0.0,
        "byModel": models,
        "byApi": _group(config, rows, "api", "api"),
    }


def of_model(router: Router, rows: list[UsageDay], model: str | None) -> list[UsageDay]:
    """The rows of ``model`` (by its name or an alias the router resolves), or all of them."""
    if not model:
        return rows
    route = router.resolve(model)
    name = route.name if route is not None else model
    return [r for r in rows if r.model == name]
