"""Functional tests of the key, usage and admin APIs over real sockets, and a small HTTP helper."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.server import Server
from tests.clients import AUTH, sdk
from tests.conftest import gateway_yaml

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return orjson.loads(self.raw) if self.raw else None

    @property
    def code(self) -> str | None:
        return self.body["error"]["code"]  # type: ignore[no-any-return]


async def call(
    port: int,
    method: str,
    path: str,
    json: Any = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> Reply:
    """One request to a listener on loopback, answered in full."""
    if json is not None:
        data = orjson.dumps(json)
        headers = {"Content-Type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"http://127.0.0.1:{port}{path}", data=data, headers=headers or {}
        ) as r,
    ):
        return Reply(r.status, dict(r.headers), await r.read())


def public(server: Server) -> Callable[..., Awaitable[Reply]]:
    """Calls on the public listener as the static test key (owner ``tests``)."""

    async def request(method: str, path: str, json: Any = None, **kw: Any) -> Reply:
        return await call(server.port, method, path, json, headers={**AUTH, **kw})

    return request


def admin(server: Server) -> Callable[..., Awaitable[Reply]]:
    """Calls on the admin listener with the admin token."""

    async def request(method: str, path: str, json: Any = None) -> Reply:
        return await call(server.admin_port, method, path, json, headers=ADMIN)

    return request


def config(mock_port: int, extra: str = "") -> str:
    """Two models on the mock worker, an admin token, and room for many failed auths."""
    return gateway_yaml(
        {"mock": f"http://127.0.0.1:{mock_port}"},
        {"mock-model": {"upstreams": ["mock"]}, "other-model": {"upstreams": ["mock"]}},
        extra="auth: {max_failures_per_minute: 1000}\n" + extra,
        admin_token=ADMIN_TOKEN,
    )


async def chat(server: Server, key: str, model: str = "mock-model") -> str:
    """One chat completion with ``key`` through the official SDK; its answer text."""
    answer = await sdk(server, api_key=key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    return answer.choices[0].message.content or ""


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    """Poll ``check`` until it holds, failing the test past the deadline."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {seconds} s")
        await asyncio.sleep(0.02)
