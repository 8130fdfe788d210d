"""The key-management and usage API, one set of handlers for two listeners:

- public, ``/api/keys...`` and ``/api/usage/summary``: the caller is authenticated exactly like
  chat (the same 401/403/429 from ``KeyService``; no ``chat`` permission needed) and acts for its
  own key's owner only. Another owner's key is a 404, never a 403, so ids do not leak. An
  ``owner`` named in a create body (or ``?owner=``) must be the caller's own (else 403). The
  calling key bounds what it gives (``auth.grants``: 403 naming the field);
- admin, ``/admin/keys...`` and ``/admin/usage/summary`` (``admin_api``): behind the admin token,
  for any owner: ``owner`` in the create body or ``?owner=`` (required to create, list and
  summarise; optional elsewhere, where it narrows the lookup to that owner).

``KeyRoutes`` is parametrized by how it finds the caller (``CallerOf``: the calling key, or None
for the admin); the rest is shared.

Answers (camelCase, the portal's form; the portal docs give no envelope, so none is added):
``GET .../keys`` a bare JSON array of records, newest first; create 201 and regenerate 200 the
record plus ``"key"`` (the only time the full key is shown; an import by ``sha256`` has none);
``DELETE`` 204 with no body; usage ``{"keyId","days","totals","daily"}``; requests a bare array,
newest day first; summary as ``usage.summary``. Bodies are JSON objects of at most 64 KiB (413
beyond, 400 when malformed). Every failure is a ``GatewayError`` for the listener's renderer.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import BadRequest, Forbidden, TooManyRequests
from gateway.limits import windows
from gateway.proxy.access import authenticate
from gateway.proxy.bodies import read_request_body
from gateway.proxy.govern import refuse_declared_size
from gateway.records import KeyRecord, Merge, UsageDay
from gateway.runtime import Runtime
from gateway.store.base import USAGE_DAYS
from gateway.usage import PERIODS, key_requests, key_usage, of_model, summary
from gateway.web.respond import json_response

MAX_BODY = 64 * 1024
MAX_USAGE_DAYS = 90
MAX_REQUESTS = 100
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")  # as config's keys.static owner
_NUMBER = re.compile(r"^[0-9]{1,6}$")

CallerOf = Callable[[web.Request], Awaitable[KeyRecord | None]]
"""Who acts: the key that authenticates the request (for its own owner, within its own rights),
or None for the admin (any owner, anything)."""


def calling_key(runtime: Runtime) -> CallerOf:
    """Public listener: the key that authenticates the request."""

    async def caller(request: web.Request) -> KeyRecord | None:
        return await authenticate(runtime, request)

    return caller


async def the_admin(request: web.Request) -> KeyRecord | None:
    """Admin listener (the token is checked by its middleware): the admin."""
    return None


def owner_of(caller: KeyRecord | None) -> str | None:
    return caller.owner if caller is not None else None


def acting_owner(caller: str | None, named: object, required: bool) -> str | None:
    """The owner a route acts for: the caller's (``named`` must agree), else the named one;
    None (any owner) when the admin names none and the route does not need one."""
    if caller is not None:
        if named is not None and named != caller:
            raise Forbidden("This key may manage only its own owner's keys; leave 'owner' out.")
        return caller
    if named is None:
        if required:
            raise BadRequest("Name the owner: 'owner' in the body or ?owner=.", param="owner")
        return None
    if not isinstance(named, str) or not _OWNER.match(named):
        raise BadRequest(
            "'owner' must be 1 to 128 letters, digits or ._:/@+- characters.", param="owner"
        )
    return named


def parse_object(raw: bytes, optional: bool = False) -> dict[str, Any]:
    """A request body as a JSON object; an empty body is ``{}`` when ``optional``."""
    if optional and not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"The request body is not valid JSON ({exc}); send a JSON object."
        ) from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    return data


def only_fields(body: dict[str, Any], *names: str) -> None:
    extra = sorted(set(body) - set(names))
    if extra:
        raise BadRequest(
            f"Unknown field '{extra[0][:64]}'; send only {', '.join(repr(n) for n in names)}.",
            param=extra[0][:64],
        )


def number_param(request: web.Request, name: str, default: int, maximum: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not _NUMBER.match(text) or not 1 <= int(text) <= maximum:
        raise BadRequest(f"'{name}' must be a whole number from 1 to {maximum}.", param=name)
    return int(text)


def period_param(request: web.Request) -> str:
    period = request.query.get("period", "30d")
    if period not in PERIODS:
        raise BadRequest(f"'period' must be one of {', '.join(PERIODS)}.", param="period")
    return period


class KeyRoutes:
    """The handlers of every key and usage route, for the owner ``caller_of`` finds."""

    def __init__(self, runtime: Runtime, caller_of: CallerOf) -> None:
        self.rt = runtime
        self.caller_of = caller_of
        # The owner-wide reads (a summary, the list of keys) a key is having this process
        # make, by (kind, owner): one of each at a time. Such a read of thousands of keys shares
        # the loop with every admission; many of one owner's at once interleave until the
        # admissions time out (blind under on_error: open).
        self._reading: set[tuple[str, str]] = set()

    @contextlib.contextmanager
    def _one_at_a_time(self, caller: KeyRecord | None, kind: str, owner: str) -> Iterator[None]:
        """An owner-wide read, one at a time per owner in this process when a key asks (429
        ``concurrency_limit_exceeded`` for another at once); the admin's are not bounded."""
        if caller is None:
            yield
            return
        reading = (kind, owner)
        if reading in self._reading:
            raise TooManyRequests(
                f"A {kind} of this owner is being made; ask again when it is done (one at a time).",
                code="concurrency_limit_exceeded",
                retry_after=1,
            )
        self._reading.add(reading)
        try:
            yield
        finally:
            self._reading.discard(reading)

    # -- shared steps -------------------------------------------------------------------------
    async def _owner(
        self, request: web.Request, required: bool = False
    ) -> tuple[KeyRecord | None, str | None]:
        """The caller, and the owner it acts for."""
        caller = await self.caller_of(request)
        return caller, acting_owner(owner_of(caller), request.query.get("owner"), required)

    async def _with_body(
        self, request: web.Request, optional: bool = False
    ) -> tuple[KeyRecord | None, dict[str, Any]]:
        """The body's declared size is checked before the caller, the body read only once the
        caller is known (nothing is held for a caller not authenticated), its JSON after."""
        refuse_declared_size(request, MAX_BODY)
        caller = await self.caller_of(request)
        raw = await read_request_body(request, MAX_BODY, self.rt.config.network.header_timeout)
        return caller, parse_object(raw, optional)

    async def _record(self, request: web.Request) -> KeyRecord:
        _, owner = await self._owner(request)
        return await self.rt.lifecycle.get(owner, request.match_info["key_id"])

    def _answer(
        self, record: KeyRecord, full: str | None = None, status: int = 200
    ) -> web.Response:
        out = record.to_api(self.rt.clock.time())
        if full is not None:
            out["key"] = full
        return json_response(out, status=status)

    async def _usage(self, owner: str, key_ids: list[str], days: list[int]) -> list[UsageDay]:
        return await self.rt.lifecycle.usage(owner, key_ids, days[0], days[-1])

    # -- keys -----------------------------------------------------------------------------------
    async def list_keys(self, request: web.Request) -> web.StreamResponse:
        caller, owner = await self._owner(request, required=True)
        with self._one_at_a_time(caller, "list of keys", str(owner)):
            records = await self.rt.lifecycle.list(str(owner))
        now = self.rt.clock.time()
        return json_response([r.to_api(now) for r in records])

    async def create(self, request: web.Request) -> web.StreamResponse:
        caller, body = await self._with_body(request)
        named = body.get("owner", request.query.get("owner"))
        owner = acting_owner(owner_of(caller), named, True)
        record, full = await self.rt.lifecycle.create(
            str(owner), body, admin=caller is None, caller=caller
        )
        return self._answer(record, full, status=201)

    async def show(self, request: web.Request) -> web.StreamResponse:
        return self._answer(await self._record(request))

    async def update(self, request: web.Request) -> web.StreamResponse:
        caller, body = await self._with_body(request)
        owner = acting_owner(owner_of(caller), request.query.get("owner"), False)
        key_id = request.match_info["key_id"]
        return self._answer(await self.rt.lifecycle.update(owner, key_id, body, caller))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        caller, owner = await self._owner(request)
        await self.rt.lifecycle.delete(owner, request.match_info["key_id"], caller)
        return web.Response(status=204)

    async def regenerate(self, request: web.Request) -> web.StreamResponse:
        caller, owner = await self._owner(request)
        key_id = request.match_info["key_id"]
        record, full = await self.rt.lifecycle.regenerate(owner, key_id, caller)
        return self._answer(record, full)

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        caller, body = await self._with_body(request, optional=True)
        owner = acting_owner(owner_of(caller), request.query.get("owner"), False)
        only_fields(body, "reason")
        key_id = request.match_info["key_id"]
        return self._answer(
            await self.rt.lifecycle.revoke(owner, key_id, body.get("reason"), caller)
        )

    async def reactivate(self, request: web.Request) -> web.StreamResponse:
        caller, owner = await self._owner(request)
        key_id = request.match_info["key_id"]
        return self._answer(await self.rt.lifecycle.reactivate(owner, key_id, caller))

    # -- usage ----------------------------------------------------------------------------------
    async def usage(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        days = windows.days_back(
            self.rt.clock.time(), number_param(request, "days", 30, MAX_USAGE_DAYS)
        )
        rows = await self._usage(record.owner, [record.id], days)
        return json_response(key_usage(record.id, days, rows))

    async def requests(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        limit = number_param(request, "limit", 10, MAX_REQUESTS)
        days = windows.days_back(self.rt.clock.time(), USAGE_DAYS)
        rows = await self._usage(record.owner, [record.id], days)
        return json_response(key_requests(rows, limit))

    async def summary(self, request: web.Request) -> web.StreamResponse:
        caller, owner = await self._owner(request, required=True)
        owner = str(owner)
        period = period_param(request)
        with self._one_at_a_time(caller, "usage summary", owner):
            return await self._summary(request, owner, period)

    async def _summary(self, request: web.Request, owner: str, period: str) -> web.Response:
        key_id = request.query.get("keyId") or None
        if key_id is not None:
            key_ids = [(await self.rt.lifecycle.get(owner, key_id)).id]
        else:
            key_ids = [r.id for r in await self.rt.lifecycle.list(owner)]
        days = windows.days_back(self.rt.clock.time(), PERIODS[period])
        # Summed per model and API as read, part by part (the loop serves admissions between
        # parts): what is left is a row per model and API, whatever the keys and days.
        merged = Merge(by_key=False, by_day=False)
        await self.rt.lifecycle.usage(owner, key_ids, days[0], days[-1], merged.add)
        rows = of_model(self.rt.router, merged.rows, request.query.get("model"))
        return json_response(summary(self.rt.config, period, rows))


def add_key_routes(app: web.Application, routes: KeyRoutes, base: str) -> None:
    """``<base>/keys...`` and ``<base>/usage/summary``."""
    router = app.router
    item = f"{base}/keys/{{key_id}}"
    router.add_get(f"{base}/keys", routes.list_keys, allow_head=False)
    router.add_post(f"{base}/keys", routes.create)
    router.add_get(item, routes.show, allow_head=False)
    router.add_patch(item, routes.update)
    router.add_delete(item, routes.delete)
    router.add_post(f"{item}/regenerate", routes.regenerate)
    router.add_post(f"{item}/revoke", routes.revoke)
    router.add_post(f"{item}/reactivate", routes.reactivate)
    router.add_get(f"{item}/usage", routes.usage, allow_head=False)
    router.add_get(f"{item}/requests", routes.requests, allow_head=False)
    router.add_get(f"{base}/usage/summary", routes.summary, allow_head=False)


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """Register the public key and usage routes, for the caller's own owner."""
    add_key_routes(app, KeyRoutes(runtime, calling_key(runtime)), "/api")
