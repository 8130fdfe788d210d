"""The alert events on the admin listener and ``gateway alerts``: a real gateway, a real webhook
receiver on loopback and the command as a subprocess. Recent events with the state of each
delivery, one event by id, a test event through every webhook, bounds and the admin token."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import replace
from typing import Any

import aiohttp
import orjson

from gateway.server import Server
from tests.alerts.conftest import SECRET, Receiver, alerts_of, alerts_yaml
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream

TOKEN = "admin-token-for-alerts-0123456789"
EVENT_ID = re.compile(r"^evt_[0-9a-f]{32}$")


async def start(factory: GatewayFactory, fake: FakeUpstream, alerts: str) -> Server:
    return await factory(gateway_yaml({"fake": fake.url}, extra=alerts, admin_token=TOKEN))


async def admin(
    server: Server, method: str, path: str, body: Any = None, token: str | None = TOKEN
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"http://127.0.0.1:{server.admin_port}{path}", json=body, headers=headers
        ) as answer,
    ):
        return answer.status, orjson.loads(await answer.read())


async def revoked_key(server: Server) -> str:
    status, key = await admin(server, "POST", "/admin/keys", {"owner": "acme", "name": "CI"})
    assert status == 201, key
    status, _ = await admin(server, "POST", f"/admin/keys/{key['id']}/revoke", {"reason": "x"})
    assert status == 200
    return str(key["id"])


async def settled_event(server: Server, event_id: str, state: str) -> dict[str, Any]:
    """The event once every delivery is in ``state`` (within 10 s)."""
    async with asyncio.timeout(10):
        while True:
            status, event = await admin(server, "GET", f"/admin/alerts/events/{event_id}")
            if status == 200 and all(d["state"] == state for d in event["deliveries"]):
                return dict(event)
            await asyncio.sleep(0.05)


async def cli(server: Server, *args: str) -> tuple[int, str, str]:
    """``python -m gateway alerts ARGS``; the event loop keeps serving while it runs."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    target = ["--admin-url", f"http://127.0.0.1:{server.admin_port}", "--admin-token", TOKEN]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "alerts", *args, *target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_recent_events_with_the_state_of_each_delivery(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    slack = alerts_yaml(receiver.url, form="slack").splitlines()[-1]  # a second webhook
    server = await start(gateway_factory, fake, alerts_yaml(receiver.url) + slack + "\n")
    receiver.fail_times = 1  # the first POST of all gets a 500, then 200s
    first = await revoked_key(server)
    await receiver.wait(lambda: len(receiver.posts) == 3)  # 2 webhooks, one retried
    second = await revoked_key(server)
    await receiver.wait(lambda: len(receiver.posts) == 5)
    status, answer = await admin(server, "GET", "/admin/alerts/events?limit=5")
    assert status == 200, answer
    assert (answer["enabled"], answer["webhooks"]) == (True, 2)
    events = answer["events"]
    assert [e["data"]["keyId"] for e in events] == [second, first]  # newest first
    event = await settled_event(server, events[1]["id"], "sent")
    assert EVENT_ID.match(event["id"]) and event["type"] == "key.revoked"
    deliveries = sorted(event["deliveries"], key=lambda d: d["attempts"])
    assert {d["format"] for d in deliveries} == {"json", "slack"}
    assert [d["attempts"] for d in deliveries] == [1, 2]  # one webhook needed a retry
    for d in deliveries:
        assert d["webhook"] == "127.0.0.1" and d["lastResult"] == "200"
        assert re.fullmatch(r"[0-9a-f]{16}", d["hook"]) and d["nextAttemptAt"] is None
        assert receiver.url not in orjson.dumps(answer).decode()  # a host, never the URL
    status, newest = await admin(server, "GET", "/admin/alerts/events?limit=1")
    assert [e["id"] for e in newest["events"]] == [events[0]["id"]]
    assert len(newest["events"][0]["deliveries"]) == 2


