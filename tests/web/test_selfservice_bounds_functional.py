"""Self-service never gives more than the admin gave (docs/api.md), on a real gateway: a key created
or changed through ``/api/keys`` gets at most the calling key's rights; what the admin set on a
key is its ceiling (lowered by the owner, never raised or removed); only the admin reactivates
what the admin revoked; a key cannot regenerate (and so obtain) a stronger sibling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.auth import grants
from gateway.server import Server
from tests.conftest import GatewayFactory
from tests.web import Reply, admin, call, config

Api = Callable[..., Awaitable[Reply]]
LIMITS = ("rpmLimit", "maxConcurrency", "dailyLimit", "monthlyLimit")


@pytest.fixture(params=["memory", "redis"])
async def server(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory, mock: tuple[int, Any]
) -> Server:
    """Both stores: the ceiling and the revoker must survive the store's round trip."""
    extra = ""
    if request.param == "redis":
        extra = f"store: {{url: '{request.getfixturevalue('redis_url')}'}}\n"
    return await gateway_factory(config(mock[0], extra))


def as_key(server: Server, key: str) -> Api:
    """Calls on the public listener with ``key``."""

    async def request(method: str, path: str, json: Any = None) -> Reply:
        return await call(server.port, method, path, json, headers={"X-API-Key": key})

    return request


async def issue(server: Server, **fields: Any) -> tuple[str, Api]:
    """A key the admin creates for owner ``acme``: its id, and calls made with it."""
    reply = await admin(server)("POST", "/admin/keys", {"owner": "acme", **fields})
    assert reply.status == 201, reply.body
    return reply.body["id"], as_key(server, reply.body["key"])


def refused(reply: Reply, field: str) -> None:
    """403 permission_denied naming ``field`` (in the message and as ``param``)."""
    assert (reply.status, reply.code) == (403, "permission_denied"), reply.body
    assert field in reply.body["error"]["message"] and reply.body["error"]["param"] == field


async def test_a_key_cannot_lift_what_the_admin_set_on_it(server: Server) -> None:
    """The issue's probe: a key PATCHing itself to no limits and no allowlist."""
    key_id, me = await issue(
        server, rpmLimit=10, monthlyLimit=1000, ipWhitelist=["127.0.0.0/8"], expiresInDays=30
    )
    before = (await admin(server)("GET", f"/admin/keys/{key_id}")).body
    for body, field in [
        ({"rpmLimit": None, "monthlyLimit": None, "ipWhitelist": []}, "ipWhitelist"),
        ({"rpmLimit": None}, "rpmLimit"),
        ({"monthlyLimit": None}, "monthlyLimit"),
        ({"monthlyLimit": 1001}, "monthlyLimit"),
        ({"ipWhitelist": []}, "ipWhitelist"),
        ({"ipWhitelist": ["127.0.0.0/7"]}, "ipWhitelist"),
        ({"ipWhitelist": ["::ffff:0:0/96"]}, "ipWhitelist"),
        ({"expiresAt": None}, "expiresAt"),
        ({"expiresInDays": 31}, "expiresInDays"),
        ({"name": "renamed", "rpmLimit": 11}, "rpmLimit"),
    ]:
        refused(await me("PATCH", f"/api/keys/{key_id}", body), field)
    assert (await admin(server)("GET", f"/admin/keys/{key_id}")).body == before  # untouched

    lowered = await me(
        "PATCH",
        f"/api/keys/{key_id}",
        {"rpmLimit": 5, "ipWhitelist": ["127.0.0.1", "::ffff:127.0.0.0/104"], "expiresInDays": 7},
    )
    assert lowered.status == 200, lowered.body
    assert lowered.body["rpmLimit"] == 5 and lowered.body["monthlyLimit"] == 1000
    # the ceiling is still the admin's word, served with the record
    assert lowered.body["ceiling"]["rpmLimit"] == 10
    assert lowered.body["ceiling"]["ipWhitelist"] == ["127.0.0.0/8"]


async def test_a_sibling_moves_a_key_below_the_admins_ceiling_only(server: Server) -> None:
    key_id, _ = await issue(server, rpmLimit=10, dailyLimit=100)
    _, sibling = await issue(server)  # no limits at all: still bound by the key's ceiling
    path = f"/api/keys/{key_id}"
    refused(await sibling("PATCH", path, {"rpmLimit": 20}), "rpmLimit")
    refused(await sibling("PATCH", path, {"dailyLimit": None}), "dailyLimit")
    assert (await sibling("PATCH", path, {"rpmLimit": 5})).body["rpmLimit"] == 5
    assert (await sibling("PATCH", path, {"rpmLimit": 10})).body["rpmLimit"] == 10  # back up

    raised = await admin(server)("PATCH", f"/admin/keys/{key_id}", {"rpmLimit": 50})
    assert raised.body["ceiling"]["rpmLimit"] == 50 and raised.body["ceiling"]["dailyLimit"] == 100
    assert (await sibling("PATCH", path, {"rpmLimit": 50})).status == 200
    lifted = await admin(server)("PATCH", f"/admin/keys/{key_id}", {"dailyLimit": None})
    assert lifted.body["ceiling"]["dailyLimit"] is None
    assert (await sibling("PATCH", path, {"dailyLimit": 10**9})).status == 200


