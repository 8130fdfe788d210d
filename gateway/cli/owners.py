"""``gateway owners ...``: owner plans through a running gateway's admin API.

gateway owners set acme --plan pro     # PUT /admin/owners/acme {"plan": "pro"}
gateway owners show acme [--json]      # GET /admin/owners/acme: plan, keys, this month's use

An owner's budgets are its plan's (``monthly_budget_usd``, ``tpm``, ``monthly_tokens``,
``overage``): ``set`` moves the owner to a plan, ``show`` prints the month's spend against them.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from gateway.cli.admin import AdminClient, common_options, emit, labelled, runner


def _path(owner: str) -> str:
    return f"/admin/owners/{urllib.parse.quote(owner, safe='')}"


def _of(used: int, limit: int | None, unit: str) -> str:
    return f"{used:,} {unit} (no limit)" if limit is None else f"{used:,} of {limit:,} {unit}"


def _spend(cost: float, budget: float | None) -> str:
    spent = f"${cost:,.6f}".rstrip("0").rstrip(".")
    return f"{spent} (no budget)" if budget is None else f"{spent} of ${budget:,.2f}"


def _tokens(usage: dict[str, Any], limits: dict[str, Any]) -> str:
    text = f"{_of(usage['tokens'], limits['monthlyTokens'], 'tokens')} in {usage['month']}"
    if limits.get("overage") == "allow":
        text += f" (overage allowed: {usage.get('overageTokens', 0):,} tokens past the plan)"
    return text


def owner_text(view: dict[str, Any]) -> str:
    limits, keys, usage = view["limits"], view["keys"], view["usage"]
    source = "set for this owner" if view["planSource"] == "owner" else "the default_plan"
    rpm, tpm = limits["rpm"], limits.get("tpm")
    return labelled(
        [
            ("owner", view["owner"]),
            ("plan", f"{view['plan']} ({source})"),
            ("keys", f"{_of(keys['total'], limits['maxKeys'], 'keys')}, {keys['active']} active"),
            ("tokens", _tokens(usage, limits)),
            ("spend", f"{_spend(usage.get('cost', 0.0), limits.get('monthlyBudgetUsd'))} in "
                      f"{usage['month']}"),
            ("requests", f"{usage['requests']:,} in {usage['month']}"),
            ("rpm", "no limit" if rpm is None else f"{rpm:,} requests a minute across its keys"),
            ("tpm", "no limit" if tpm is None else f"{tpm:,} tokens a minute across its keys"),
        ]
    )  # fmt: skip


def cmd_set(args: argparse.Namespace, api: AdminClient) -> int:
    answer = api.call("PUT", _path(args.owner), {"plan": args.plan})
    return emit(args, answer, lambda a: f"Owner {a['owner']} is now on plan {a['plan']}.")


def cmd_show(args: argparse.Namespace, api: AdminClient) -> int:
    return emit(args, api.call("GET", _path(args.owner)), owner_text)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``owners`` command and its subcommands."""
    owners = sub.add_parser("owners", help="owner plans through a running gateway's admin API")
    actions = owners.add_subparsers(dest="action", required=True)
    common = common_options()
    text = "put an owner on a plan (one of the config's plans: its budgets and limits)"
    set_ = actions.add_parser("set", parents=[common], help=text, description=text)
    set_.add_argument("owner", metavar="OWNER")
    set_.add_argument("--plan", required=True, metavar="NAME")
    set_.set_defaults(func=runner("owners", cmd_set))
    text = "an owner's plan, keys and this month's usage and spend against the plan"
    show = actions.add_parser("show", parents=[common], help=text, description=text)
    show.add_argument("owner", metavar="OWNER")
    show.set_defaults(func=runner("owners", cmd_show))
