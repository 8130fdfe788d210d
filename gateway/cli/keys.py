"""``gateway keys ...``: the key lifecycle through a running gateway's admin API (``admin``
says where the API is and how errors are shown).

``create`` and ``regenerate`` print the full key once; nothing else ever shows a key or its hash
(the API has none to give).

    gateway keys create --owner acme --name ci --permissions chat --rpm 60 --ip 203.0.113.0/24
    gateway keys list --owner acme [--json]
    gateway keys revoke k3f9a2c1 --reason "leaked in a log"
    gateway keys usage k3f9a2c1 --days 7
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Callable
from typing import Any

from gateway.cli.admin import (
    AdminClient,
    CliError,
    cell,
    common_options,
    emit,
    labelled,
    runner,
    table,
)

_LIMITS = (
    ("rpm", "rpmLimit"),
    ("concurrency", "maxConcurrency"),
    ("daily", "dailyLimit"),
    ("monthly", "monthlyLimit"),
    ("tpm", "tpmLimit"),
    ("daily_budget", "dailyBudgetUsd"),
    ("monthly_budget", "monthlyBudgetUsd"),
    ("expires_in_days", "expiresInDays"),
)
_SHOWN = (
    ("id", "id"),
    ("owner", "owner"),
    ("name", "name"),
    ("description", "description"),
    ("status", "status"),
    ("key prefix", "keyPrefix"),
    ("permissions", "permissions"),
    ("models", "models"),
    ("ip whitelist", "ipWhitelist"),
    ("rpm limit", "rpmLimit"),
    ("max concurrency", "maxConcurrency"),
    ("daily limit", "dailyLimit"),
    ("monthly limit", "monthlyLimit"),
    ("tpm limit", "tpmLimit"),
    ("daily budget usd", "dailyBudgetUsd"),
    ("monthly budget usd", "monthlyBudgetUsd"),
    ("expires at", "expiresAt"),
    ("created at", "createdAt"),
    ("updated at", "updatedAt"),
    ("last used at", "lastUsedAt"),
    ("revoked at", "revokedAt"),
    ("revoked reason", "revokedReason"),
)
ONCE = "This is the only time the full key is shown: store it now (the gateway keeps only a hash)."


def _key_path(key_id: str, action: str = "") -> str:
    return f"/admin/keys/{urllib.parse.quote(key_id, safe='')}{action}"


# -- output -------------------------------------------------------------------------------------
def record_text(record: dict[str, Any]) -> str:
    return labelled(
        [(label, cell(record.get(f), "all" if f == "models" else "-")) for label, f in _SHOWN]
    )


def list_text(records: list[dict[str, Any]]) -> str:
    if not records:
        return "No keys."
    headers = ["ID", "NAME", "STATUS", "PREFIX", "PERMISSIONS", "RPM", "CREATED", "LAST USED"]
    rows = [
        [cell(r.get(f)) for f in ("id", "name", "status", "keyPrefix", "permissions")]
        + [cell(r.get(f)) for f in ("rpmLimit", "createdAt", "lastUsedAt")]
        for r in records
    ]
    return table(headers, rows)


def usage_text(usage: dict[str, Any]) -> str:
    fields = ("requests", "promptTokens", "completionTokens", "totalTokens", "errors")
    headers = ["DATE", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL", "ERRORS"]
    rows = [[d["date"], *(str(d[f]) for f in fields)] for d in usage["daily"]]
    rows.append(["total", *(str(usage["totals"][f]) for f in fields)])
    head = f"Usage of key {usage['keyId']} over the last {usage['days']} day(s):"
    return head + "\n" + table(headers, rows)


def _issued_text(answer: dict[str, Any], verb: str) -> str:
    record = {k: v for k, v in answer.items() if k != "key"}
    head = f"{verb} key {record['id']} (owner {record['owner']})."
    if "key" not in answer:
        return f"{head}\n\n{record_text(record)}"
    return f"{head}\n\n    {answer['key']}\n\n{ONCE}\n\n{record_text(record)}"


# -- commands ---------------------------------------------------------------------------------
def _key_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The key fields the options name (``none`` clears a limit, ``all`` allows every model)."""
    fields: dict[str, Any] = {}
    for attr, api in (("name", "name"), ("description", "description"), *_LIMITS):
        value = getattr(args, attr, None)
        if value is not None:
            fields[api] = None if value == "none" else value
    if args.permissions is not None:
        fields["permissions"] = _split(args.permissions)
    if args.models is not None:
        fields["models"] = None if args.models in ("all", "*") else _split(args.models)
    if args.ip is not None:
        fields["ipWhitelist"] = [] if args.ip == ["none"] else args.ip
    if getattr(args, "expires_at", None) is not None:
        fields["expiresAt"] = None if args.expires_at == "none" else args.expires_at
    return fields


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def cmd_create(args: argparse.Namespace, api: AdminClient) -> int:
    body = {"owner": args.owner, **_key_fields(args)}
    if args.sha256:
        body["sha256"] = args.sha256
    answer = api.call("POST", "/admin/keys", body)
    return emit(args, answer, lambda a: _issued_text(a, "Created"))


