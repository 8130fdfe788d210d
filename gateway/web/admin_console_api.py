"""The read-only admin routes the console needs beyond the admin API, under ``/admin/console/``
(so behind the admin token like everything under ``/admin/``):

- ``GET /admin/console/overview``: what the console fills its forms from (plans, models,
  permissions, the owners this process knows of) and the tracing exporter's counts;
- ``GET /admin/console/usage?owner=&period=&keyId=&model=``: an owner's usage per UTC day
  (requests, tokens, cost, errors, latency p50/p95), by model and by key;
- ``GET /admin/console/upstreams``: every upstream's health, ejection and requests in flight;
- ``GET /admin/console/refusals``: the recent refusals and their count by reason.

Upstream state, recent refusals and tracing counts are this process's: with several workers,
the one that answered. The store keeps no index of owners, so "known owners" are those the
config names (declared keys, the demo key) and those seen in recent refusals; the console adds
any owner the operator names.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway import __version__
from gateway.config.schema import PERMISSIONS, Config
from gateway.limits import windows
from gateway.records import KeyRecord, Merge, UsageDay
from gateway.runtime import Runtime
from gateway.usage import PERIODS, of_model, percentile, sum_buckets, summary, usage_cost
from gateway.web.keys_api import acting_owner, period_param
from gateway.web.respond import json_response


def known_owners(runtime: Runtime) -> list[str]:
    config = runtime.config
    owners = {k.owner for k in config.keys.static}
    if config.keys.demo:
        owners.add("demo")
    owners.update(runtime.refusals.owners())
    return sorted(owners)


def overview(runtime: Runtime) -> dict[str, Any]:
    config = runtime.config
    return {
        "version": __version__,
        "tokenRequired": config.admin.token is not None,
        "defaultPlan": config.default_plan,
        "plans": [
            {"name": p.name, "maxKeys": p.max_keys, "monthlyTokens": p.monthly_tokens, "rpm": p.rpm}
            for p in config.plans.values()
        ],
        "models": sorted(config.models),
        "permissions": sorted(PERMISSIONS),
        "owners": known_owners(runtime),
        "tracing": runtime.tracer.stats(),
    }


def daily(config: Config, days: list[int], rows: list[UsageDay]) -> list[dict[str, Any]]:
    """One entry per day of ``days`` (oldest first), zeros where nothing was used."""
    by_day: dict[str, list[UsageDay]] = defaultdict(list)
    for row in rows:
        by_day[row.date].append(row)
    out = []
    for day in days:
        date = windows.day_text(day)
        day_rows = by_day.get(date, [])
        requests = sum(r.requests for r in day_rows)
        errors = sum(r.errors for r in day_rows)
        buckets = sum_buckets(day_rows)
        out.append(
            {
                "date": date,
                "requests": requests,
                "inputTokens": sum(r.prompt_tokens for r in day_rows),
                "outputTokens": sum(r.completion_tokens for r in day_rows),
                "cost": round(usage_cost(config, day_rows), 6),
                "errors": errors,
                "errorRate": round(errors / requests, 4) if requests else 0.0,
                "p50Ms": percentile(buckets, 0.5),
                "p95Ms": percentile(buckets, 0.95),
            }
        )
    return out


def by_key(config: Config, keys: list[KeyRecord], rows: list[UsageDay]) -> list[dict[str, Any]]:
    names = {k.id: k.name for k in keys}
    grouped: dict[str, list[UsageDay]] = defaultdict(list)
    for row in rows:
        grouped[row.key_id].append(row)
    out = [
        {
            "keyId": key_id,
            "name": names.get(key_id, ""),
            "requests": sum(r.requests for r in key_rows),
            "inputTokens": sum(r.prompt_tokens for r in key_rows),
            "outputTokens": sum(r.completion_tokens for r in key_rows),
            "cost": round(usage_cost(config, key_rows), 6),
            "errors": sum(r.errors for r in key_rows),
        }
        for key_id, key_rows in grouped.items()
    ]
    return sorted(out, key=lambda k: (-k["requests"], k["keyId"]))


def upstreams(runtime: Runtime) -> list[dict[str, Any]]:
    config, balancer = runtime.config, runtime.balancer
    now = runtime.clock.monotonic()
    serving: dict[str, list[str]] = defaultdict(list)
    for model in config.models.values():
        for name in model.upstreams:
            serving[name].append(model.name)
    out = []
    for upstream in config.upstreams.values():
        state = balancer.state(upstream.name)
        parts = urlsplit(upstream.url)
        out.append(
            {
                "name": upstream.name,
                "url": parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl(),
                "region": upstream.region,
                "weight": upstream.weight,
                "maxConcurrency": upstream.max_concurrency,
                "inFlight": state.in_flight,
                "failures": state.failures,
                "healthy": balancer.healthy(upstream),
                "ejectedForSeconds": round(max(0.0, state.ejected_until - now), 1),
                "models": sorted(serving.get(upstream.name, [])),
            }
        )
    return out


def refusals(runtime: Runtime) -> dict[str, Any]:
    recent = runtime.refusals.to_api()
    counted = Counter(r["reason"] for r in recent)
    since_start: dict[str, int] = {}
    runtime.metrics.tally.flush()  # this process's last second in the counts read
    for family in runtime.metrics.refusals.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                since_start[sample.labels["reason"]] = int(sample.value)
    return {
        "recent": recent,
        "byReason": [{"reason": r, "count": n} for r, n in counted.most_common()],
        "sinceStart": [
            {"reason": r, "count": n} for r, n in sorted(since_start.items(), key=lambda i: -i[1])
        ],
    }


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """Register the ``/admin/console/...`` routes."""

    async def get_overview(request: web.Request) -> web.StreamResponse:
        return json_response(overview(runtime))

    async def get_usage(request: web.Request) -> web.StreamResponse:
        owner = str(acting_owner(None, request.query.get("owner"), required=True))
        period = period_param(request)
        keys = await runtime.lifecycle.list(owner)
        key_id = request.query.get("keyId") or None
        if key_id is not None:
            await runtime.lifecycle.get(owner, key_id)  # 404 for a key not the owner's
        key_ids = [key_id] if key_id is not None else [k.id for k in keys]
        days = windows.days_back(runtime.clock.time(), PERIODS[period])
        # Summed as read (a row per day or key, model and API is kept, not every row read).
        per_day, per_key = Merge(by_key=False, by_day=True), Merge(by_key=True, by_day=False)

        def both(rows: list[UsageDay]) -> None:
            per_day.add(rows)
            per_key.add(rows)

        await runtime.lifecycle.usage(owner, key_ids, days[0], days[-1], both)
        rows = of_model(runtime.router, per_day.rows, request.query.get("model"))
        keyed = of_model(runtime.router, per_key.rows, request.query.get("model"))
        config = runtime.config
        return json_response(
            {
                "owner": owner,
                **summary(config, period, rows),
                "daily": daily(config, days, rows),
                "byKey": by_key(config, keys, keyed),
            }
        )

    async def get_upstreams(request: web.Request) -> web.StreamResponse:
        return json_response(upstreams(runtime))

    async def get_refusals(request: web.Request) -> web.StreamResponse:
        return json_response(refusals(runtime))

    router = app.router
    router.add_get("/admin/console/overview", get_overview, allow_head=False)
    router.add_get("/admin/console/usage", get_usage, allow_head=False)
    router.add_get("/admin/console/upstreams", get_upstreams, allow_head=False)
    router.add_get("/admin/console/refusals", get_refusals, allow_head=False)
