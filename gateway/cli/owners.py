"""``gateway owners ...``: owner plans through a running gateway's admin API.

gateway owners set acme --plan pro     # PUT /admin/owners/acme {"plan": "pro"}
gateway owners set acme --monthly-budget 50    # {"monthlyBudgetUsd": 50}; none clears it
gateway owners show acme [--json]      # GET /admin/owners/acme: plan, keys, this month's use

An owner's limits are its plan's (``monthly_budget_usd``, ``tpm``, ``monthly_tokens``,
``overage``), except a monthly budget set for the owner itself, which takes the plan's place:
``set`` moves the owner to a plan or sets its budget, ``show`` prints the month's spend.
"""

from __future__ import annotations

import argparse
import sys
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
        text += (
            f" (overage allowed: {usage.get('overageTokens', 0):,} tokens past the plan, "
            f"${usage.get('overageCost', 0):,.6f})"
        )
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
    body: dict[str, object] = {}
    if args.plan is not None:
        body["plan"] = args.plan
    if args.monthly_budget is not None:
        body["monthlyBudgetUsd"] = None if args.monthly_budget == "none" else args.monthly_budget
    if not body:
        print("gateway owners set: give --plan, --monthly-budget or both", file=sys.stderr)
        return 2
    return emit(args, api.call("PUT", _path(args.owner), body), _set_text)


def _set_text(answer: dict[str, Any]) -> str:
    said = []
    if "plan" in answer:
        said.append(f"is now on plan {answer['plan']}")
    if "monthlyBudgetUsd" in answer:
        budget = answer["monthlyBudgetUsd"]
        said.append(
            "has its plan's monthly budget"
            if budget is None
            else f"has a monthly budget of ${budget:,.2f} of its own"
        )
    return f"Owner {answer['owner']} " + " and ".join(said) + "."


def _budget(text: str) -> float | str:
    """``--monthly-budget``: dollars above 0, or ``none`` (the plan's budget applies)."""
    if text.lower() == "none":
        return "none"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("dollars (e.g. 50 or 12.5), or none") from None
    if not 0 < value <= 1e9 or value != value:
        raise argparse.ArgumentTypeError("dollars above 0, at most 1e9, or none")
    return value


def cmd_show(args: argparse.Namespace, api: AdminClient) -> int:
    return emit(args, api.call("GET", _path(args.owner)), owner_text)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``owners`` command and its subcommands."""
    owners = sub.add_parser("owners", help="owner plans through a running gateway's admin API")
    actions = owners.add_subparsers(dest="action", required=True)
    common = common_options()
    text = (
        "put an owner on a plan (one of the config's plans: its budgets and limits), or give it "
        "a monthly budget of its own over the plan's"
    )
    set_ = actions.add_parser("set", parents=[common], help=text, description=text)
    set_.add_argument("owner", metavar="OWNER")
    set_.add_argument("--plan", metavar="NAME", help="one of the config's plans")
    set_.add_argument(
        "--monthly-budget",
        type=_budget,
        metavar="USD",
        help="the owner's own monthly budget in dollars across its keys; none: the plan's",
    )
    set_.set_defaults(func=runner("owners", cmd_set))
    text = "an owner's plan, keys and this month's usage and spend against the plan"
    show = actions.add_parser("show", parents=[common], help=text, description=text)
    show.add_argument("owner", metavar="OWNER")
    show.set_defaults(func=runner("owners", cmd_show))
