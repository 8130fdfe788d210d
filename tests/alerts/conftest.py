"""A real webhook receiver on loopback for the alert tests: it records every POST (headers and
raw bytes) and answers 200, or another status while told to fail, or is not listening at all
while stopped (and can start again on the same port). Helpers to reach a gateway's admin API
and its alert service."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.alerts.service import AlertService
from gateway.app import ALERTS
from gateway.server import Server

SECRET = "whsec-test-0123456789"


@dataclass
class Post:
    headers: dict[str, str]
    raw: bytes
    at: float  # the loop's clock when it arrived

    @property
    def body(self) -> Any:
        return orjson.loads(self.raw)

    @property
    def event_id(self) -> str:
        return self.headers["X-Gateway-Event-Id"]

    def signed_with(self, secret: str) -> bool:
        """The test's own check of ``X-Gateway-Signature``, as a receiver would do it."""
        expected = "sha256=" + hmac.new(secret.encode(), self.raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("X-Gateway-Signature", ""), expected)


@dataclass
class Receiver:
    port: int = 0
    posts: list[Post] = field(default_factory=list)
    failing: int | None = None  # answer this status instead of 200 while set
    fail_times: int = 0  # or: answer ``failing`` this many more times, then 200
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/gateway"

    async def _handle(self, request: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        self.posts.append(Post(dict(request.headers), await request.read(), now))
        self.arrived.set()
        if self.fail_times > 0:
            self.fail_times -= 1
            return web.Response(status=self.failing or 500)
        if self.failing is not None:
            return web.Response(status=self.failing)
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/gateway", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def of(self, kind: str) -> list[Post]:
        return [p for p in self.posts if p.headers.get("X-Gateway-Event") == kind]

    async def wait(self, done: Callable[[], bool], seconds: float = 10.0) -> None:
        """Until ``done()`` holds (checked at every arrival), within ``seconds``."""
        async with asyncio.timeout(seconds):
            while not done():
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    await made.start()
    yield made
    await made.stop()


def alerts_yaml(url: str, *extra: str, events: str = "", form: str = "json") -> str:
    """An ``alerts`` section with one webhook (``events``: a YAML list, else all)."""
    wanted = f", events: {events}" if events else ""
    lines = [
        "alerts:",
        "  webhooks:",
        f"    - {{url: '{url}', secret: '{SECRET}', format: {form}{wanted}}}",
        *(f"  {line}" for line in extra),
    ]
    return "\n".join(lines) + "\n"


def alerts_of(server: Server) -> AlertService:
    """The running alert service of a gateway (kept on its public application)."""
    assert server._public is not None
    return server._public.app[ALERTS]


async def admin(
    server: Server, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"http://127.0.0.1:{server.admin_port}{path}", json=body) as answer,
    ):
        return answer.status, await answer.json()


async def new_key(server: Server, owner: str = "acme", **fields: Any) -> str:
    status, body = await admin(server, "POST", "/admin/keys", {"owner": owner, **fields})
    assert status == 201, body
    return str(body["id"])


async def revoke(server: Server, key_id: str, reason: str = "leaked") -> None:
    status, body = await admin(server, "POST", f"/admin/keys/{key_id}/revoke", {"reason": reason})
    assert status == 200, body
