"""The governed APIs beside chat: the gateway's CPU per request on embeddings and on Responses
(translate mode, whole and streamed) next to chat's, each pair on one governed gateway (target:
within 15 % of chat's, issue 15).

Governed as ``bench/arms.py``'s governed arms are: a Redis store (when ``redis-server`` is
installed; else ``memory://``, said in the output), the key with every limit set (IP
allowlist, rpm, concurrency, daily and monthly tokens) and its owner's plan too, none reached,
and the access log on (written to /dev/null). The harness is ``bench/dialects.py``'s: one
gateway (1 worker) pinned to CPU 0, its CPU time read from /proc around batches of identical
requests, the two APIs' batches alternated (the median of the pairs' ratios); the canned
upstream (``dialects_upstream.py``), Redis and this client on CPU 1. Chat and Responses send the
same conversation (16 tokens at most); the embeddings request is one short input answered with
one 1,024-dimension vector in base64 (the OpenAI SDK's default), chat's the canned 18-token
answer. The Responses requests are stored (``store`` true, the default).

    .venv/bin/python bench/apis.py          # BENCH_PAIRS=9 BENCH_COUNT=6400 by default
    BENCH_ARMS=streamed .venv/bin/python bench/apis.py   # only the arms whose name says so
    BENCH_ARMS="store false" .venv/bin/python bench/apis.py  # Responses not stored (store's share)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pathlib
import sys
import tempfile
from typing import Any

import aiohttp
import uvloop
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dialects import OPENAI, cpu_seconds, wait_ready  # noqa: E402
from bench.responses import RESPONSES  # noqa: E402
from tests import redis_server  # noqa: E402

KEY = "sk-bench-apis-loopback-only"
HEADERS = {"Authorization": f"Bearer {KEY}"}
LIMIT = 10**12  # every token limit: set, never reached
PAIRS = int(os.environ.get("BENCH_PAIRS", "9"))
COUNT = int(os.environ.get("BENCH_COUNT", "6400"))
EMBED = {"model": "m-embed", "input": "Say hello", "encoding_format": "base64"}
# (name, chat body, the other API's path and body, requests in flight)
Arm = tuple[str, dict[str, Any], str, dict[str, Any], int]
ARMS: tuple[Arm, ...] = (
    ("embeddings", dict(OPENAI, model="m-json"), "/v1/embeddings", EMBED, 8),
    ("Responses, whole", dict(OPENAI, model="m-json"), "/v1/responses",
     dict(RESPONSES, model="m-json"), 8),
    ("Responses, streamed", dict(OPENAI, model="m-sse", stream=True), "/v1/responses",
     dict(RESPONSES, model="m-sse", stream=True), 8),
)  # fmt: skip
# The Responses arms with ``store: false``, run only when BENCH_ARMS says "store false": what
# keeping the response costs, beside chat.
UNSTORED: tuple[Arm, ...] = tuple(
    (f"{name} (store false)", chat, path, dict(body, store=False), width)
    for name, chat, path, body, width in ARMS
    if path == "/v1/responses"
)


def config(port: int, admin_port: int, upstream_port: int, store: str) -> str:
    up = f"http://127.0.0.1:{upstream_port}"
    key = {
        "id": "bench",
        "owner": "bench",
        "sha256": hashlib.sha256(KEY.encode()).hexdigest(),
        "permissions": ["chat", "embeddings"],
        "ip_whitelist": ["127.0.0.0/8"],
        "rpm_limit": 100_000_000,
        "max_concurrency": 100_000,
        "daily_limit": LIMIT,
        "monthly_limit": LIMIT,
    }
    every = ["chat", "responses", "embeddings"]
    return yaml.safe_dump(
        {
            "listen": {"host": "127.0.0.1", "port": port},
            "admin": {"host": "127.0.0.1", "port": admin_port},
            "store": {"url": store, "timeout_ms": 2000},  # a busy machine's pauses are no outage
            "upstreams": {
                "json": {"url": f"{up}/json"},
                "sse": {"url": f"{up}/sse"},
                "embed": {"url": f"{up}/embed"},
            },
            "models": {
                "m-json": {"upstreams": ["json"], "apis": every},
                "m-sse": {"upstreams": ["sse"], "apis": every},
                "m-embed": {"upstreams": ["embed"], "apis": every},
            },
            "keys": {"static": [key]},
            "plans": {"bench": {"max_keys": None, "monthly_tokens": LIMIT, "rpm": 100_000_000}},
            "default_plan": "bench",
            "log": {"level": "warning", "access": True},
        },
        sort_keys=False,
    )


SIZES: dict[str, int] = {}  # bytes of the last answer, by URL and model


async def batch(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], pid: int, count: int, width: int
) -> float:
    """Gateway CPU microseconds per request over ``count`` requests, ``width`` at a time."""

    async def one() -> None:
        async with http.post(url, json=body, headers=HEADERS) as r:
            data = await r.read()
            SIZES[url + body["model"]] = len(data)
            assert r.status == 200, (r.status, data[:300])
            ended = data.endswith((b"}", b"[DONE]\n\n")) or b"event: response.completed" in data
            assert ended, data[-200:]

    before = cpu_seconds(pid)
    for _ in range(count // width):
        await asyncio.gather(*(one() for _ in range(width)))
    return (cpu_seconds(pid) - before) / count * 1e6


async def measure(http: aiohttp.ClientSession, base: str, pid: int, arm: Arm) -> str:
    name, chat_body, path, body, width = arm
    chat = (f"{base}/v1/chat/completions", chat_body)
    other = (f"{base}{path}", body)
    for url, sent in (chat, other):  # warm-up
        await batch(http, url, sent, pid, 400, width)
    costs: dict[str, list[float]] = {"chat": [], "other": []}
    for pair in range(PAIRS):  # C O, O C, ...: neither API always goes first
        for api in ("chat", "other")[:: 1 if pair % 2 == 0 else -1]:
            url, sent = chat if api == "chat" else other
            costs[api].append(await batch(http, url, sent, pid, COUNT, width))
    ratios = sorted(o / c for o, c in zip(costs["other"], costs["chat"], strict=True))
    c, o = sorted(costs["chat"])[PAIRS // 2], sorted(costs["other"])[PAIRS // 2]
    sizes = SIZES[chat[0] + chat_body["model"]], SIZES[other[0] + body["model"]]
    return (
        f"{name:34s} gateway CPU per request: chat {c:.0f} us, {name.split(',')[0]} {o:.0f} us; "
        f"ratio (median of {PAIRS} pairs) {ratios[PAIRS // 2]:.3f}, pairs {ratios[0]:.3f}-"
        f"{ratios[-1]:.3f} (target <= 1.15); answers {sizes[0]} and {sizes[1]} bytes"
    )


async def main() -> None:
    os.sched_setaffinity(0, {1})  # the client beside the upstream, off the gateway's CPU
    redis = redis_server.start_redis() if redis_server.available() else None
    if redis is not None:
        os.sched_setaffinity(redis.process.pid, {1})
    store = redis.url if redis is not None else "memory://"
    print(f"store: {store.split(':')[0]}; load average {os.getloadavg()}", flush=True)
    upstream_port = redis_server.free_port()
    port, admin_port = redis_server.free_port(), redis_server.free_port()
    upstream = await asyncio.create_subprocess_exec(
        "taskset", "-c", "1", sys.executable, str(ROOT / "bench" / "dialects_upstream.py"),
        "--port", str(upstream_port), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert upstream.stdout is not None
    assert (await asyncio.wait_for(upstream.stdout.readline(), 20)).strip() == b"ready"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(config(port, admin_port, upstream_port, store))
    gateway = await asyncio.create_subprocess_exec(
        "taskset", "-c", "0", sys.executable, "-m", "gateway", "run", "--config", handle.name,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, admin_port)
            only = os.environ.get("BENCH_ARMS", "")
            for arm in ARMS + (UNSTORED if "store false" in only else ()):
                if only and not any(word in arm[0] for word in only.split(",")):
                    continue
                line = await measure(http, f"http://127.0.0.1:{port}", gateway.pid, arm)
                print(line, flush=True)
        print(f"load average {os.getloadavg()}", flush=True)
    finally:
        for process in (gateway, upstream):
            with contextlib.suppress(ProcessLookupError):  # it may have died already
                process.terminate()
            await process.wait()
        os.unlink(handle.name)
        if redis is not None:
            redis.stop()


if __name__ == "__main__":
    uvloop.run(main())
