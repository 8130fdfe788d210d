"""The official SDKs pointed at a gateway; every client made here is closed after its test."""

from __future__ import annotations

from typing import Any

import anthropic
import openai

from gateway.auth.keys import sha256_hex
from gateway.server import Server

TEST_KEY = "test-static-key-0123456789abcdef"  # declared in every test config by its hash
TEST_KEY_SHA = sha256_hex(TEST_KEY)
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
KEYS_YAML = f"keys: {{static: [{{id: test, owner: tests, sha256: '{TEST_KEY_SHA}'}}]}}\n"

OPEN: list[openai.AsyncOpenAI | anthropic.AsyncAnthropic] = []


def sdk(server: Server, api_key: str = TEST_KEY, **kw: Any) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1", api_key=api_key, max_retries=0, **kw
    )
    OPEN.append(client)
    return client


def claude(server: Server, api_key: str = TEST_KEY, **kw: Any) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{server.port}", api_key=api_key, max_retries=0, **kw
    )
    OPEN.append(client)
    return client


async def close_all() -> None:
    while OPEN:
        await OPEN.pop().close()


# The security headers (docs/api.md), on every answer unless network.security_headers is off.
SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-XSS-Protection": "1; mode=block",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "camera=(self), microphone=(self)",
}
