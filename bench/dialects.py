"""The Anthropic path's cost next to the OpenAI path's (target: within 10 %).

Runs one gateway (`gateway run`, 1 worker, memory store, access log off) pinned to CPU 0 in a
process of its own, and reads its CPU time from /proc around batches of identical requests in
each dialect, alternated nine times (the median of the pairs' ratios). The upstream is canned
(`dialects_upstream.py`, a process of its own) and it and the client (this process) run on CPU
1, so how they are scheduled
does not change how the gateway's reads batch. Three shapes: a whole answer; a stream sent in
one piece (every event relayed in one batch: the translation weighs most); a stream sent event
by event 1 ms apart (relayed one event per read, as a model's tokens are).

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

from tests.clients import AUTH, KEYS_YAML  # noqa: E402
from tests.redis_server import free_port  # noqa: E402

# The same conversation in each dialect, so the upstream gets the same request from both.
OPENAI = {
    "max_tokens": 16,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ],
}
ANTHROPIC = {
    "max_tokens": 16,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "Say hello"}],
}
TICK = os.sysconf("SC_CLK_TCK")
# Requests per batch: CPU time comes in ticks (10 ms), so a batch must be long for the ratio to
# resolve a few per cent (6,400 requests of ~160 µs = 100 ticks).
COUNT = 6400
PAIRS = 9  # batches of each dialect, alternated
# (shape, model, stream, requests per batch, requests in flight)
SHAPES = (
    ("non-streamed", "m-json", False, COUNT, 8),
    ("streamed, one piece", "m-sse", True, COUNT, 8),
    ("streamed, event by event", "m-paced", True, COUNT // 4, 16),  # 20+ reads each
)


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / TICK


def config(port: int, admin_port: int, upstream_port: int) -> str:
    up = f"http://127.0.0.1:{upstream_port}"
    return (
        f"listen: {{host: 127.0.0.1, port: {port}}}\n"
        f"admin: {{host: 127.0.0.1, port: {admin_port}}}\n"
        f"upstreams: {{json: {{url: '{up}/json'}}, sse: {{url: '{up}/sse'}}, "
        f"paced: {{url: '{up}/paced'}}}}\n"
        "models: {m-json: {upstreams: [json]}, m-sse: {upstreams: [sse]}, "
        "m-paced: {upstreams: [paced]}}\n"
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
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    pid: int,
    count: int,
    width: int,
) -> float:
    """Gateway CPU microseconds per request over ``count`` requests, ``width`` at a time."""

    async def one() -> None:
        async with http.post(url, json=body, headers=AUTH) as r:
            data = await r.read()
            assert r.status == 200, (r.status, data[:300])
            # a whole answer, or a stream to its end in either dialect
            assert data.endswith((b"}", b"[DONE]\n\n", b'"message_stop"}\n\n')), data[-200:]

    before = cpu_seconds(pid)
    for _ in range(count // width):
        await asyncio.gather(*(one() for _ in range(width)))
    return (cpu_seconds(pid) - before) / count * 1e6


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
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, admin_port)
            for shape, model, stream, count, width in SHAPES:
                o_body = dict(OPENAI, model=model, stream=stream)
                a_body = dict(ANTHROPIC, model=model, stream=stream)
                o_url, a_url = f"{base}/v1/chat/completions", f"{base}/v1/messages"
                await batch(http, o_url, o_body, gateway.pid, 400, width)
                await batch(http, a_url, a_body, gateway.pid, 400, width)
                openai, anthropic = [], []
                for pair in range(PAIRS):  # O A, A O, ...: neither dialect always goes first
                    for dialect in ("openai", "anthropic")[:: 1 if pair % 2 == 0 else -1]:
                        url, body, into = (
                            (o_url, o_body, openai)
                            if dialect == "openai"
                            else (a_url, a_body, anthropic)
                        )
                        into.append(await batch(http, url, body, gateway.pid, count, width))
                # each pair ran back to back: its ratio cancels the machine's drift over the run
                ratios = sorted(a / o for a, o in zip(anthropic, openai, strict=True))
                o, a = sorted(openai)[PAIRS // 2], sorted(anthropic)[PAIRS // 2]
                print(
                    f"{shape:25s} gateway CPU per request: OpenAI {o:.0f} us, "
                    f"Anthropic {a:.0f} us; ratio (median of {PAIRS} pairs) "
                    f"{ratios[PAIRS // 2]:.3f}, pairs {ratios[0]:.3f}-{ratios[-1]:.3f} "
                    "(target <= 1.10)",
                    flush=True,
                )
    finally:
        gateway.terminate()
        upstream.terminate()
        await gateway.wait()
        await upstream.wait()
        os.unlink(handle.name)


if __name__ == "__main__":
    uvloop.run(main())
