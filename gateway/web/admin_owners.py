"""``GET /admin/owners/:owner`` on the admin listener: an owner's plan, its keys and this month's
usage against the plan (what ``gateway owners show`` prints).

The plan is the one set with ``PUT /admin/owners/:owner`` (``admin_api``), else ``default_plan``
(``planSource`` says which). Usage is the tokens and requests settled this UTC month by the
owner's existing keys; the plan's own counter also holds the reservations of requests in flight.
Behind the admin token like everything under ``/admin/`` (the listener's middleware checks it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from gateway.config.schema import Config, Plan
from gateway.errors import StoreUnavailable
from gateway.limits import money, windows
from gateway.records import KeyRecord, UsageDay
from gateway.runtime import Runtime
from gateway.store.base import StoreError
from gateway.usage import usage_cost
from gateway.web.keys_api import acting_owner
from gateway.web.respond import json_response


async def _stored_plan(runtime: Runtime, owner: str) -> str | None:
    try:
        return await runtime.store.get_plan(owner)
    except StoreError:
        runtime.keys.on_store_error("keys_api")
        raise StoreUnavailable("The key store is unavailable; try again shortly.") from None


def owner_view(
    config: Config,
    owner: str,
    plan: Plan,
    explicit: bool,
    keys: list[KeyRecord],
    rows: list[UsageDay],
    now: float,
    budgeted: bool = False,
) -> dict[str, Any]:
    """The answer: the plan and its limits, the key counts, the month's usage (and, on a plan
    that allows overage, the tokens past its monthly tokens, apart)."""
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows)
    cost, over = usage_cost(config, rows), overage(plan, tokens)
    return {
        "owner": owner,
        "plan": plan.name,
        "planSource": "owner" if explicit else "default_plan",
        "limits": {
            "maxKeys": plan.max_keys,
            "monthlyTokens": plan.monthly_tokens,
            "rpm": plan.rpm,
            "tpm": plan.tpm,
            "monthlyBudgetUsd": plan.monthly_budget_usd,
            "budgetSource": "owner" if budgeted else "plan",
            "overage": plan.overage,
        },
        "keys": {
            "total": len(keys),
            "active": sum(1 for k in keys if k.status(now) == "ACTIVE"),
        },
        "usage": {
            "month": windows.day_text(windows.day_id(now))[:7],
            "requests": sum(r.requests for r in rows),
            "tokens": tokens,
            "cost": round(cost, 6),
            "overageTokens": over,
            # the month's cost in the share of its tokens that came past the plan's
            "overageCost": round(cost * over / tokens, 6) if tokens else 0.0,
        },
    }


def overage(plan: Plan, tokens: int) -> int:
    """Tokens this month past the plan's monthly tokens (0 when it blocks at them)."""
    if plan.overage != "allow" or plan.monthly_tokens is None:
        return 0
    return max(0, tokens - plan.monthly_tokens)


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """Register ``GET /admin/owners/{owner}``."""

    async def show(request: web.Request) -> web.StreamResponse:
        owner = str(acting_owner(None, request.match_info["owner"], required=True))
        config, now = runtime.config, runtime.clock.time()
        name = await _stored_plan(runtime, owner)
        plan = config.plans.get(name or config.default_plan) or config.plans[config.default_plan]
        budget = await runtime.lifecycle.owner_budget(owner)
        if budget is not None:  # the owner's own monthly budget, over the plan's
            plan = replace(plan, monthly_budget_usd=money.usd(budget))
        keys = await runtime.lifecycle.list(owner)
        today = windows.day_id(now)
        rows = await runtime.lifecycle.usage(owner, [k.id for k in keys], today // 100 * 100, today)
        explicit = name is not None and name == plan.name
        view = owner_view(config, owner, plan, explicit, keys, rows, now, budget is not None)
        return json_response(view)

    app.router.add_get("/admin/owners/{owner}", show, allow_head=False)
