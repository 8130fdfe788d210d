"""The admin API on the admin listener: the token, keys for any owner, imports by hash, owner
plans, usage summaries, and JSON errors everywhere."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway.auth.keys import sha256_hex
from gateway.server import Server
from tests.conftest import GatewayFactory
from tests.web import ADMIN_TOKEN, admin, call, chat, config, public, until


@pytest.fixture
async def server(gateway_factory: GatewayFactory, mock: tuple[int, Any]) -> Server:
    return await gateway_factory(config(mock[0]))


async def test_the_whole_lifecycle_for_any_owner(server: Server) -> None:
    api = admin(server)
    created = await api("POST", "/admin/keys", {"owner": "acme", "name": "ci", "dailyLimit": 9000})
    assert created.status == 201
    key, key_id = created.body["key"], created.body["id"]
    assert created.body["owner"] == "acme" and created.body["dailyLimit"] == 9000
    assert await chat(server, key)

    listed = await api("GET", "/admin/keys?owner=acme")
    assert [r["id"] for r in listed.body] == [key_id]
    assert (await api("GET", "/admin/keys?owner=nobody")).body == []
    assert (await api("GET", f"/admin/keys/{key_id}")).body["name"] == "ci"
    assert (await api("GET", f"/admin/keys/{key_id}?owner=other")).status == 404
    patched = await api("PATCH", f"/admin/keys/{key_id}", {"permissions": ["chat", "vision"]})
    assert patched.body["permissions"] == ["chat", "vision"]

    assert (await api("POST", f"/admin/keys/{key_id}/revoke")).body["status"] == "REVOKED"
    with pytest.raises(openai.AuthenticationError) as info:
        await chat(server, key)
    assert info.value.code == "key_revoked"
    assert (await api("POST", f"/admin/keys/{key_id}/reactivate")).body["status"] == "ACTIVE"

    regenerated = await api("POST", f"/admin/keys/{key_id}/regenerate")
    assert await chat(server, regenerated.body["key"])
    with pytest.raises(openai.AuthenticationError):
        await chat(server, key)

    assert (await api("DELETE", f"/admin/keys/{key_id}")).status == 204
    assert (await api("GET", f"/admin/keys/{key_id}")).status == 404
    with pytest.raises(openai.AuthenticationError):
        await chat(server, regenerated.body["key"])


async def test_the_owner_must_be_named_where_one_is_needed(server: Server) -> None:
    api = admin(server)
    for method, path, body in [
        ("POST", "/admin/keys", {"name": "x"}),
        ("GET", "/admin/keys", None),
        ("GET", "/admin/usage/summary", None),
        ("POST", "/admin/keys", {"owner": "bad owner!"}),
        ("POST", "/admin/keys", {"owner": 7}),
    ]:
        reply = await api(method, path, body)
        assert (reply.status, reply.body["error"]["param"]) == (400, "owner"), (path, body)
    assert (await api("POST", "/admin/keys?owner=acme", {})).body["owner"] == "acme"


async def test_the_admin_token_is_required_under_admin(server: Server) -> None:
    for headers in [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": ADMIN_TOKEN},
        {"X-API-Key": ADMIN_TOKEN},
    ]:
        for path in ("/admin/keys?owner=acme", "/admin/no-such-thing", "/admin"):
            reply = await call(server.admin_port, "GET", path, headers=headers)
            assert reply.status == 401, (headers, path)
            assert reply.code == "invalid_admin_token"
            assert ADMIN_TOKEN not in reply.raw.decode()
    lower = await call(
        server.admin_port,
        "GET",
        "/admin/keys?owner=a",
        headers={"authorization": f"bearer {ADMIN_TOKEN}"},
    )
    assert lower.status == 200
    for path in ("/healthz", "/readyz"):
        assert (await call(server.admin_port, "GET", path)).status == 200


async def test_admin_errors_are_json(server: Server) -> None:
    api = admin(server)
    missing = await api("GET", "/admin/nothing-here")
    assert (missing.status, missing.code) == (404, "not_found")
    assert "/admin/" in missing.body["error"]["message"]
    wrong_method = await api("PUT", "/admin/keys")
    assert (wrong_method.status, wrong_method.code) == (405, "method_not_allowed")
    reload = await api("POST", "/admin/reload")  # this test's config is not a file
    assert reload.status == 422
    assert reload.body["ok"] is False and "test.yaml" in reload.body["errors"][0]
    outside = await call(server.admin_port, "GET", "/nothing")
    assert outside.status == 404 and outside.body["error"]["type"] == "invalid_request_error"


async def test_a_key_of_another_format_is_imported_by_hash(server: Server) -> None:
    legacy = "wayscloud_llm_abc12_0123456789abcdefghijklmnop"
    api = admin(server)
    reply = await api("POST", "/admin/keys", {"owner": "legacy", "sha256": sha256_hex(legacy)})
    assert reply.status == 201 and "key" not in reply.body
    assert reply.body["keyPrefix"].endswith("(imported)")
    assert await chat(server, legacy)
    again = await api("POST", "/admin/keys", {"owner": "legacy", "sha256": sha256_hex(legacy)})
    assert (again.status, again.code) == (409, "key_exists")
    bad = await api("POST", "/admin/keys", {"owner": "legacy", "sha256": "abc"})
    assert (bad.status, bad.body["error"]["param"]) == (400, "sha256")
    public_import = await public(server)("POST", "/api/keys", {"sha256": sha256_hex("x")})
    assert public_import.status == 400  # imports are for the admin only


async def test_the_plan_limits_keys_and_a_new_plan_lifts_it(
    gateway_factory: GatewayFactory, mock: tuple[int, Any]
) -> None:
    plans = "plans: {free: {max_keys: 2}, pro: {max_keys: 10}}\ndefault_plan: free\n"
    server = await gateway_factory(config(mock[0], plans))
    api = public(server)
    for _ in range(2):
        assert (await api("POST", "/api/keys", {})).status == 201
    refused = await api("POST", "/api/keys", {})
    assert (refused.status, refused.code) == (409, "plan_key_limit")
    assert "free" in refused.body["error"]["message"]

    bad = await admin(server)("PUT", "/admin/owners/tests", {"plan": "platinum"})
    assert (bad.status, bad.body["error"]["param"]) == (400, "plan")
    moved = await admin(server)("PUT", "/admin/owners/tests", {"plan": "pro"})
    assert (moved.status, moved.body) == (200, {"owner": "tests", "plan": "pro"})
    assert (await api("POST", "/api/keys", {})).status == 201


async def test_the_admin_usage_summary(server: Server) -> None:
    api = admin(server)
    created = (await api("POST", "/admin/keys", {"owner": "acme"})).body
    await chat(server, created["key"])

    async def counted() -> bool:
        body = (await api("GET", "/admin/usage/summary?owner=acme&period=7d")).body
        return bool(body["totalRequests"] == 1)

    await until(counted)
    summary = (await api("GET", f"/admin/usage/summary?owner=acme&keyId={created['id']}")).body
    assert summary["period"] == "30d" and summary["byModel"][0]["model"] == "mock-model"
    assert summary["inputTokens"] > 0 and summary["errorRate"] == 0.0
    usage = (await api("GET", f"/admin/keys/{created['id']}/usage?days=1")).body
    assert usage["days"] == 1 and usage["totals"]["requests"] == 1
    assert (await api("GET", "/admin/usage/summary?owner=tests")).body["totalRequests"] == 0
