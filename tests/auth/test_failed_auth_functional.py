"""Failed authentications are limited per real client IP: beyond
auth.max_failures_per_minute, 429 with Retry-After before any key is looked at, and a spoofed
X-Forwarded-For from an untrusted peer does not escape the count.

The block is for keys that can be guessed (keys declared in the config, keys imported by hash,
anything not in the issued form): an issued key, whose 142-bit secret cannot be guessed, passes
a blocked address, so one bad client behind a shared NAT does not lock out the others there."""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp

from gateway.auth.keys import SECRET_CHARS, checksum
from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml
from tests.web import ADMIN_TOKEN, admin

LIMIT_OF_3 = "auth: {max_failures_per_minute: 3}\n"


async def models(server: Server, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/v1/models", headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.json()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def forged(key: str, key_id: str | None = None) -> str:
    """An issued-form key with a valid checksum (anyone can compute a CRC) and a random secret:
    for ``key``'s id, or for ``key_id``."""
    head = key[: -(SECRET_CHARS + 6)]
    if key_id is not None:
        head = f"sk_gw_{key_id}_"
    body = head + "".join(secrets.choice("ABCdef0123") for _ in range(SECRET_CHARS))
    return body + checksum(body)


async def limited(gateway_factory: Any, mock: Any, extra: str = "") -> Server:
    server: Server = await gateway_factory(
        gateway_yaml(
            {"mock": f"http://127.0.0.1:{mock[0]}"},
            extra=LIMIT_OF_3 + extra,
            admin_token=ADMIN_TOKEN,
        )
    )
    return server


async def issue(server: Server) -> str:
    reply = await admin(server)("POST", "/admin/keys", {"owner": "office", "name": "nat"})
    assert reply.status == 201
    return str(reply.body["key"])


async def block(server: Server) -> None:
    """Three failed guesses of a guessable key from this address: it is blocked."""
    for i in range(3):
        assert (await models(server, bearer(f"not-a-real-key-{i}")))[0] == 401
    status, headers, body = await models(server, bearer("not-a-real-key-3"))
    assert (status, body["error"]["code"]) == (429, "too_many_auth_failures")
    assert 1 <= int(headers["Retry-After"]) <= 60


async def test_spoofed_forwarded_for_does_not_escape(gateway_factory: Any, mock: Any) -> None:
    server = await limited(gateway_factory, mock)
    statuses = []
    for i in range(5):
        status, headers, body = await models(
            server,
            {
                "Authorization": f"Bearer not-a-real-key-{i}",
                "X-Forwarded-For": f"198.51.100.{i}",  # an untrusted peer's claim: ignored
            },
        )
        statuses.append(status)
    assert statuses == [401, 401, 401, 429, 429]  # three failures, then refused before lookup
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert body["error"]["code"] == "too_many_auth_failures"
    status, _, body = await models(server, AUTH)  # even a good key: the address is blocked
    assert status == 429 and body["error"]["code"] == "too_many_auth_failures"


async def test_a_missing_key_is_not_a_failed_guess(gateway_factory: Any, mock: Any) -> None:
    server: Server = await gateway_factory(
        gateway_yaml(
            {"mock": f"http://127.0.0.1:{mock[0]}"}, extra="auth: {max_failures_per_minute: 2}\n"
        )
    )
    for _ in range(5):
        status, _, body = await models(server, {})
        assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    assert (await models(server, AUTH))[0] == 200


async def test_the_limit_is_exact_in_one_process(gateway_factory: Any, mock: Any) -> None:
    """max_failures_per_minute: N means N failed guesses answered 401, then 429: the N+1st guess
    is never looked up (the count used to block only once it was over N, one lookup late)."""
    server = await limited(gateway_factory, mock)
    statuses = [(await models(server, bearer(f"guess-{i}")))[0] for i in range(6)]
    assert statuses == [401] * 3 + [429] * 3


async def test_an_issued_key_works_from_a_blocked_address(gateway_factory: Any, mock: Any) -> None:
    """Issue 21: behind a NAT, one client's bad guesses must not lock out its neighbours."""
    server = await limited(gateway_factory, mock)
    neighbour = await issue(server)  # never used yet: not in any cache
    await block(server)
    assert (await models(server, AUTH))[0] == 429  # a guessable (static) key stays blocked
    status, _, body = await models(server, bearer(neighbour))
    assert status == 200, body
    assert (await models(server, {"X-API-Key": await issue(server)}))[0] == 200
    # the block still stands for guessable keys
    assert (await models(server, bearer("not-a-real-key-9")))[0] == 429


async def test_issued_form_guesses_do_not_block_the_address(
    gateway_factory: Any, mock: Any
) -> None:
    """A made-up issued key cannot be a guess that succeeds: it is not counted against the
    address (nor is a malformed credential, which is never looked up)."""
    server = await limited(gateway_factory, mock)
    real = await issue(server)
    for i in range(10):
        for headers in (
            bearer(forged(real)),
            bearer(forged(real, key_id=f"k{i:07x}")),
            bearer(real[:-1] + ("A" if real[-1] != "A" else "B")),  # a typo: bad checksum
            {"Authorization": f"Basic {i}"},
        ):
            status, _, body = await models(server, headers)
            assert (status, body["error"]["code"]) == (401, "invalid_api_key"), headers
    assert (await models(server, AUTH))[0] == 200
    await block(server)
