"""The Anthropic path's cost next to the OpenAI path's (target: within 10 %).

Runs one gateway (`gateway run`, 1 worker, memory store, access log off) pinned to CPU 0 in a
process of its own, with the bundled mock worker and the client in this process, and reads the
gateway's CPU time from /proc around batches of identical requests in each dialect, alternated
five times (median). Streamed and non-streamed.

    .venv/bin/python bench/dialects.py
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys
import tempfile
from typing import Any

import aiohttp
import uvloop

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import mock_worker  # noqa: E402 - after the path above
from tests.clients import AUTH, KEYS_YAML  # noqa: E402
from tests.redis_server import free_port  # noqa: E402

OPENAI = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello"}]}
ANTHROPIC = {
    "model": "m",
    "max_tokens": 16,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "Say hello"}],
}
TICK = os.sysconf("SC_CLK_TCK")
# Requests per batch: CPU time comes in ticks (10 ms), so a batch must be long for the ratio to
# resolve a few per cent (6,400 requests of ~160 µs = 100 ticks).
COUNT = 6400


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / TICK


def config(port: int, admin_port: int, mock_port: int) -> str:
    return (
        f"listen: {{host: 127.0.0.1, port: {port}}}\n"
        f"admin: {{host: 127.0.0.1, port: {admin_port}}}\n"
        f"upstreams: {{mock: {{url: 'http://127.0.0.1:{mock_port}'}}}}\n"
        "models: {m: {upstreams: [mock]}}\n"
        "plans: {free: {max_keys: null, monthly_tokens: null, rpm: null}}\n"
        "log: {level: warning, access: false}\n" + KEYS_YAML
    )


async def wait_ready(http: aiohttp.ClientSession, admin_port: int) -> None:
    for _ in range(200):
        try:
            async with http.get(f"http://127.0.0.1:{admin_port}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the gateway did not start")


async def batch(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], pid: int, count: int
) -> float:
    """Gateway CPU microseconds per request over ``count`` requests, 8 at a time."""

    async def one() -> None:
        async with http.post(url, json=body, headers=AUTH) as r:
            await r.read()
            assert r.status == 200, r.status

    before = cpu_seconds(pid)
    for _ in range(count // 8):
        await asyncio.gather(*(one() for _ in range(8)))
    return (cpu_seconds(pid) - before) / count * 1e6


async def main() -> None:
    mock, mock_port = await mock_worker.start(mock_worker.MockOptions(), "127.0.0.1", 0)
    port, admin_port = free_port(), free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(config(port, admin_port, mock_port))
    gateway = await asyncio.create_subprocess_exec(
        "taskset", "-c", "0", sys.executable, "-m", "gateway", "run", "--config", handle.name,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, admin_port)
            for stream in (False, True):
                o_body, a_body = dict(OPENAI, stream=stream), dict(ANTHROPIC, stream=stream)
                await batch(http, f"{base}/v1/chat/completions", o_body, gateway.pid, 400)
                await batch(http, f"{base}/v1/messages", a_body, gateway.pid, 400)
                openai, anthropic = [], []
                for _ in range(5):
                    openai.append(
                        await batch(http, f"{base}/v1/chat/completions", o_body, gateway.pid, COUNT)
                    )
                    anthropic.append(
                        await batch(http, f"{base}/v1/messages", a_body, gateway.pid, COUNT)
                    )
                o, a = sorted(openai)[2], sorted(anthropic)[2]
                print(
                    f"{'streamed' if stream else 'non-streamed':13s} gateway CPU per request: "
                    f"OpenAI {o:.0f} us, Anthropic {a:.0f} us, ratio {a / o:.3f} "
                    f"(target <= 1.10)"
                )
    finally:
        gateway.terminate()
        await gateway.wait()
        os.unlink(handle.name)
        await mock.cleanup()


if __name__ == "__main__":
    uvloop.run(main())