async def test_the_routes_are_bounded_and_need_the_token(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    server = await start(gateway_factory, fake, alerts_yaml(receiver.url))
    for path in ("/admin/alerts/events", "/admin/alerts/events/evt_" + "0" * 32):
        status, body = await admin(server, "GET", path, token=None)
        assert status == 401 and body["error"]["code"] == "invalid_admin_token"
    status, _ = await admin(server, "POST", "/admin/alerts/test", {}, token="wrong")
    assert status == 401 and receiver.posts == []
    for limit in ("0", "201", "-1", "abc", "1e3", "9" * 40):
        status, body = await admin(server, "GET", f"/admin/alerts/events?limit={limit}")
        assert status == 400 and body["error"]["param"] == "limit", (limit, body)
    for event_id in ("evt_" + "0" * 32, "nope", "evt_" + "a" * 33, "x" * 5000):
        status, body = await admin(server, "GET", f"/admin/alerts/events/{event_id}")
        assert status in (404, 414) or status == 400, (event_id, status)
    for body in ({"message": ""}, {"message": "x" * 501}, {"message": 5}, {"other": 1}, []):
        status, answer = await admin(server, "POST", "/admin/alerts/test", body)
        assert status == 400, (body, answer)
    assert receiver.posts == []


async def test_a_test_event_reaches_every_webhook_signed(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    only_revoked = alerts_yaml(receiver.url, events="[key.revoked]")  # still gets the test
    server = await start(gateway_factory, fake, only_revoked)
    status, queued = await admin(server, "POST", "/admin/alerts/test", {"message": "hi <team>"})
    assert status == 202 and queued["webhooks"] == 1 and queued["type"] == "alert.test"
    await receiver.wait(lambda: len(receiver.posts) == 1)
    post = receiver.posts[0]
    assert post.signed_with(SECRET) and post.event_id == queued["id"]
    assert post.body["data"] == {"message": "hi <team>", "requestedBy": "admin"}
    event = await settled_event(server, queued["id"], "sent")
    assert event["deliveries"][0]["attempts"] == 1


async def test_gateway_alerts_test_follows_the_deliveries(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    server = await start(gateway_factory, fake, alerts_yaml(receiver.url))
    code, out, err = await cli(server, "test", "--message", "from the CLI")
    assert (code, err) == (0, ""), err
    assert receiver.posts[0].body["data"]["message"] == "from the CLI"
    assert receiver.posts[0].event_id in out
    assert re.search(r"127\.0\.0\.1\s+json\s+sent\s+1\s+200", out), out
    receiver.failing = 503
    code, out, err = await cli(server, "test", "--wait", "1")
    assert code == 1 and re.search(r"127\.0\.0\.1\s+json\s+retrying\s+1\s+503", out), out
    code, out, err = await cli(server, "test", "--wait", "0", "--json")
    assert code == 0 and EVENT_ID.match(orjson.loads(out)["id"]), out
    code, out, err = await cli(server, "events", "--limit", "2")
    assert code == 0 and out.count("alert.test") == 2, out
    assert "1 webhook(s)" in out and "127.0.0.1 retrying" in out, out
    code, out, err = await cli(server, "events", "--limit", "0")
    assert code == 2 and "from 1 to 200" in err


async def test_without_webhooks_there_is_nothing_to_test(
    gateway_factory: GatewayFactory, fake: FakeUpstream
) -> None:
    server = await start(gateway_factory, fake, "")
    status, body = await admin(server, "POST", "/admin/alerts/test", {})
    assert status == 409 and body["error"]["code"] == "alerts_not_configured"
    status, body = await admin(server, "GET", "/admin/alerts/events")
    assert status == 200 and body == {"enabled": False, "webhooks": 0, "queued": 0, "events": []}
    code, out, _ = await cli(server, "events")
    assert code == 0 and "Alerts are off" in out


async def test_a_receiver_down_for_many_retries_gets_the_event_once(
    gateway_factory: GatewayFactory, fake: FakeUpstream, receiver: Receiver
) -> None:
    """The contract's "down for 10 s" at a tenth of the time: the retry schedule starts at
    0.2 s instead of 2 s (0.2, 0.4, 0.8, … : attempts at 0, 0.2, 0.6, 1.4 s; the sender looks
    for due deliveries every 0.05 s instead of every second) and the receiver is down for 1 s,
    so the event waits through the same 3 failed attempts as with 2 s and 10 s, and arrives
    once, at the 4th."""
    server = await start(gateway_factory, fake, alerts_yaml(receiver.url))
    sender = alerts_of(server).sender
    sender.tuning = replace(sender.tuning, first_retry=0.2, poll=0.05)
    await receiver.stop()  # connections refused
    loop = asyncio.get_running_loop()
    down_at = loop.time()
    status, queued = await admin(server, "POST", "/admin/alerts/test", {})
    assert status == 202
    async with asyncio.timeout(5):
        while True:  # failed attempts, as the admin API shows them
            _, event = await admin(server, "GET", f"/admin/alerts/events/{queued['id']}")
            if event["deliveries"][0]["attempts"] >= 2:
                break
            await asyncio.sleep(0.05)
    delivery = event["deliveries"][0]
    assert delivery["state"] == "retrying" and delivery["nextAttemptAt"] is not None
    assert delivery["lastResult"].startswith("Client")  # a refused connection, by its name
    await asyncio.sleep(max(0.0, down_at + 1.0 - loop.time()))  # the outage's planned length
    await receiver.start()  # back, on the same port
    up_at = loop.time()
    event = await settled_event(server, queued["id"], "sent")
    assert len(receiver.posts) == 1 and receiver.posts[0].event_id == queued["id"]
    assert receiver.posts[0].at >= up_at and receiver.posts[0].signed_with(SECRET)
    attempts = int(receiver.posts[0].headers["X-Gateway-Delivery-Attempt"])
    assert attempts == event["deliveries"][0]["attempts"] >= 4
