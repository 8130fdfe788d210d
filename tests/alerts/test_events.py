"""Event bodies, the Slack line, signatures, queued deliveries and the retry schedule (pure)."""

from __future__ import annotations

import hashlib
import hmac
import re

import orjson
import pytest

from gateway.alerts.events import (
    TEST,
    Delivery,
    deliveries,
    hook_id,
    new_event,
    render,
    retry_delay,
    signature,
    summary,
)
from gateway.config.schema import Webhook

NOW = 1_796_000_000.0  # 2026-11-30T00:53:20Z


def test_an_event_has_a_unique_id_a_type_and_an_rfc3339_time() -> None:
    events = [new_event("key.revoked", {"keyId": "k"}, NOW) for _ in range(1000)]
    assert len({e["id"] for e in events}) == 1000
    event = events[0]
    assert list(event) == ["id", "type", "createdAt", "data"]
    assert re.fullmatch(r"evt_[0-9a-f]{32}", event["id"])
    assert event["createdAt"] == "2026-11-30T00:53:20Z"


def test_the_signature_is_the_hmac_of_the_exact_body() -> None:
    body = render(new_event("upstream.up", {"upstream": "a"}, NOW), "json")
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature("s3cret", body) == f"sha256={expected}"
    assert signature("s3cret", body + b" ") != signature("s3cret", body)


def test_a_delivery_renders_the_same_bytes_after_a_round_trip() -> None:
    event = new_event("key.expiring", {"keyId": "k", "days": 7, "name": "é"}, NOW)
    hook = Webhook("https://h.example/x", "s")
    (delivery,) = deliveries(event, (hook,), NOW)
    assert Delivery.decode(delivery.encode()) == delivery
    again = Delivery.decode(delivery.failed("503", NOW + 1, 2.0).encode())
    assert again.attempts == 1 and again.id == delivery.id == f"{event['id']}.{hook_id(hook)}"
    assert render(again.event, "json") == render(event, "json") == orjson.dumps(event)
    assert (again.state, again.last, again.at, again.next) == ("retrying", "503", NOW + 1, NOW + 3)
    sent = Delivery.decode(again.ended("sent", "200", NOW + 3).encode())
    assert (sent.state, sent.last, sent.next, sent.attempts_made) == ("sent", "200", None, 2)


def test_only_webhooks_that_asked_get_a_delivery() -> None:
    event = new_event("upstream.down", {"upstream": "a", "since": "x"}, NOW)
    hooks = (
        Webhook("https://a.example", "s", events=("key.revoked",)),
        Webhook("https://b.example", "s"),
        Webhook("https://b.example", "s", format="slack"),
    )
    got = deliveries(event, hooks, NOW)
    assert [d.hook for d in got] == [hook_id(hooks[1]), hook_id(hooks[2])]
    test = new_event(TEST, {"message": "hello"}, NOW)
    assert len(deliveries(test, hooks, NOW)) == 3  # a test event goes to every webhook
    assert hook_id(hooks[1]) != hook_id(hooks[2])
    assert hook_id(Webhook("https://b.example", "other secret")) == hook_id(hooks[1])


def test_the_retry_schedule() -> None:
    delays = [retry_delay(n) for n in range(1, 16)]
    assert delays[0] <= 5.0  # the first retry within 5 s
    assert delays[:5] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert max(delays) == 600.0 and delays == sorted(delays)
    assert [retry_delay(n, first=0.2) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]  # tests shorten it


@pytest.mark.parametrize(
    ("kind", "data", "text"),
    [
        (
            "usage.threshold",
            {"keyId": "k1", "owner": "acme", "limit": "dailyLimit", "percent": 80,
             "used": 8000, "max": 10000, "unit": "tokens", "period": "2026-12-06"},
            "Key k1 has used 80% of its dailyLimit for 2026-12-06 (8,000 tokens of 10,000 tokens)",
        ),
        (
            "usage.threshold",
            {"owner": "acme", "limit": "planMonthlyBudgetUsd", "percent": 100,
             "used": 10.5, "max": 10.0, "unit": "usd", "period": "2026-12"},
            "Owner acme has used 100% of its planMonthlyBudgetUsd for 2026-12 ($10.50 of $10.00)",
        ),
        (
            "usage.threshold",
            {"keyId": "k1", "owner": "acme", "limit": "tpmLimit", "percent": 50,
             "used": 500, "max": 1000, "unit": "tokens", "period": "minute"},
            "Key k1 has used 50% of its tpmLimit for this minute (500 tokens of 1,000 tokens)",
        ),
        (
            "key.expiring",
            {"keyId": "k1", "owner": "acme", "name": "CI", "expiresAt": "2027-01-01T00:00:00Z",
             "days": 7},
            "Key k1 (CI) of acme expires within 7 day(s), at 2027-01-01T00:00:00Z",
        ),
        (
            "key.revoked",
            {"keyId": "k1", "owner": "acme", "name": "", "reason": None, "revokedBy": "owner",
             "revokedAt": "2026-12-01T00:00:00Z"},
            "Key k1 of acme was revoked by owner",
        ),
        (
            "upstream.down",
            {"upstream": "gpu-1", "since": "2026-12-01T00:00:00Z"},
            "Upstream gpu-1 is down (no answer since 2026-12-01T00:00:00Z)",
        ),
        ("upstream.up", {"upstream": "gpu-1"}, "Upstream gpu-1 is up again"),
        ("alert.test", {"message": "<!here> hi"}, "Test event: &lt;!here&gt; hi"),
    ],
)  # fmt: skip
def test_slack_lines(kind: str, data: dict[str, object], text: str) -> None:
    event = new_event(kind, data, NOW)
    assert summary(event) == f"[gateway] {text} ({event['id']})"
    assert orjson.loads(render(event, "slack")) == {"text": summary(event)}
