"""The public key API (``/api/keys...``, ``/api/usage/summary``) on a real gateway, with the static
test key (owner ``tests``) as the caller, and the created keys used for chat through the SDK."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest
from multidict import CIMultiDict

from gateway.auth.keys import SECRET_CHARS, checksum
from gateway.server import Server
from tests.clients import TEST_KEY
from tests.conftest import GatewayFactory
from tests.web import admin, call, chat, config, public, until


@pytest.fixture
async def server(gateway_factory: GatewayFactory, mock: tuple[int, Any]) -> Server:
    return await gateway_factory(config(mock[0]))


async def create(server: Server, **fields: Any) -> dict[str, Any]:
    reply = await public(server)("POST", "/api/keys", {"name": "k", **fields})
    assert reply.status == 201, reply.body
    return reply.body  # type: ignore[no-any-return]


async def refused(server: Server, key: str, model: str = "mock-model") -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        await chat(server, key, model)
    return info.value


async def test_the_whole_lifecycle_as_the_caller(server: Server) -> None:
    """Create → list → show → update → chat → revoke → reactivate → regenerate → delete."""
    api = public(server)
    created = await create(
        server, name="Production Key", description="backend", permissions=["chat"], rpmLimit=60
    )
    key, key_id = created.pop("key"), created["id"]
    assert key.startswith(f"sk_gw_{key_id}_")
    assert created["owner"] == "tests" and created["status"] == "ACTIVE"
    assert created["keyPrefix"] == f"sk_gw_{key_id}_…" and created["rpmLimit"] == 60
    assert "keyHash" not in created and key not in str(created)

    second = await create(server, name="second")
    listed = (await api("GET", "/api/keys")).body
    assert [r["id"] for r in listed[:2]] == [second["id"], key_id]  # newest first
    assert "test" in [r["id"] for r in listed] and all("key" not in r for r in listed)
    assert (await api("GET", f"/api/keys/{key_id}")).body == created

    patched = await api("PATCH", f"/api/keys/{key_id}", {"name": "Renamed", "rpmLimit": None})
    assert patched.status == 200
    assert patched.body["name"] == "Renamed" and patched.body["rpmLimit"] is None
    assert await chat(server, key)

    revoked = await api("POST", f"/api/keys/{key_id}/revoke", {"reason": "rotated"})
    assert revoked.body["status"] == "REVOKED" and revoked.body["revokedReason"] == "rotated"
    error = await refused(server, key)
    assert (error.status_code, error.code) == (401, "key_revoked")

    reactivated = await api("POST", f"/api/keys/{key_id}/reactivate")
    assert reactivated.body["status"] == "ACTIVE" and reactivated.body["revokedAt"] is None
    assert await chat(server, key)

    regenerated = await api("POST", f"/api/keys/{key_id}/regenerate")
    assert regenerated.status == 200 and regenerated.body["id"] == key_id
    new_key = regenerated.body["key"]
    assert new_key != key and new_key.startswith(f"sk_gw_{key_id}_")
    error = await refused(server, key)
    assert (error.status_code, error.code) == (401, "invalid_api_key")
    assert await chat(server, new_key)

    deleted = await api("DELETE", f"/api/keys/{key_id}")
    assert (deleted.status, deleted.raw) == (204, b"")
    error = await refused(server, new_key)
    assert (error.status_code, error.code) == (401, "invalid_api_key")
    assert (await api("GET", f"/api/keys/{key_id}")).status == 404


async def test_an_expired_key_is_refused_and_cannot_be_reactivated(server: Server) -> None:
    api = public(server)
    created = await create(server, expiresInDays=30)
    assert created["expiresAt"] is not None
    patched = await api(
        "PATCH", f"/api/keys/{created['id']}", {"expiresAt": "2001-01-01T00:00:00Z"}
    )
    assert patched.body["status"] == "EXPIRED"
    error = await refused(server, created["key"])
    assert (error.status_code, error.code) == (401, "key_expired")
    again = await api("POST", f"/api/keys/{created['id']}/reactivate")
    assert (again.status, again.code) == (409, "key_expired")


async def test_an_invalid_allowlist_entry_is_named(server: Server) -> None:
    reply = await public(server)(
        "POST", "/api/keys", {"ipWhitelist": ["203.0.113.0/24", "300.1.2.3"]}
    )
    assert reply.status == 400
    assert "300.1.2.3" in reply.body["error"]["message"]
    assert reply.body["error"]["param"] == "ipWhitelist"


async def test_the_ip_allowlist_is_enforced_on_chat_and_on_the_key_api(server: Server) -> None:
    created = await create(server, ipWhitelist=["10.0.0.0/8"])
    assert created["ipWhitelist"] == ["10.0.0.0/8"]
    error = await refused(server, created["key"])
    assert (error.status_code, error.code) == (403, "ip_not_allowed")
    reply = await call(
        server.port, "GET", "/api/keys", headers={"Authorization": f"Bearer {created['key']}"}
    )
    assert (reply.status, reply.code) == (403, "ip_not_allowed")


async def test_the_model_allowlist_and_permissions(server: Server) -> None:
    only_mock = await create(server, models=["mock-model"])
    assert await chat(server, only_mock["key"], "mock-model")
    error = await refused(server, only_mock["key"], "other-model")
    assert (error.status_code, error.code) == (403, "permission_denied")

    # a key cannot give a permission it lacks (the test key has chat only): the admin can
    vision = (
        await admin(server)("POST", "/admin/keys", {"owner": "tests", "permissions": ["vision"]})
    ).body
    refusal = await public(server)("POST", "/api/keys", {"permissions": ["vision"]})
    assert (refusal.status, refusal.code) == (403, "permission_denied")
    error = await refused(server, vision["key"])
    assert (error.status_code, error.code) == (403, "permission_denied")
    # the key API itself needs no permission
    listed = await call(server.port, "GET", "/api/keys", headers={"X-API-Key": vision["key"]})
    assert listed.status == 200


async def test_another_owners_keys_are_not_found(server: Server) -> None:
    theirs = await admin(server)("POST", "/admin/keys", {"owner": "acme", "name": "theirs"})
    assert theirs.status == 201
    key_id = theirs.body["id"]
    api = public(server)
    for method, path, body in [
        ("GET", f"/api/keys/{key_id}", None),
        ("PATCH", f"/api/keys/{key_id}", {"name": "mine now"}),
        ("DELETE", f"/api/keys/{key_id}", None),
        ("POST", f"/api/keys/{key_id}/revoke", {}),
        ("POST", f"/api/keys/{key_id}/regenerate", None),
        ("POST", f"/api/keys/{key_id}/reactivate", None),
        ("GET", f"/api/keys/{key_id}/usage", None),
        ("GET", f"/api/keys/{key_id}/requests", None),
        ("GET", f"/api/usage/summary?keyId={key_id}", None),
    ]:
        reply = await api(method, path, body)
        assert (reply.status, reply.code) == (404, "key_not_found"), (method, path)
    assert key_id not in str((await api("GET", "/api/keys")).body)
    assert (await api("GET", "/api/keys?owner=acme")).status == 403
    assert (await api("POST", "/api/keys", {"owner": "acme"})).status == 403
    assert (await api("POST", "/api/keys", {"owner": "tests"})).status == 201
    assert (await admin(server)("GET", f"/admin/keys/{key_id}")).body["name"] == "theirs"


def _forge_secret(key: str) -> str:
    """The same key id, another secret, a valid checksum: right format, wrong key."""
    body = key[: -(SECRET_CHARS + 6)] + "A" * SECRET_CHARS
    return body + checksum(body)


BAD = [
    ("empty bearer", {"Authorization": "Bearer "}),
    ("8 KB key", {"Authorization": "Bearer " + "k" * 8_000}),
    ("unicode key", {"Authorization": "Bearer clé-secrète-ключ"}),
    ("whitespace inside", {"Authorization": f"Bearer {TEST_KEY[:8]} {TEST_KEY[8:]}"}),
    ("no scheme", {"Authorization": TEST_KEY}),
    ("basic scheme", {"Authorization": f"Basic {TEST_KEY}"}),
]


@pytest.mark.parametrize("route", ["/api/keys", "/v1/chat/completions"])
async def test_bad_credentials_are_401(server: Server, route: str) -> None:
    method = "GET" if route == "/api/keys" else "POST"
    body = {"model": "mock-model", "messages": [{"role": "user", "content": "x"}]}
    for name, headers in BAD:
        reply = await call(server.port, method, route, body, headers=headers)
        assert (reply.status, reply.code) == (401, "invalid_api_key"), name
    huge = await call(server.port, method, route, body, headers={"X-API-Key": "k" * 10_240})
    assert (huge.status, huge.code) == (401, "invalid_api_key")
    created = await create(server)
    pairs: list[list[tuple[str, str]]] = [
        [("Authorization", f"Bearer {TEST_KEY}"), ("Authorization", f"Bearer {created['key']}")],
        [("Authorization", f"Bearer {TEST_KEY}"), ("X-API-Key", created["key"])],
    ]
    for pair in pairs:
        status = await _raw_headers(server, method, route, pair)
        assert status == 401, pair
    ok = await call(
        server.port, method, route, body, headers={"authorization": f"bearer {TEST_KEY}"}
    )
    assert ok.status in (200, 201), ok.body


async def _raw_headers(
    server: Server, method: str, route: str, pairs: list[tuple[str, str]]
) -> int:
    """A request with repeated headers (aiohttp's client sends a multidict as it is)."""
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"http://127.0.0.1:{server.port}{route}",
            headers=CIMultiDict(pairs),
            json={"model": "mock-model", "messages": [{"role": "user", "content": "x"}]},
        ) as r,
    ):
        return r.status


