"""What ``GET /admin/alerts/events`` shows: the store's history of deliveries (``store.events``,
newest first) grouped by event, each delivery with its webhook's host (never its URL: a
Slack-style URL carries a token), its state and its last attempt. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from gateway.alerts.events import Delivery, hook_id
from gateway.config.schema import Webhook
from gateway.records import iso


def delivery_view(delivery: Delivery, hooks: dict[str, Webhook]) -> dict[str, Any]:
    hook = hooks.get(delivery.hook)
    return {
        "webhook": None if hook is None else urlsplit(hook.url).hostname,
        "hook": delivery.hook,
        "format": None if hook is None else hook.format,
        "state": delivery.state,
        "attempts": delivery.attempts_made,
        "lastResult": delivery.last,
        "lastAttemptAt": iso(delivery.at),
        "nextAttemptAt": iso(delivery.next),
    }


def events_view(
    records: Iterable[bytes], webhooks: Iterable[Webhook], limit: int
) -> list[dict[str, Any]]:
    """At most ``limit`` events, newest first, each with its deliveries (``records``: newest
    first; one that cannot be read is left out)."""
    hooks = {hook_id(h): h for h in webhooks}
    events: dict[str, dict[str, Any]] = {}
    for raw in records:
        try:
            delivery = Delivery.decode(raw)
            event_id = str(delivery.event["id"])
            event = dict(delivery.event)
        except (ValueError, KeyError, TypeError):
            continue
        entry = events.get(event_id)
        if entry is None:
            if len(events) >= limit:
                continue  # a later delivery of an event already listed may still come
            entry = events[event_id] = {**event, "deliveries": []}
        entry["deliveries"].append(delivery_view(delivery, hooks))
    return list(events.values())
