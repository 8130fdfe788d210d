"""Alert events as a webhook receiver sees them: real gateways and a real receiver on loopback.
Signed JSON with a unique id, the Slack form, retries after a failure (the first within 5 s),
giving up (counted), thresholds once per period, key and upstream events."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime

import aiohttp
from aiohttp import web

from gateway.alerts.thresholds import UsageSnapshot
from gateway.config.schema import Plan
from gateway.records import KeyRecord, Spent, Verdict
from gateway.server import Server
from tests.alerts.conftest import (
    SECRET,
    Receiver,
    admin,
    alerts_of,
    alerts_yaml,
    new_key,
    revoke,
)
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream, completion

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def start(factory: GatewayFactory, fake: FakeUpstream, alerts: str) -> Server:
    return await factory(gateway_yaml({"fake": fake.url}, extra=alerts))


async def metrics_text(server: Server) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.admin_port}/metrics") as answer,
    ):
        return await answer.text()


async def test_a_revoked_key_is_one_signed_event(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    server = await start(gateway_factory, fake, alerts_yaml(receiver.url))
    first, second = await new_key(server, name="CI"), await new_key(server)
    await revoke(server, first, "leaked in a log")
    await receiver.wait(lambda: len(receiver.of("key.revoked")) == 1)
    post = receiver.of("key.revoked")[0]
    assert post.signed_with(SECRET)
    assert not post.signed_with("another secret")
    assert post.headers["Content-Type"] == "application/json"
    event = post.body
    assert set(event) == {"id", "type", "createdAt", "data"}
    assert re.fullmatch(r"evt_[0-9a-f]{32}", event["id"]) and event["id"] == post.event_id
    assert event["type"] == "key.revoked" and RFC3339.match(event["createdAt"])
    assert event["data"] == {
        "keyId": first,
        "owner": "acme",
        "name": "CI",
        "reason": "leaked in a log",
        "revokedBy": "admin",
        "revokedAt": event["data"]["revokedAt"],
    }
    # later changes of the revoked key say nothing more (each is broadcast and looked at)
    for name in ("renamed", "renamed again"):
        status, _ = await admin(server, "PATCH", f"/admin/keys/{first}", {"name": name})
        assert status == 200
    await revoke(server, second)  # a barrier: the next event
    await receiver.wait(lambda: len(receiver.posts) == 2)
    assert [p.body["data"]["keyId"] for p in receiver.posts] == [first, second]


async def test_slack_format_is_one_signed_line(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    server = await start(
        gateway_factory, fake, alerts_yaml(receiver.url, form="slack", events="[key.revoked]")
    )
    key = await new_key(server, name="Prod <!channel>")
    await revoke(server, key, "leaked & rotated")
    await receiver.wait(lambda: len(receiver.posts) == 1)
    post = receiver.posts[0]
    assert post.signed_with(SECRET)
    assert set(post.body) == {"text"}
    text = post.body["text"]
    assert "\n" not in text and key in text and "acme" in text
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text  # cannot ping a channel
    assert "leaked &amp; rotated" in text
    assert re.search(r"\(evt_[0-9a-f]{32}\)$", text)


async def test_a_failed_delivery_is_retried_within_5_seconds(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    server = await start(gateway_factory, fake, alerts_yaml(receiver.url))
    receiver.fail_times = 1  # the first attempt gets a 500
    await revoke(server, await new_key(server))
    await receiver.wait(lambda: len(receiver.posts) == 2)
    failed, retried = receiver.posts
    assert retried.at - failed.at < 5.0
    assert retried.raw == failed.raw and retried.event_id == failed.event_id  # the same event
    assert retried.signed_with(SECRET)
    assert [p.headers["X-Gateway-Delivery-Attempt"] for p in receiver.posts] == ["1", "2"]
    text = await metrics_text(server)
    assert 'gateway_alert_deliveries_total{result="failed",type="key.revoked"} 1.0' in text
    assert 'gateway_alert_deliveries_total{result="sent",type="key.revoked"} 1.0' in text
    assert 'gateway_alert_deliveries_total{result="queued",type="key.revoked"} 1.0' in text


async def test_a_receiver_that_was_down_gets_the_event(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    server = await start(gateway_factory, fake, alerts_yaml(receiver.url))
    await receiver.stop()  # not listening: connections are refused
    await revoke(server, await new_key(server))
    down = asyncio.get_running_loop().time()
    text = ""
    while 'result="failed",type="key.revoked"} 1.0' not in text:  # refused
        assert asyncio.get_running_loop().time() - down < 10, text
        text = await metrics_text(server)
        await asyncio.sleep(0.05)
    await receiver.start()  # back, on the same port
    await receiver.wait(lambda: len(receiver.posts) == 1)
    assert receiver.posts[0].signed_with(SECRET)
    assert receiver.posts[0].headers["X-Gateway-Delivery-Attempt"] == "2"


async def test_delivery_gives_up_and_counts_it(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    server = await start(gateway_factory, fake, alerts_yaml(receiver.url, "give_up_after: 3"))
    receiver.failing = 503
    await revoke(server, await new_key(server))
    started = asyncio.get_running_loop().time()
    text = ""
    while 'gateway_alert_deliveries_total{result="dropped",type="key.revoked"} 1.0' not in text:
        assert asyncio.get_running_loop().time() - started < 10, text
        text = await metrics_text(server)
        await asyncio.sleep(0.05)
    assert len(receiver.posts) == 2  # at 0 s and 2 s; the next (6 s) would pass the 3 s
    assert alerts_of(server).sender.leading
    status, answer = await admin(server, "GET", "/admin/alerts/events?limit=1")
    assert status == 200 and answer["queued"] == 0, answer
    (delivery,) = answer["events"][0]["deliveries"]
    assert (delivery["state"], delivery["attempts"]) == ("dropped", 2)
    assert delivery["lastResult"] == "no 2xx in 2 attempts (the last: 503)"


def _record(key_id: str, daily: int | None = None, monthly: int | None = None) -> KeyRecord:
    return KeyRecord(id=key_id, owner="acme", key_hash="0" * 64, daily_limit=daily,
                     monthly_limit=monthly)  # fmt: skip


async def test_thresholds_fire_once_per_period(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    server = await start(gateway_factory, fake, alerts_yaml(receiver.url))
    alerts = alerts_of(server)
    key = _record("k1", daily=1000)
    plan = Plan("team", monthly_tokens=10_000)
    day1, day2 = 20261206, 20261207
    for used in (400, 600, 700, 850, 1000, 1000, 999):  # as admissions report them
        alerts.observe_usage(key, plan, UsageSnapshot(day1, 202612, day_tokens=used))
    alerts.observe_usage(key, plan, UsageSnapshot(day2, 202612, day_tokens=500))
    alerts.observe_usage(key, plan, UsageSnapshot(day2, 202612, owner_month_tokens=8000))
    await receiver.wait(lambda: len(receiver.posts) == 6)
    got = [
        (e["data"]["limit"], e["data"]["percent"], e["data"]["period"], e["data"]["used"])
        for e in sorted((p.body for p in receiver.posts), key=lambda e: e["createdAt"])
    ]
    assert sorted(got) == sorted(
        [
            ("dailyLimit", 50, "2026-12-06", 600),
            ("dailyLimit", 80, "2026-12-06", 850),
            ("dailyLimit", 100, "2026-12-06", 1000),
            ("dailyLimit", 50, "2026-12-07", 500),
            ("planMonthlyTokens", 50, "2026-12", 8000),
            ("planMonthlyTokens", 80, "2026-12", 8000),
        ]
    )
    owner_event = next(p.body for p in receiver.posts if p.body["data"]["limit"].startswith("plan"))
    assert owner_event["data"]["owner"] == "acme" and "keyId" not in owner_event["data"]
    assert owner_event["data"]["max"] == 10_000 and owner_event["data"]["unit"] == "tokens"
    # a barrier: the next event arrives, and nothing was sent again before it
    alerts.observe_usage(key, plan, UsageSnapshot(day2, 202612, day_tokens=800))
    await receiver.wait(lambda: len(receiver.posts) == 7)
    assert receiver.posts[-1].body["data"]["percent"] == 80


async def test_money_thresholds_from_an_admitting_verdict(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    server = await start(gateway_factory, fake, alerts_yaml(receiver.url, form="slack"))
    key = KeyRecord(id="k2", owner="acme", key_hash="0" * 64, daily_budget=2_000_000)
    spent = Spent(day_tokens=10, day_cost=1_700_000)  # $1.70 of a $2.00 daily budget
    verdict = Verdict(True, day=20261206, month=202612, now=1_796_000_000.0, spent=spent)
    alerts_of(server).observe_verdict(key, Plan("team", monthly_budget_usd=100.0), verdict)
    await receiver.wait(lambda: len(receiver.posts) == 2)
    texts = sorted(p.body["text"] for p in receiver.posts)
    assert texts[0].startswith(
        "[gateway] Key k2 has used 50% of its dailyBudgetUsd for 2026-12-06 ($1.70 of $2.00)"
    )
    assert "80% of its dailyBudgetUsd" in texts[1]


async def test_a_key_about_to_expire(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    in_two_days = datetime.fromtimestamp(time.time() + 2 * 86_400, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    keys = (
        f"keys: {{static: [{{id: test, owner: tests, sha256: '{TEST_KEY_SHA}'}}, "
        f"{{id: declared, owner: ops, sha256: '{'1' * 64}', expires_at: '{in_two_days}'}}]}}\n"
    )
    server = await start(
        gateway_factory, fake, keys + alerts_yaml(receiver.url, events="[key.expiring]")
    )
    await receiver.wait(lambda: len(receiver.posts) == 1)  # the declared key, at start
    assert receiver.posts[0].body["data"] == {
        "keyId": "declared",
        "owner": "ops",
        "name": "",
        "expiresAt": in_two_days,
        "days": 7,
    }
    soon = await new_key(server, name="soon", expiresInDays=3)
    await receiver.wait(lambda: len(receiver.posts) == 2)
    data = receiver.posts[1].body["data"]
    assert data["keyId"] == soon and data["days"] == 7 and data["name"] == "soon"
    expires = datetime.fromisoformat(data["expiresAt"].replace("Z", "+00:00"))
    assert 2.9 < (expires - datetime.now(UTC)).total_seconds() / 86_400 < 3.1
    tomorrow = await new_key(server, expiresInDays=1)
    await new_key(server, expiresInDays=30)  # nothing to say yet
    await receiver.wait(lambda: len(receiver.posts) == 3)
    assert receiver.posts[2].body["data"]["keyId"] == tomorrow
    assert receiver.posts[2].body["data"]["days"] == 1  # the 7-day notice is past already
    await alerts_of(server).scan_expiries()  # the leader's hourly look: nothing new to say
    assert 'result="queued",type="key.expiring"} 3.0' in await metrics_text(server)


async def test_an_upstream_down_then_up(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    only = "[upstream.down, upstream.up]"
    server = await start(
        gateway_factory, fake, alerts_yaml(receiver.url, "down_after: 0.3", events=only)
    )
    healthy = False

    async def script(request: web.Request, body: object) -> web.StreamResponse:
        if not healthy:
            return web.Response(status=500)
        return web.json_response(completion("fine"))

    fake.script = script

    async def chat() -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions",
                json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
                headers=AUTH,
            ) as answer,
        ):
            return answer.status

    assert await chat() >= 500  # the upstream fails; its health probe fails too
    await receiver.wait(lambda: len(receiver.posts) == 1)
    down = receiver.posts[0].body
    assert down["type"] == "upstream.down" and down["data"]["upstream"] == "fake"
    assert RFC3339.match(down["data"]["since"])
    healthy = True
    assert await chat() == 200  # it answers again
    await receiver.wait(lambda: len(receiver.posts) == 2)
    assert receiver.posts[1].body["type"] == "upstream.up"
    assert receiver.posts[1].body["data"] == {"upstream": "fake"}


async def test_without_webhooks_nothing_runs(
    gateway_factory: GatewayFactory, fake: FakeUpstream
) -> None:
    server = await start(gateway_factory, fake, "")
    alerts = alerts_of(server)
    assert not alerts.active and not alerts._tasks and not alerts.sender.leading
    alerts.observe_usage(_record("k", daily=10), Plan("p"), UsageSnapshot(20261206, 202612, 0, 10))
    alerts.key_changed("a" * 64)
    assert not alerts._pending and not alerts._keys
