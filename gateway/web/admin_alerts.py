"""The alerts on the admin listener: recent events and the state of their deliveries, and a test
event through the configured webhooks (what ``gateway alerts`` calls). Behind the admin token
like everything under ``/admin/`` (the listener's middleware checks it).

- ``GET /admin/alerts/events?limit=N``: the newest ``N`` events (1-200, default 20) of the
  store's history of deliveries (the last 1,000 deliveries), each with its deliveries;
- ``GET /admin/alerts/events/{id}``: one event, its deliveries to the webhooks configured now;
- ``POST /admin/alerts/test`` ``{"message": "..."}`` (optional, at most 500 characters): an
  ``alert.test`` event queued for every webhook; 202 with its id.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from gateway.alerts.events import hook_id
from gateway.alerts.history import events_view
from gateway.alerts.service import AlertService
from gateway.errors import BadRequest, Conflict, NotFound, StoreUnavailable
from gateway.proxy.bodies import read_request_body
from gateway.runtime import Runtime
from gateway.store.base import StoreError
from gateway.store.events import HISTORY
from gateway.web.keys_api import number_param, only_fields, parse_object
from gateway.web.respond import json_response

MAX_LIMIT = 200
MAX_MESSAGE = 500
MAX_BODY = 4096
_EVENT_ID = re.compile(r"^evt_[0-9a-f]{32}$")
DEFAULT_MESSAGE = "This is a test event from the gateway: the webhook works."


def _unavailable() -> StoreUnavailable:
    return StoreUnavailable("The alert queue in the store is unavailable; try again shortly.")


def _running(runtime: Runtime) -> AlertService | None:
    service = runtime.alerts
    return service if service is not None and service.active else None


async def _list(runtime: Runtime, limit: int) -> dict[str, Any]:
    service = _running(runtime)
    if service is None:
        return {"enabled": False, "webhooks": 0, "queued": 0, "events": []}
    hooks = service.settings().webhooks
    try:
        recent = await service.events.recent(min(HISTORY, limit * max(1, len(hooks))))
        queued = await service.events.depth()
    except StoreError:
        raise _unavailable() from None
    events = events_view((raw for _, raw in recent), hooks, limit)
    return {"enabled": True, "webhooks": len(hooks), "queued": queued, "events": events}


async def _one(runtime: Runtime, event_id: str) -> dict[str, Any]:
    service = _running(runtime)
    missing = NotFound(f"No alert event {event_id[:40]!r} in the recent history.")
    if service is None or not _EVENT_ID.match(event_id):
        raise missing
    hooks = service.settings().webhooks
    try:
        records = await service.events.records([f"{event_id}.{hook_id(h)}" for h in hooks])
    except StoreError:
        raise _unavailable() from None
    found = events_view((r for r in records if r is not None), hooks, 1)
    if not found:
        raise missing
    return found[0]


def _message(body: dict[str, Any]) -> str:
    only_fields(body, "message")
    message = body.get("message")
    if message is None:
        return DEFAULT_MESSAGE
    if not isinstance(message, str) or not 0 < len(message) <= MAX_MESSAGE:
        raise BadRequest(
            f"'message' must be text of 1 to {MAX_MESSAGE} characters.", param="message"
        )
    return message


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """Register ``/admin/alerts/events``, ``/admin/alerts/events/{id}``, ``/admin/alerts/test``."""

    async def list_events(request: web.Request) -> web.StreamResponse:
        limit = number_param(request, "limit", 20, MAX_LIMIT)
        return json_response(await _list(runtime, limit))

    async def show_event(request: web.Request) -> web.StreamResponse:
        return json_response(await _one(runtime, request.match_info["event_id"]))

    async def send_test(request: web.Request) -> web.StreamResponse:
        raw = await read_request_body(request, MAX_BODY, runtime.config.network.header_timeout)
        message = _message(parse_object(raw, optional=True))
        service = _running(runtime)
        if service is None:
            raise Conflict(
                "No alert webhook is running: set alerts.webhooks in the config (adding the "
                "first webhook needs a restart).",
                code="alerts_not_configured",
            )
        try:
            event, webhooks = await service.send_test(message)
        except StoreError:
            raise _unavailable() from None
        answer = {"id": event["id"], "type": event["type"], "webhooks": webhooks}
        return json_response(answer, status=202)

    app.router.add_get("/admin/alerts/events", list_events, allow_head=False)
    app.router.add_get("/admin/alerts/events/{event_id}", show_event, allow_head=False)
    app.router.add_post("/admin/alerts/test", send_test)