@pytest.mark.parametrize("route", ["/api/keys", "/v1/chat/completions"])
async def test_unknown_forged_and_wrong_keys_look_the_same(server: Server, route: str) -> None:
    """No oracle: an unknown key, a bad checksum and a wrong secret give byte-identical 401s."""
    created = await create(server)
    key = created["key"]
    method = "GET" if route == "/api/keys" else "POST"
    body = {"model": "mock-model", "messages": [{"role": "user", "content": "x"}]}
    bodies = set()
    for candidate in (
        "some-unknown-key-1234567890",
        key[:-1] + ("A" if key[-1] != "A" else "B"),
        _forge_secret(key),
    ):
        assert candidate != key
        reply = await call(
            server.port, method, route, body, headers={"Authorization": f"Bearer {candidate}"}
        )
        assert reply.status == 401
        bodies.add(reply.raw)
    assert len(bodies) == 1, bodies


async def test_bodies_and_parameters_are_checked(server: Server) -> None:
    api = public(server)
    created = await create(server)
    base = f"/api/keys/{created['id']}"
    for data in (b"{not json", b"[1, 2]", b'"text"'):
        reply = await call(server.port, "POST", "/api/keys", data=data, headers=api_headers())
        assert (reply.status, reply.code) == (400, "invalid_request"), data
    huge = b'{"name": "' + b"x" * 70_000 + b'"}'
    reply = await call(server.port, "POST", "/api/keys", data=huge, headers=api_headers())
    assert (reply.status, reply.code) == (413, "request_too_large")
    assert (await api("POST", "/api/keys", {"nope": 1})).body["error"]["param"] == "nope"
    assert (await api("POST", f"{base}/revoke", {"why": "x"})).status == 400
    for path, param in [
        (f"{base}/usage?days=0", "days"),
        (f"{base}/usage?days=91", "days"),
        (f"{base}/usage?days=ten", "days"),
        (f"{base}/requests?limit=101", "limit"),
        (f"{base}/requests?limit=-1", "limit"),
        ("/api/usage/summary?period=1y", "period"),
    ]:
        reply = await api("GET", path)
        assert reply.status == 400, path
        assert reply.body["error"]["param"] == param and param in reply.body["error"]["message"]