async def test_a_weaker_key_cannot_raise_a_sibling_past_itself(server: Server) -> None:
    key_id, _ = await issue(server)  # the admin gave this one everything
    _, weak = await issue(server, rpmLimit=3, permissions=["chat"])
    refused(await weak("PATCH", f"/api/keys/{key_id}", {"rpmLimit": 4}), "rpmLimit")
    refused(
        await weak("PATCH", f"/api/keys/{key_id}", {"permissions": ["chat", "images"]}),
        "permissions",
    )
    # nor lower it, nor change it at all: it has rights the weak key lacks (tests/hostile/
    # test_key_reach: cutting a stronger key down is as much an attack as revoking it)
    refused(await weak("PATCH", f"/api/keys/{key_id}", {"rpmLimit": 3}), "rpmLimit")
    refused(await weak("PATCH", f"/api/keys/{key_id}", {"name": "n"}), "rpmLimit")


async def test_only_the_admin_reactivates_what_the_admin_revoked(server: Server) -> None:
    key_id, _ = await issue(server)
    _, sibling = await issue(server)
    path = f"/api/keys/{key_id}"
    revoked = await admin(server)("POST", f"/admin/keys/{key_id}/revoke", {"reason": "audit"})
    assert (revoked.body["status"], revoked.body["revokedBy"]) == ("REVOKED", "admin")
    reply = await sibling("POST", f"{path}/reactivate")
    assert (reply.status, reply.code) == (403, "permission_denied")
    assert "admin" in reply.body["error"]["message"]
    assert (await sibling("GET", path)).body["status"] == "REVOKED"

    back = await admin(server)("POST", f"/admin/keys/{key_id}/reactivate")
    assert (back.body["status"], back.body["revokedBy"]) == ("ACTIVE", None)
    by_owner = await sibling("POST", f"{path}/revoke", {"reason": "rotating"})
    assert by_owner.body["revokedBy"] == "owner"
    assert (await sibling("POST", f"{path}/reactivate")).body["status"] == "ACTIVE"


async def test_a_created_key_gets_at_most_the_callers_rights(server: Server) -> None:
    _, narrow = await issue(
        server,
        permissions=["images"],
        models=["mock-model"],
        ipWhitelist=["127.0.0.0/8"],
        rpmLimit=10,
        maxConcurrency=2,
        dailyLimit=500,
        monthlyLimit=1000,
        expiresInDays=30,
    )
    for body, field in [
        ({"permissions": ["chat"]}, "permissions"),
        ({"permissions": ["images", "vision"]}, "permissions"),
        ({"models": None}, "models"),
        ({"models": ["other-model"]}, "models"),
        ({"ipWhitelist": None}, "ipWhitelist"),
        ({"ipWhitelist": ["10.0.0.0/8"]}, "ipWhitelist"),
        ({"ipWhitelist": ["127.0.0.0/7"]}, "ipWhitelist"),
        ({"expiresAt": None}, "expiresAt"),
        ({"expiresInDays": 31}, "expiresInDays"),
        *[({limit: None}, limit) for limit in LIMITS],
        *[({limit: 10**6}, limit) for limit in LIMITS],
    ]:
        refused(await narrow("POST", "/api/keys", {"name": "x", **body}), field)
    listed = (await narrow("GET", "/api/keys")).body
    assert len(listed) == 1  # nothing was created on the way

    inherited = (await narrow("POST", "/api/keys", {"name": "plain"})).body
    caller = listed[0]
    for field in ("permissions", "models", "ipWhitelist", "expiresAt", *LIMITS):
        assert inherited[field] == caller[field], field
    assert inherited["ceiling"] == {field: caller[field] for field in grants.FIELDS}

    smaller = await narrow(
        "POST",
        "/api/keys",
        {"ipWhitelist": ["127.0.0.1"], "rpmLimit": 5, "expiresInDays": 1, "dailyLimit": 1},
    )
    assert smaller.status == 201, smaller.body
    assert smaller.body["ipWhitelist"] == ["127.0.0.1"] and smaller.body["dailyLimit"] == 1


async def test_a_key_without_chat_cannot_mint_one_with_chat(server: Server) -> None:
    _, images = await issue(server, permissions=["images"])
    refused(await images("POST", "/api/keys", {"permissions": ["chat"]}), "permissions")
    made = await images("POST", "/api/keys", {"name": "default"})
    assert (made.status, made.body["permissions"]) == (201, ["images"])
    _, full = await issue(server, permissions=["chat", "images", "vision"])
    assert (await full("POST", "/api/keys", {})).body["permissions"] == ["chat"]  # the default


async def test_a_key_cannot_regenerate_a_stronger_sibling(server: Server) -> None:
    """Regenerating answers the new secret: that would hand the caller the sibling's rights."""
    strong_id, strong = await issue(server)
    weak_id, weak = await issue(server, rpmLimit=1)
    refused(await weak("POST", f"/api/keys/{strong_id}/regenerate"), "rpmLimit")
    assert (await strong("POST", f"/api/keys/{weak_id}/regenerate")).status == 200
    assert (await admin(server)("POST", f"/admin/keys/{strong_id}/regenerate")).status == 200


async def test_a_key_can_regenerate_itself(server: Server) -> None:
    key_id, me = await issue(server, rpmLimit=1, ipWhitelist=["127.0.0.1"])
    again = await me("POST", f"/api/keys/{key_id}/regenerate")
    assert again.status == 200 and again.body["key"]