def cmd_list(args: argparse.Namespace, api: AdminClient) -> int:
    query = urllib.parse.urlencode({"owner": args.owner})
    return emit(args, api.call("GET", f"/admin/keys?{query}"), list_text)


def cmd_show(args: argparse.Namespace, api: AdminClient) -> int:
    return emit(args, api.call("GET", _key_path(args.key_id)), record_text)


def cmd_update(args: argparse.Namespace, api: AdminClient) -> int:
    fields = _key_fields(args)
    if not fields:
        raise CliError("nothing to change; name at least one option (see --help)")
    return emit(args, api.call("PATCH", _key_path(args.key_id), fields), record_text)


def cmd_revoke(args: argparse.Namespace, api: AdminClient) -> int:
    body = {"reason": args.reason} if args.reason is not None else {}
    return emit(args, api.call("POST", _key_path(args.key_id, "/revoke"), body), record_text)


def cmd_reactivate(args: argparse.Namespace, api: AdminClient) -> int:
    return emit(args, api.call("POST", _key_path(args.key_id, "/reactivate")), record_text)


def cmd_regenerate(args: argparse.Namespace, api: AdminClient) -> int:
    answer = api.call("POST", _key_path(args.key_id, "/regenerate"))
    return emit(args, answer, lambda a: _issued_text(a, "Regenerated"))


def cmd_delete(args: argparse.Namespace, api: AdminClient) -> int:
    api.call("DELETE", _key_path(args.key_id))
    return emit(args, {"id": args.key_id, "deleted": True}, lambda a: f"Deleted key {a['id']}.")


def cmd_usage(args: argparse.Namespace, api: AdminClient) -> int:
    answer = api.call("GET", _key_path(args.key_id, f"/usage?days={args.days}"))
    return emit(args, answer, usage_text)


# -- the parser -------------------------------------------------------------------------------
def _limit(text: str) -> int | str:
    if text == "none":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'none'") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (or 'none' for no limit)")
    return value


def _dollars(text: str) -> float | str:
    if text == "none":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount of dollars or 'none'"
        ) from None
    if not 0 < value <= 1e9:
        raise argparse.ArgumentTypeError("must be above 0 dollars (or 'none' for no budget)")
    return value


def _days(text: str) -> int:
    value = _limit(text)
    if not isinstance(value, int) or value > 90:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 90")
    return value


def _field_options(parser: argparse.ArgumentParser, update: bool) -> None:
    parser.add_argument("--name")
    parser.add_argument("--description")
    parser.add_argument("--permissions", help="comma-separated: chat,images,vision")
    parser.add_argument("--models", help="comma-separated model names, or 'all' (the default)")
    parser.add_argument(
        "--ip", action="append", help="an allowed IP or CIDR (repeatable; 'none' clears)"
    )
    for name in ("rpm", "concurrency", "daily", "monthly", "tpm", "expires-in-days"):
        parser.add_argument(f"--{name}", type=_limit, metavar="N", help="a number, or 'none'")
    for name in ("daily-budget", "monthly-budget"):
        parser.add_argument(f"--{name}", type=_dollars, metavar="USD", help="dollars, or 'none'")
    if update:
        parser.add_argument("--expires-at", help="an ISO 8601 time, or 'none'")


_ACTIONS: tuple[tuple[str, Callable[[argparse.Namespace, AdminClient], int], str], ...] = (
    ("create", cmd_create, "create a key (prints the full key once)"),
    ("list", cmd_list, "list an owner's keys, newest first"),
    ("show", cmd_show, "show one key"),
    ("update", cmd_update, "change a key's fields"),
    ("revoke", cmd_revoke, "revoke a key (it stops working at once)"),
    ("reactivate", cmd_reactivate, "reactivate a revoked key"),
    ("regenerate", cmd_regenerate, "issue a new secret (prints it once; the old one stops)"),
    ("delete", cmd_delete, "delete a key for good"),
    ("usage", cmd_usage, "a key's daily usage"),
)


def _action_options(name: str, parser: argparse.ArgumentParser) -> None:
    if name in ("create", "list"):
        parser.add_argument("--owner", required=True, help="the owner (user or organisation id)")
    else:
        parser.add_argument("key_id", metavar="KEY_ID")
    if name in ("create", "update"):
        _field_options(parser, update=name == "update")
    if name == "create":
        parser.add_argument("--sha256", help="import an existing key by its SHA-256 (hex)")
    elif name == "revoke":
        parser.add_argument("--reason")
    elif name == "usage":
        parser.add_argument("--days", type=_days, default=30, help="1 to 90 (default 30)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keys`` command and its subcommands."""
    keys = sub.add_parser("keys", help="manage API keys through a running gateway's admin API")
    actions = keys.add_subparsers(dest="action", required=True)
    common = common_options()
    for name, command, help_text in _ACTIONS:
        parser = actions.add_parser(name, parents=[common], help=help_text, description=help_text)
        _action_options(name, parser)
        parser.set_defaults(func=runner("keys", command))
