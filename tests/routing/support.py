"""What the routing functional tests share: fake workers that say who they are, a config
builder with per-upstream settings, and waiting on a condition with a deadline."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.clients import KEYS_YAML
from tests.fakes import FakeUpstream, chunk, completion, sse


@dataclass
class Worker(FakeUpstream):
    """A fake worker that answers with its own name (streamed or not) and serves a Prometheus
    page at ``/metrics`` from ``metrics``; ``host`` lets two share a port on 127.0.0.x."""

    name: str = "worker"
    host: str = "127.0.0.1"
    metrics: str = ""
    status: int = 200  # anything else: answered with an OpenAI error body
    error: str = "worker trouble"
    chats: int = 0
    gate: asyncio.Event | None = None  # chat answers wait on it (set: no wait)
    seen_models: list[str] = field(default_factory=list)

    async def start(self) -> None:
        self.script = self._answer
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()
        self.port = int(self.runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics, content_type="text/plain")

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if request.path.endswith("/health") or request.method == "GET":
            return web.json_response({"data": []})
        self.chats += 1
        self.seen_models.append(str(body.get("model")))
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            return web.json_response(
                {"error": {"message": self.error, "type": "x", "code": self.status}},
                status=self.status,
            )
        if body.get("stream"):
            return await sse(
                request,
                [
                    chunk({"role": "assistant", "content": ""}),
                    chunk({"content": self.name}),
                    chunk({}, finish="stop"),
                    chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 1}),
                    b"data: [DONE]\n\n",
                ],
            )
        return web.json_response(completion(self.name))


async def workers(*names: str, **kw: Any) -> list[Worker]:
    out = []
    for name in names:
        worker = Worker(name=name, **kw)
        await worker.start()
        out.append(worker)
    return out


def config(
    upstreams: dict[str, str | dict[str, Any]],
    models: dict[str, dict[str, Any]],
    extra: str = "",
) -> str:
    """A gateway config: each upstream a URL or its settings (timeouts short unless given)."""
    lines = [
        "listen: {host: 127.0.0.1, port: 0}",
        "admin: {host: 127.0.0.1, port: 0}",
        "log: {level: warning, access: true}",
        "upstreams:",
    ]
    for name, spec in upstreams.items():
        settings = {"url": spec} if isinstance(spec, str) else dict(spec)
        settings.setdefault("timeouts", {"connect": 2, "first_byte": 5, "idle": 5})
        lines.append(f"  {name}: {json.dumps(settings)}")
    lines.append("models:")
    lines.extend(f"  {name}: {json.dumps(spec)}" for name, spec in models.items())
    extra = textwrap.dedent(extra)
    if "keys:" not in extra:
        lines.append(KEYS_YAML.rstrip())
    return "\n".join(lines) + "\n" + extra


async def until(
    condition: Callable[[], bool | Awaitable[bool]], seconds: float = 5.0, what: str = ""
) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail after ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not within {seconds} s: {what or condition}")
        await asyncio.sleep(0.01)


async def stop_all(items: list[Worker]) -> None:
    for item in items:
        await item.stop()
