"""``gateway keys ...``: the key lifecycle through a running gateway's admin API (SPEC 1, 6, 8).

Plain HTTP with the stdlib (``urllib``; no event loop, no proxy: the admin API is local). The
admin URL and token come from ``--admin-url``/``--admin-token``, else ``$GATEWAY_ADMIN_URL``/
``$GATEWAY_ADMIN_TOKEN``, else the config file (``--config``, else ``$GATEWAY_CONFIG``, else
``config/gateway.yaml``): ``http://<admin.host>:<admin.port>`` (a wildcard host means this
machine) and ``admin.token``; with no config file, ``http://127.0.0.1:9090`` and no token.

Output is aligned text for people (never a key hash: the API has none to give) or the API's JSON
with ``--json``. ``create`` and ``regenerate`` print the full key once. An error from the API is
printed to stderr with exit status 1.

    gateway keys create --owner acme --name ci --permissions chat --rpm 60 --ip 203.0.113.0/24
    gateway keys list --owner acme [--json]
    gateway keys revoke k3f9a2c1 --reason "leaked in a log"
    gateway keys usage k3f9a2c1 --days 7
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson

from gateway.config.load import ConfigError, load_file

DEFAULT_CONFIG = "config/gateway.yaml"
DEFAULT_URL = "http://127.0.0.1:9090"
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
_LIMITS = (
    ("rpm", "rpmLimit"),
    ("concurrency", "maxConcurrency"),
    ("daily", "dailyLimit"),
    ("monthly", "monthlyLimit"),
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
    ("expires at", "expiresAt"),
    ("created at", "createdAt"),
    ("updated at", "updatedAt"),
    ("last used at", "lastUsedAt"),
    ("revoked at", "revokedAt"),
    ("revoked reason", "revokedReason"),
)
ONCE = "This is the only time the full key is shown: store it now (the gateway keeps only a hash)."


class CliError(Exception):
    """A failure to report on stderr (exit status 1)."""


# -- talking to the admin API -----------------------------------------------------------------
class AdminClient:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise CliError(_error_message(exc.code, exc.read())) from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CliError(
                f"cannot reach the gateway's admin API at {self.url}: {reason}. Is the gateway "
                "running? Set --admin-url or $GATEWAY_ADMIN_URL."
            ) from None
        return orjson.loads(raw) if raw else None


def _error_message(status: int, raw: bytes) -> str:
    try:
        error = orjson.loads(raw)["error"]
        return f"{error['message']} (HTTP {status}, {error['code']})"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"the admin API answered HTTP {status}: {raw[:200].decode('utf-8', 'replace')}"


def _config_admin(explicit: str | None) -> tuple[str, str | None] | None:
    """The admin URL and token from the config file; None when there is no file to read."""
    path = explicit or os.environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG
    if not os.path.exists(path) and not explicit and "GATEWAY_CONFIG" not in os.environ:
        return None
    try:
        admin = load_file(path).admin
    except ConfigError as exc:
        raise CliError(
            "cannot read the config for the admin URL:\n" + "\n".join(exc.errors)
        ) from None
    host = _WILDCARDS.get(admin.host, admin.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{admin.port}", admin.token


def client_for(args: argparse.Namespace) -> AdminClient:
    url = args.admin_url or os.environ.get("GATEWAY_ADMIN_URL")
    token = args.admin_token or os.environ.get("GATEWAY_ADMIN_TOKEN")
    if url is None or token is None:
        from_config = _config_admin(args.config)
        if from_config is not None:
            url, token = url or from_config[0], token or from_config[1]
    return AdminClient(url or DEFAULT_URL, token)


def _key_path(key_id: str, action: str = "") -> str:
    return f"/admin/keys/{urllib.parse.quote(key_id, safe='')}{action}"


# -- output -------------------------------------------------------------------------------------
def _cell(value: Any, empty: str = "-") -> str:
    if value is None:
        return empty
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return str(value) or "-"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    )


def record_text(record: dict[str, Any]) -> str:
    width = max(len(label) for label, _ in _SHOWN)
    return "\n".join(
        f"{label.ljust(width)}  {_cell(record.get(field), 'all' if field == 'models' else '-')}"
        for label, field in _SHOWN
    )


def list_text(records: list[dict[str, Any]]) -> str:
    if not records:
        return "No keys."
    headers = ["ID", "NAME", "STATUS", "PREFIX", "PERMISSIONS", "RPM", "CREATED", "LAST USED"]
    rows = [
        [_cell(r.get(f)) for f in ("id", "name", "status", "keyPrefix", "permissions")]
        + [_cell(r.get(f)) for f in ("rpmLimit", "createdAt", "lastUsedAt")]
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


def _emit(args: argparse.Namespace, answer: Any, text: Callable[[Any], str]) -> int:
    if args.json:
        sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(text(answer))
    return 0


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
    return _emit(args, answer, lambda a: _issued_text(a, "Created"))


def cmd_list(args: argparse.Namespace, api: AdminClient) -> int:
    query = urllib.parse.urlencode({"owner": args.owner})
    return _emit(args, api.call("GET", f"/admin/keys?{query}"), list_text)


def cmd_show(args: argparse.Namespace, api: AdminClient) -> int:
    return _emit(args, api.call("GET", _key_path(args.key_id)), record_text)


def cmd_update(args: argparse.Namespace, api: AdminClient) -> int:
    fields = _key_fields(args)
    if not fields:
        raise CliError("nothing to change; name at least one option (see --help)")
    return _emit(args, api.call("PATCH", _key_path(args.key_id), fields), record_text)


def cmd_revoke(args: argparse.Namespace, api: AdminClient) -> int:
    body = {"reason": args.reason} if args.reason is not None else {}
    return _emit(args, api.call("POST", _key_path(args.key_id, "/revoke"), body), record_text)


def cmd_reactivate(args: argparse.Namespace, api: AdminClient) -> int:
    return _emit(args, api.call("POST", _key_path(args.key_id, "/reactivate")), record_text)


def cmd_regenerate(args: argparse.Namespace, api: AdminClient) -> int:
    answer = api.call("POST", _key_path(args.key_id, "/regenerate"))
    return _emit(args, answer, lambda a: _issued_text(a, "Regenerated"))


def cmd_delete(args: argparse.Namespace, api: AdminClient) -> int:
    api.call("DELETE", _key_path(args.key_id))
    return _emit(args, {"id": args.key_id, "deleted": True}, lambda a: f"Deleted key {a['id']}.")


def cmd_usage(args: argparse.Namespace, api: AdminClient) -> int:
    answer = api.call("GET", _key_path(args.key_id, f"/usage?days={args.days}"))
    return _emit(args, answer, usage_text)


def _run(command: Callable[[argparse.Namespace, AdminClient], int]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args, client_for(args))
        except CliError as exc:
            print(f"gateway keys {args.action}: error: {exc}", file=sys.stderr)
            return 1

    return run


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


def _days(text: str) -> int:
    value = _limit(text)
    if not isinstance(value, int) or value > 90:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 90")
    return value


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin-url", help="default $GATEWAY_ADMIN_URL, else from the config")
    common.add_argument("--admin-token", help="default $GATEWAY_ADMIN_TOKEN, else admin.token")
    common.add_argument("--config", help=f"YAML file (default $GATEWAY_CONFIG or {DEFAULT_CONFIG})")
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")
    return common


def _field_options(parser: argparse.ArgumentParser, update: bool) -> None:
    parser.add_argument("--name")
    parser.add_argument("--description")
    parser.add_argument("--permissions", help="comma-separated: chat,images,vision")
    parser.add_argument("--models", help="comma-separated model names, or 'all' (the default)")
    parser.add_argument(
        "--ip", action="append", help="an allowed IP or CIDR (repeatable; 'none' clears)"
    )
    for name in ("rpm", "concurrency", "daily", "monthly", "expires-in-days"):
        parser.add_argument(f"--{name}", type=_limit, metavar="N", help="a number, or 'none'")
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
    common = _common()
    for name, command, help_text in _ACTIONS:
        parser = actions.add_parser(name, parents=[common], help=help_text, description=help_text)
        _action_options(name, parser)
        parser.set_defaults(func=_run(command))
