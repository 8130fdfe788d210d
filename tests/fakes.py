"""An independent fake upstream for the functional tests: a bare aiohttp server whose answers
each test scripts, and that records what reached it. Written apart from the bundled mock worker
so the gateway is not only ever tested against its own mock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

Script = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free loopback port, a handler cancelled when its client leaves: its URL."""
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeUpstream:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    script: Script | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # a client went away mid-answer
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        self.seen.append(Seen(request.method, request.path, dict(request.headers), body))
        if self.script is None:
            return web.json_response(completion("fake answer"))
        try:
            return await self.script(request, body)
        except (asyncio.CancelledError, ConnectionResetError):
            self.closed.set()
            raise

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def completion(
    text: str, prompt: int = 7, completion_tokens: int = 3, **extra: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake-upstream-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, **extra},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
    }


def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
    return (
        b"data: "
        + orjson.dumps(
            {
                "id": "chatcmpl-fake1",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": "fake-upstream-model",
                "choices": []
                if delta is None
                else [{"index": 0, "delta": delta, "finish_reason": finish}],
                "usage": usage,
            }
        )
        + b"\n\n"
    )


async def sse(
    request: web.Request, events: list[bytes], gap: float = 0.0, gate: asyncio.Event | None = None
) -> web.StreamResponse:
    """Stream ``events`` one write each; wait on ``gate`` (if any) after the first."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i, event in enumerate(events):
        await response.write(event)
        if i == 0 and gate is not None:
            await gate.wait()
        if gap:
            await asyncio.sleep(gap)
    await response.write_eof()
    return response
