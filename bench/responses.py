"""The Responses API's translate path next to chat's: the gateway's CPU per request (target:
within 15 % of chat's, issue 15).

The harness of ``bench/dialects.py``: one gateway (1 worker, memory store, access log off) pinned
to CPU 0, its CPU time read from /proc around batches of identical requests, the two APIs'
batches alternated nine times (the median of the pairs' ratios); the canned upstream
(``dialects_upstream.py``) and this client on CPU 1. The same conversation both ways (a system
prompt and one user message, 16 tokens at most), in three shapes: a whole answer; a stream sent
in one piece (every event relayed in one batch: the translation weighs most); a stream sent
event by event 1 ms apart (one event per read, as a model's tokens come). The Responses requests
are stored (``store`` true, the default): that costs its share too.

    .venv/bin/python bench/responses.py
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

from bench.dialects import OPENAI, PAIRS, SHAPES, config, cpu_seconds, wait_ready  # noqa: E402
from tests.clients import AUTH  # noqa: E402
from tests.redis_server import free_port  # noqa: E402

RESPONSES = {"max_output_tokens": 16, "instructions": "Be brief.", "input": "Say hello"}


async def batch(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], pid: int, count: int, width: int
) -> float:
    """Gateway CPU microseconds per request over ``count`` requests, ``width`` at a time."""

    async def one() -> None:
        async with http.post(url, json=body, headers=AUTH) as r:
            data = await r.read()
            assert r.status == 200, (r.status, data[:300])
            # a whole answer, or a stream to its end: chat's [DONE], Responses' completed
            ended = data.endswith((b"}", b"[DONE]\n\n")) or b"event: response.completed" in data
            assert ended, data[-200:]

    before = cpu_seconds(pid)
    for _ in range(count // width):
        await asyncio.gather(*(one() for _ in range(width)))
    return (cpu_seconds(pid) - before) / count * 1e6


async def measure(
    http: aiohttp.ClientSession, base: str, pid: int, shape: tuple[str, str, bool, int, int]
) -> str:
    name, model, stream, count, width = shape
    chat = (f"{base}/v1/chat/completions", dict(OPENAI, model=model, stream=stream))
    responses = (f"{base}/v1/responses", dict(RESPONSES, model=model, stream=stream))
    for url, body in (chat, responses):  # warm-up
        await batch(http, url, body, pid, 400, width)
    costs: dict[str, list[float]] = {"chat": [], "responses": []}
    for pair in range(PAIRS):  # C R, R C, ...: neither API always goes first
        for api in ("chat", "responses")[:: 1 if pair % 2 == 0 else -1]:
            url, body = chat if api == "chat" else responses
            costs[api].append(await batch(http, url, body, pid, count, width))
    # each pair ran back to back: its ratio cancels the machine's drift over the run
    ratios = sorted(r / c for r, c in zip(costs["responses"], costs["chat"], strict=True))
    c, r = sorted(costs["chat"])[PAIRS // 2], sorted(costs["responses"])[PAIRS // 2]
    return (
        f"{name:25s} gateway CPU per request: chat {c:.0f} us, Responses {r:.0f} us; ratio "
        f"(median of {PAIRS} pairs) {ratios[PAIRS // 2]:.3f}, pairs {ratios[0]:.3f}-"
        f"{ratios[-1]:.3f} (target <= 1.15)"
    )


async def main() -> None:
    os.sched_setaffinity(0, {1})  # the client beside the upstream, off the gateway's CPU
    upstream_port, port, admin_port = free_port(), free_port(), free_port()
    upstream = await asyncio.create_subprocess_exec(
        "taskset", "-c", "1", sys.executable, str(ROOT / "bench" / "dialects_upstream.py"),
        "--port", str(upstream_port), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert upstream.stdout is not None
    assert (await asyncio.wait_for(upstream.stdout.readline(), 20)).strip() == b"ready"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(config(port, admin_port, upstream_port))
    gateway = await asyncio.create_subprocess_exec(
        "taskset", "-c", "0", sys.executable, "-m", "gateway", "run", "--config", handle.name,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, admin_port)
            for shape in SHAPES:
                print(
                    await measure(http, f"http://127.0.0.1:{port}", gateway.pid, shape), flush=True
                )
    finally:
        gateway.terminate()
        upstream.terminate()
        await gateway.wait()
        await upstream.wait()
        os.unlink(handle.name)


if __name__ == "__main__":
    uvloop.run(main())
