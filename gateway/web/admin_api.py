"""The admin API on the admin listener: ``/admin/keys...`` for any owner, owner plans,
usage summaries and reload, behind ``Authorization: Bearer <admin.token>``.

The token is checked (in constant time) for every path under ``/admin/`` before routing, so an
unauthenticated caller learns nothing, not even which paths exist. ``/healthz``, ``/readyz`` and
``/metrics`` need no token. With no ``admin.token`` configured the admin API is open: the config
loader refuses a non-loopback ``admin.host`` without a token, so only local processes can reach
an open one.

Every error on this listener is an OpenAI-style JSON error (``{"error": {...}}``), aiohttp's own
404/405 included. The key routes are ``keys_api``'s handlers with the admin as the caller: its
creates and changes set what a key's owner may give it through ``/api/keys`` (its ceiling), and
its revocations can be undone only here.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from gateway.auth.service import same_token
from gateway.errors import BadRequest, Forbidden, GatewayError, NotFound, Unauthorized
from gateway.limits import money
from gateway.netaddr import parse_ip
from gateway.proxy.bodies import read_request_body
from gateway.runtime import Runtime
from gateway.web.keys_api import (
    MAX_BODY,
    KeyRoutes,
    acting_owner,
    add_key_routes,
    only_fields,
    parse_object,
    the_admin,
)
from gateway.web.middlewares import error_response, from_http
from gateway.web.respond import json_response

ADMIN_PREFIX = "/admin/"


def _http_error(request: web.Request, exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return NotFound(
            f"There is nothing at {request.method} {request.path} on the admin listener; the "
            "admin API is under /admin/ (keys, owners, usage/summary, reload)."
        )
    return from_http(request, exc)


def check_token(request: web.Request, expected: str | None) -> None:
    """Refuse a request under ``/admin/`` without the admin token (open when none is set, to
    the operator's own tools only: ``check_local``)."""
    if not (request.path + "/").startswith(ADMIN_PREFIX):
        return
    if expected is None:
        check_local(request)
        return
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not same_token(given.strip(), expected):
        raise Unauthorized(
            "The admin API needs 'Authorization: Bearer <admin.token>' with the token from the "
            "gateway's config.",
            code="invalid_admin_token",
            headers={"WWW-Authenticate": 'Bearer realm="gateway-admin"'},
        )


def _loopback(host: str | None) -> bool:
    """Whether ``host`` (a Host header's or an origin's, port and brackets allowed) names this
    machine's loopback: ``localhost`` or a loopback address."""
    if host is None:
        return False
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name in ("localhost", "localhost."):
        return True
    address = parse_ip(name)
    return address is not None and address.is_loopback


def _host_of(origin: str) -> str | None:
    try:
        return URL(origin).raw_host
    except ValueError:
        return None


def check_local(request: web.Request) -> None:
    """An open admin API (no token, so on loopback) answers only requests addressed to a
    loopback name and sent from no other site: a web page the operator visits reaches
    127.0.0.1 too, by a cross-site POST (``Origin``: another site) or by DNS rebinding (its
    own name resolved to 127.0.0.1: ``Host`` is that name). The CLI, curl and the console
    send neither."""
    host, origin = request.headers.get("Host"), request.headers.get("Origin")
    if (host is None or _loopback(host)) and (origin is None or _loopback(_host_of(origin))):
        return
    raise Forbidden(
        "The admin API has no token, so it answers only requests addressed to this machine's "
        "loopback (Host 127.0.0.1 or localhost) from no other site; set admin.token to reach "
        "it another way.",
        code="admin_not_local",
    )


def middlewares(runtime: Runtime) -> list[Middleware]:
    """The admin listener's middleware stack: errors as JSON, then the token check."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as err:
            return error_response(err, anthropic=False)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(_http_error(request, exc), anthropic=False)

    @web.middleware
    async def token(request: web.Request, handler: Handler) -> web.StreamResponse:
        check_token(request, runtime.config.admin.token)
        return await handler(request)

    return [errors, token]


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """Register the token-protected admin routes."""

    async def set_plan(request: web.Request) -> web.StreamResponse:
        body = parse_object(
            await read_request_body(request, MAX_BODY, runtime.config.network.header_timeout)
        )
        owner = str(acting_owner(None, request.match_info["owner"], required=True))
        only_fields(body, "plan", "monthlyBudgetUsd")
        if not body:
            raise BadRequest("Send 'plan', 'monthlyBudgetUsd' or both.")
        lifecycle, answer = runtime.lifecycle, dict[str, object](owner=owner)
        if "plan" in body:
            answer["plan"] = await lifecycle.set_plan(owner, body["plan"])
        if "monthlyBudgetUsd" in body:
            micros = await lifecycle.set_owner_budget(owner, body["monthlyBudgetUsd"])
            answer["monthlyBudgetUsd"] = money.usd(micros)
        runtime.limiter.invalidate(f"plan:{owner}")  # this process at once; others by broadcast
        return json_response(answer)

    async def reload(request: web.Request) -> web.StreamResponse:
        """Validate the config file again and swap it in whole; 422 (and the old config keeps
        running) when it is invalid. With several workers, this reloads the process that
        answered; SIGHUP to the supervisor reloads them all."""
        if runtime.reload is None:
            raise GatewayError("Reload is not available in this process.", status=503)
        outcome = await runtime.reload("admin")
        return json_response(outcome.to_api(), status=200 if outcome.ok else 422)

    add_key_routes(app, KeyRoutes(runtime, the_admin), "/admin")
    app.router.add_put("/admin/owners/{owner}", set_plan)
    app.router.add_post("/admin/reload", reload)
