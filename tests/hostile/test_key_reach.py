"""A low-rights key that may manage its owner's keys could delete, revoke, change or
reactivate the owner's stronger keys: only creation and regeneration were bounded by the
calling key's rights. A CI key held to ``chat`` and 1,000 tokens a day deleted the production
key (every permission, no limit) or revoked it, or PATCHed it down to one request a minute.

The rule is creation's (``auth.grants``): a key acts only on keys whose rights (permissions,
models, IP allowlist, limits, expiry) are within its own; anything else is 403
``permission_denied`` naming the field, and the stronger key is left as it was.

A real gateway with the Redis store, keys issued by the admin.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.server import Server
from tests.conftest import GatewayFactory
from tests.web import Reply, admin, call, config

STRONG = {"permissions": ["chat", "embeddings", "images"]}
WEAK = {"permissions": ["chat"], "dailyLimit": 1000}


@pytest.fixture
async def server(gateway_factory: GatewayFactory, mock: tuple[int, Any], redis_url: str) -> Server:
    return await gateway_factory(config(mock[0], f"store: {{url: '{redis_url}'}}\n"))


async def _issue(server: Server, fields: dict[str, Any]) -> tuple[str, str]:
    reply = await admin(server)("POST", "/admin/keys", {"owner": "acme", **fields})
    assert reply.status == 201, reply.body
    return reply.body["id"], reply.body["key"]


async def _as(server: Server, key: str, method: str, path: str, json: Any = None) -> Reply:
    return await call(server.port, method, path, json, headers={"X-API-Key": key})


def _refused(reply: Reply, field: str) -> None:
    assert (reply.status, reply.code) == (403, "permission_denied"), reply.body
    assert reply.body["error"]["param"] == field, reply.body


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("DELETE", "", None),
        ("POST", "/revoke", {"reason": "gone"}),
        ("PATCH", "", {"name": "renamed"}),
        ("PATCH", "", {"rpmLimit": 1}),  # lowering is within the caller's rights: not the key's
        ("PATCH", "", {"permissions": ["chat"]}),
    ],
)
async def test_a_weak_key_cannot_touch_a_stronger_one(
    server: Server, method: str, suffix: str, body: Any
) -> None:
    """Attack: the weak key acts on the strong one. Observed (before): 204 / 200, the strong
    key deleted, revoked or cut down. Expected: 403 naming the field the weak key lacks; the
    strong key unchanged and still serving."""
    strong_id, strong = await _issue(server, STRONG)
    _, weak = await _issue(server, WEAK)
    before = (await admin(server)("GET", f"/admin/keys/{strong_id}")).body
    reply = await _as(server, weak, method, f"/api/keys/{strong_id}{suffix}", body)
    _refused(reply, "permissions")
    assert (await admin(server)("GET", f"/admin/keys/{strong_id}")).body == before
    assert (await _as(server, strong, "GET", f"/api/keys/{strong_id}")).status == 200


async def test_a_weak_key_cannot_reactivate_what_a_stronger_one_revoked(server: Server) -> None:
    _, strong = await _issue(server, STRONG)
    _, weak = await _issue(server, WEAK)
    other_id, _ = await _issue(server, STRONG)
    assert (await _as(server, strong, "POST", f"/api/keys/{other_id}/revoke")).status == 200
    _refused(await _as(server, weak, "POST", f"/api/keys/{other_id}/reactivate"), "permissions")
    assert (await admin(server)("GET", f"/admin/keys/{other_id}")).body["status"] == "REVOKED"


async def test_a_lower_limit_is_out_of_reach_too(server: Server) -> None:
    """Same permissions, but the caller is held to 1,000 tokens a day and the target is not."""
    target_id, _ = await _issue(server, {"permissions": ["chat"]})
    _, weak = await _issue(server, WEAK)
    _refused(await _as(server, weak, "DELETE", f"/api/keys/{target_id}"), "dailyLimit")


async def test_keys_within_reach_are_managed_as_before(server: Server) -> None:
    """A key acts on itself, on keys it made, on weaker ones; the stronger acts on the weaker;
    the admin on anything."""
    strong_id, strong = await _issue(server, STRONG)
    weak_id, weak = await _issue(server, WEAK)
    made = await _as(server, weak, "POST", "/api/keys", {"name": "child"})
    assert made.status == 201, made.body
    child = made.body["id"]
    assert (await _as(server, weak, "PATCH", f"/api/keys/{child}", {"name": "c"})).status == 200
    assert (await _as(server, weak, "POST", f"/api/keys/{child}/revoke")).status == 200
    assert (await _as(server, weak, "POST", f"/api/keys/{child}/reactivate")).status == 200
    assert (await _as(server, weak, "DELETE", f"/api/keys/{child}")).status == 204
    assert (await _as(server, weak, "PATCH", f"/api/keys/{weak_id}", {"name": "w"})).status == 200
    assert (await _as(server, strong, "POST", f"/api/keys/{weak_id}/revoke")).status == 200
    assert (await _as(server, strong, "DELETE", f"/api/keys/{weak_id}")).status == 204
    assert (await admin(server)("DELETE", f"/admin/keys/{strong_id}")).status == 204
