"""Gateway processes (``python -m gateway run``) sharing one real Redis in front of one real
aiohttp worker that counts the requests it holds at once: the figures of fair admission."""

from __future__ import annotations

import asyncio
import hashlib
import pathlib
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.multiprocess.conftest import ADMIN_TOKEN, Gateway
from tests.redis_server import free_port

KEYS = {  # owner → its key (static keys, declared by their hash)
    "one": "fair-owner-one-key-0123456789abcdef",
    "four": "fair-owner-four-key-0123456789abcde",
    "light": "fair-owner-light-key-0123456789abcd",
}


@dataclass
class Worker:
    """A GPU worker's stand-in: each request takes ``delay`` seconds; it counts the requests it
    holds at once (``held``, ``peak``) and who each served one was (the message's content)."""

    delay: float = 0.05
    held: int = 0
    peak: int = 0
    served: Counter[str] = field(default_factory=Counter)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.held += 1
        self.peak = max(self.peak, self.held)
        try:
            await asyncio.sleep(self.delay)  # the worker's own work, not a wait of the test
        finally:
            self.held -= 1
        self.served[str(body["messages"][0]["content"])] += 1
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    w = Worker()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", w.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    w.port = runner.addresses[0][1]
    yield w
    await runner.cleanup()


def config(redis_url: str, worker_port: int, upstream: str, cap: int) -> str:
    keys = ", ".join(
        f"{{id: {owner}, owner: {owner}, sha256: '{hashlib.sha256(key.encode()).hexdigest()}'}}"
        for owner, key in KEYS.items()
    )
    unlimited = "max_keys: null, monthly_tokens: null, rpm: null"
    return f"""\
store: {{url: "{redis_url}", timeout_ms: 1000}}
upstreams: {{{upstream}: {{url: "http://127.0.0.1:{worker_port}", max_concurrency: {cap}}}}}
models: {{m: {{upstreams: [{upstream}]}}}}
plans: {{one: {{{unlimited}, share: 1}}, four: {{{unlimited}, share: 4}}}}
default_plan: one
scheduling: {{max_wait: 30}}
keys: {{static: [{keys}]}}
log: {{level: warning, access: false}}
"""


async def start(tmp: pathlib.Path, text: str) -> Gateway:
    port, admin_port = free_port(), free_port()
    head = f"listen: {{host: 127.0.0.1, port: {port}}}\n"
    head += f"admin: {{host: 127.0.0.1, port: {admin_port}, token: {ADMIN_TOKEN}}}\n"
    path = tmp / f"gateway-{port}.yaml"
    path.write_text(head + text)
    log = tmp / f"gateway-{port}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", "--config", str(path), stdout=out, stderr=out
        )
    gateway = Gateway(port, admin_port, process, log)
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{gateway.admin}/readyz") as r:
                    if r.status == 200:
                        return gateway
            except aiohttp.ClientError:
                pass
            if process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"gateway did not start: {log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def gateways(
    tmp_path: pathlib.Path, redis_url: str, worker: Worker
) -> AsyncIterator[list[Gateway]]:
    """Two gateway processes on one Redis; upstream capacity 8 (a fresh name per test)."""
    text = config(redis_url, worker.port, f"gpu-{uuid.uuid4().hex[:8]}", 8)
    both = list(await asyncio.gather(start(tmp_path, text), start(tmp_path, text)))
    async with aiohttp.ClientSession() as http:
        url = f"{both[0].admin}/admin/owners/four"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with http.put(url, json={"plan": "four"}, headers=headers) as r:
            assert r.status == 200, await r.text()
    yield both
    for gateway in both:
        if gateway.process.returncode is None:
            gateway.process.terminate()
    for gateway in both:
        await gateway.process.wait()