def api_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"}


async def test_usage_appears_after_chat(server: Server) -> None:
    api = public(server)
    created = await create(server)
    key_id = created["id"]
    empty = (await api("GET", f"/api/keys/{key_id}/usage?days=7")).body
    assert empty["keyId"] == key_id and empty["days"] == 7 and len(empty["daily"]) == 7
    assert empty["totals"] == {
        "requests": 0,
        "promptTokens": 0,
        "completionTokens": 0,
        "totalTokens": 0,
        "errors": 0,
    }
    assert set(empty["daily"][0]) == {
        "date",
        "requests",
        "promptTokens",
        "completionTokens",
        "totalTokens",
        "errors",
    }
    assert (await api("GET", f"/api/keys/{key_id}/requests")).body == []

    await chat(server, created["key"])
    await chat(server, created["key"])

    async def counted() -> bool:
        usage = (await api("GET", f"/api/keys/{key_id}/usage?days=7")).body
        return bool(usage["totals"]["requests"] == 2)

    await until(counted)
    usage = (await api("GET", f"/api/keys/{key_id}/usage")).body
    assert usage["days"] == 30 and usage["daily"][-1]["requests"] == 2
    today = usage["daily"][-1]
    assert today["totalTokens"] == today["promptTokens"] + today["completionTokens"] > 0

    history = (await api("GET", f"/api/keys/{key_id}/requests?limit=5")).body
    assert len(history) == 1
    assert set(history[0]) == {"date", "requests", "tokens", "errors", "avgLatencyMs"}
    assert history[0]["date"] == today["date"] and history[0]["tokens"] == today["totalTokens"]

    summary = (await api("GET", f"/api/usage/summary?period=7d&keyId={key_id}")).body
    assert set(summary) == {
        "period",
        "totalRequests",
        "inputTokens",
        "outputTokens",
        "cost",
        "latency",
        "errorRate",
        "byModel",
        "byApi",
    }
    assert summary["period"] == "7d" and summary["totalRequests"] == 2
    assert [(a["api"], a["requests"]) for a in summary["byApi"]] == [("chat", 2)]
    assert set(summary["latency"]) == {"p50Ms", "p95Ms"}
    assert [m["model"] for m in summary["byModel"]] == ["mock-model"]
    everything = (await api("GET", "/api/usage/summary")).body
    assert everything["period"] == "30d" and everything["totalRequests"] == 2
    other = (await api("GET", "/api/usage/summary?model=other-model")).body
    assert other["totalRequests"] == 0 and other["byModel"] == []


async def test_admin_routes_do_not_exist_on_the_public_listener(server: Server) -> None:
    for method, path in [
        ("GET", "/admin/keys?owner=tests"),
        ("PUT", "/admin/owners/tests"),
        ("POST", "/admin/reload"),
        ("GET", "/admin/usage/summary"),
    ]:
        reply = await public(server)(method, path)
        assert (reply.status, reply.code) == (404, "not_found"), path
