"""Talking to a running gateway's admin API, for ``gateway keys`` and ``gateway owners``.

Plain HTTP with the stdlib (``urllib``; no event loop, no proxy: the admin API is local). The
admin URL and token come from ``--admin-url``/``--admin-token``, else ``$GATEWAY_ADMIN_URL``/
``$GATEWAY_ADMIN_TOKEN``, else the config ``gateway run`` would serve (``--config``, else
``$GATEWAY_CONFIG``, else ``config/gateway.yaml``, else the embedded default):
``http://<admin.host>:<admin.port>`` (a wildcard host means this machine) and ``admin.token``.

Output is aligned text for people or the API's JSON with ``--json``. An error from the API is
printed to stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson

from gateway.config.load import ConfigError, load_file, locate

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class CliError(Exception):
    """A failure to report on stderr (exit status 1)."""


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


def _config_admin(explicit: str | None) -> tuple[str, str | None]:
    """The admin URL and token of the config ``gateway run`` would serve."""
    try:
        admin = load_file(locate(explicit).path).admin
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
        url, token = url or from_config[0], token or from_config[1]
    return AdminClient(url, token)


def common_options() -> argparse.ArgumentParser:
    """The options every admin-API command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin-url", help="default $GATEWAY_ADMIN_URL, else from the config")
    common.add_argument("--admin-token", help="default $GATEWAY_ADMIN_TOKEN, else admin.token")
    common.add_argument(
        "--config", help="YAML file (default $GATEWAY_CONFIG, config/gateway.yaml, the embedded)"
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")
    return common


# -- output -------------------------------------------------------------------------------------
def cell(value: Any, empty: str = "-") -> str:
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


def labelled(pairs: list[tuple[str, str]]) -> str:
    """``label  value`` lines, the labels padded to one width."""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in pairs)


def emit(args: argparse.Namespace, answer: Any, text: Callable[[Any], str]) -> int:
    if args.json:
        sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(text(answer))
    return 0


Command = Callable[[argparse.Namespace, AdminClient], int]


def runner(group: str, command: Command) -> Callable[[argparse.Namespace], int]:
    """The command with its client, its errors on stderr with status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args, client_for(args))
        except CliError as exc:
            print(f"gateway {group} {args.action}: error: {exc}", file=sys.stderr)
            return 1

    return run
