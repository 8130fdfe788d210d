"""What the Responses tests share: a gateway in front of the bundled mock worker and an
independent fake upstream, with keys of two owners (one without ``vision``, one limited to two
requests a minute), and helpers that read what a client sees and what the key was charged."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from gateway.auth.keys import sha256_hex
from gateway.server import Server
from tests.clients import TEST_KEY, TEST_KEY_SHA
from tests.conftest import gateway_yaml

OTHER_KEY = "test-other-owner-key-0123456789abc"  # owner "others"
NO_VISION_KEY = "test-no-vision-key-0123456789abcdef"  # owner "tests", chat only
RPM2_KEY = "test-responses-rpm-two-0123456789ab"  # owner "tests", 2 requests a minute
ALL = ["chat", "embeddings", "audio", "images", "vision"]


def keys_yaml() -> str:
    def key(kid: str, owner: str, secret: str, permissions: list[str], extra: str = "") -> str:
        return (
            f"    - {{id: {kid}, owner: {owner}, sha256: '{sha256_hex(secret)}', "
            f"permissions: {permissions}{extra}}}\n"
        )

    return (
        "keys:\n  static:\n"
        + f"    - {{id: test, owner: tests, sha256: '{TEST_KEY_SHA}', permissions: {ALL}}}\n"
        + key("other", "others", OTHER_KEY, ALL)
        + key("novision", "tests", NO_VISION_KEY, ["chat"])
        + key("rpm2", "tests", RPM2_KEY, ["chat"], ", rpm_limit: 2")
    )


def responses_yaml(mock_port: int, fake_url: str, extra: str = "", store: str = "") -> str:
    """``mock-model`` (worker name ``mock-upstream``, alias ``gpt-4o-mini``), ``mock-reasoner``
    (its worker sends reasoning), ``chat-only``, and on the fake upstream ``fake-model``
    (translate) and ``native-model`` (native)."""
    mock = f"http://127.0.0.1:{mock_port}"
    text = gateway_yaml(
        {"mock": mock, "fake": fake_url},
        {
            "mock-model": {
                "upstreams": ["mock"],
                "upstream_model": "mock-upstream",
                "aliases": ["gpt-4o-mini"],
            },
            "mock-reasoner": {"upstreams": ["mock"]},
            "chat-only": {"upstreams": ["mock"], "apis": ["chat"]},
            "fake-model": {"upstreams": ["fake"], "upstream_model": "org/fake"},
            "native-model": {
                "upstreams": ["fake"],
                "upstream_model": "org/native",
                "responses": "native",
            },
        },
        extra=keys_yaml() + extra,
    )
    return text + (f"store: {{url: '{store}'}}\n" if store else "")


def bearer(key: str = TEST_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def call(
    server: Server,
    method: str,
    path: str,
    *,
    json: Any = None,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request over a fresh connection: status, headers, and the body (JSON when JSON)."""
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"http://127.0.0.1:{server.port}{path}",
            json=json,
            data=data,
            headers=bearer() if headers is None else headers,
        ) as r,
    ):
        raw = await r.read()
        body: Any = raw
        if r.content_type == "application/json":
            body = await r.json()
        return r.status, dict(r.headers), body


async def usage_by_api(server: Server, want: int, key: str = TEST_KEY) -> dict[str, Any]:
    """The owner's usage summary once ``want`` requests are settled (within 5 s): ``byApi``
    as a dict by API."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        status, _, body = await call(server, "GET", "/api/usage/summary?period=7d",
                                     headers=bearer(key))  # fmt: skip
        assert status == 200, body
        if body["totalRequests"] >= want:
            return {row["api"]: row for row in body["byApi"]}
        assert loop.time() < deadline, body
        await asyncio.sleep(0.05)
