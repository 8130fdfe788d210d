"""A process remembers the hash of each key that found a record (docs/security.md, item 5): a
client's guesses must never enter that map, whatever their form, and a remembered key must
still meet its record on every request (revoked: refused at once)."""

from __future__ import annotations

from typing import Any

from gateway.server import Server
from tests.auth.test_failed_auth_functional import bearer, forged, models
from tests.web import admin, config


async def test_guesses_are_never_remembered_and_a_remembered_key_is_still_revoked(
    gateway_factory: Any, mock: Any
) -> None:
    server: Server = await gateway_factory(config(mock[0]))
    created = await admin(server)("POST", "/admin/keys", {"owner": "office", "name": "kept"})
    assert created.status == 201
    key, key_id = str(created.body["key"]), str(created.body["id"])
    for _ in range(2):
        assert (await models(server, bearer(key)))[0] == 200
    remembered = server.runtime.keys._digests
    assert list(remembered) == [key]

    guesses = [forged(key) for _ in range(20)]  # the issued form, a valid checksum
    guesses += [forged(key, "k0000000") for _ in range(5)]  # another key's id
    guesses += [f"not-a-real-key-{i}" for i in range(20)]  # a guessable form
    guesses += [key + "x", " " * 3 + key[:-1], "\u00e9" * 40, "k" * 5000]  # near, odd, huge
    for guess in guesses:
        status, _, body = await models(server, {"X-API-Key": guess})
        assert status == 401, (guess[:40], body)
    assert list(remembered) == [key]  # no guess went in

    revoked = await admin(server)("POST", f"/admin/keys/{key_id}/revoke", {"reason": "leaked"})
    assert revoked.status == 200
    status, _, body = await models(server, bearer(key))
    assert (status, body["error"]["code"]) == (401, "key_revoked")
