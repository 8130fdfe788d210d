"""Alert events as they travel: the event body, one queued delivery per webhook, the bytes a
webhook receives (``json``: the event; ``slack``: ``{"text": ...}``), their signature, and the
retry schedule. Pure: no I/O (``uuid``, ``hmac`` and ``hashlib`` only compute).

A body is rendered from the stored event the same way on every attempt, so a receiver that
checks the signature of a retry sees the same bytes and the same ``id``.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass, replace
from typing import Any

import orjson

from gateway.config.schema import Webhook
from gateway.records import iso

FIRST_RETRY = 2.0  # seconds before the first retry (the contract: within 5 s)
MAX_RETRY = 600.0  # the longest wait between two attempts


def new_event(kind: str, data: dict[str, Any], now: float) -> dict[str, Any]:
    """An event's body: a unique ``evt_`` id, its type, when it happened (RFC 3339 UTC)."""
    return {"id": f"evt_{uuid.uuid4().hex}", "type": kind, "createdAt": iso(now), "data": data}


def hook_id(hook: Webhook) -> str:
    """A webhook's name in the queue: its URL and format (never its secret, which may change
    while deliveries wait; the secret is read from the config at each attempt)."""
    return hashlib.sha256(f"{hook.format}|{hook.url}".encode()).hexdigest()[:16]


STATES = ("queued", "retrying", "sent", "dropped")
TEST = "alert.test"  # the type of ``gateway alerts test``: sent to every webhook


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one webhook: what the queue holds, and what the store's history
    of deliveries keeps of it (``state``; the outcome of the last attempt, ``last``, at ``at``;
    when the next is due, ``next``)."""

    hook: str
    event: dict[str, Any]
    first_at: float
    attempts: int = 0  # attempts that failed
    state: str = "queued"
    last: str | None = None  # the last attempt's HTTP status, or the error's name, or why dropped
    at: float | None = None
    next: float | None = None

    @property
    def id(self) -> str:
        return f"{self.event['id']}.{self.hook}"

    @property
    def type(self) -> str:
        return str(self.event["type"])

    def encode(self) -> bytes:
        data = {
            "hook": self.hook,
            "event": self.event,
            "firstAt": self.first_at,
            "n": self.attempts,
        }
        if self.state != "queued":
            data |= {"s": self.state, "last": self.last, "at": self.at, "next": self.next}
        return orjson.dumps(data)

    @staticmethod
    def decode(raw: bytes) -> Delivery:
        data = orjson.loads(raw)
        state = str(data.get("s", "queued"))
        return Delivery(
            data["hook"],
            data["event"],
            float(data["firstAt"]),
            int(data["n"]),
            state if state in STATES else "queued",
            None if data.get("last") is None else str(data["last"]),
            _number(data.get("at")),
            _number(data.get("next")),
        )

    def failed(self, outcome: str, now: float, delay: float) -> Delivery:
        """After a failed attempt: retried ``delay`` seconds from ``now``."""
        return replace(
            self, attempts=self.attempts + 1, state="retrying", last=outcome, at=now,
            next=now + delay,
        )  # fmt: skip

    def ended(self, state: str, outcome: str, now: float) -> Delivery:
        """Sent (``outcome``: the status) or dropped (``outcome``: why)."""
        return replace(self, state=state, last=outcome, at=now, next=None)

    @property
    def attempts_made(self) -> int:
        return self.attempts + (1 if self.state == "sent" else 0)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def deliveries(event: dict[str, Any], hooks: tuple[Webhook, ...], now: float) -> list[Delivery]:
    """One delivery per webhook that asked for the event's type (a test event: every one)."""
    return [
        Delivery(hook_id(h), event, now)
        for h in hooks
        if event["type"] in h.events or event["type"] == TEST
    ]


def retry_delay(attempts: int, first: float = FIRST_RETRY) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: 2, 4, 8, … 600."""
    return min(MAX_RETRY, first * 2.0 ** max(0, attempts - 1))


def render(event: dict[str, Any], form: str) -> bytes:
    if form == "slack":
        return orjson.dumps({"text": summary(event)})
    return orjson.dumps(event)


def signature(secret: str, body: bytes) -> str:
    """``X-Gateway-Signature``: the HMAC-SHA256 of the raw body with the webhook's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- Slack text -----------------------------------------------------------------------------------


def _escape(text: object) -> str:
    """Slack's three control characters: a key name or reason cannot mention @channel."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _amount(value: Any, money: bool) -> str:
    return f"${value:,.2f}" if money else f"{value:,} tokens"


def _usage_text(data: dict[str, Any]) -> str:
    money = data.get("unit") == "usd"
    who = f"Key {data['keyId']}" if "keyId" in data else f"Owner {data['owner']}"
    period = "this minute" if data["period"] == "minute" else data["period"]
    return (
        f"{who} has used {data['percent']}% of its {data['limit']} for {period} "
        f"({_amount(data['used'], money)} of {_amount(data['max'], money)})"
    )


def _key_text(kind: str, data: dict[str, Any]) -> str:
    name = f" ({data['name']})" if data.get("name") else ""
    who = f"Key {data['keyId']}{name} of {data['owner']}"
    if kind == "key.expiring":
        return f"{who} expires within {data['days']} day(s), at {data['expiresAt']}"
    reason = f": {data['reason']}" if data.get("reason") else ""
    return f"{who} was revoked by {data.get('revokedBy') or 'admin'}{reason}"


def summary(event: dict[str, Any]) -> str:
    """One readable line for a chat channel."""
    kind, data = event["type"], event["data"]
    if kind == "usage.threshold":
        text = _usage_text(data)
    elif kind in ("key.expiring", "key.revoked"):
        text = _key_text(kind, data)
    elif kind == "upstream.down":
        text = f"Upstream {data['upstream']} is down (no answer since {data['since']})"
    elif kind == "upstream.up":
        text = f"Upstream {data['upstream']} is up again"
    elif kind == TEST:
        text = f"Test event: {data.get('message') or 'the webhook works'}"
    else:
        text = kind
    return _escape(f"[gateway] {text} ({event['id']})")
