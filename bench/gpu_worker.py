"""A simulated GPU inference worker for the routing bench: what makes routing matter on GPUs.

- a **prefix cache** of bounded size: an LRU over blocks of ``BLOCK`` tokens, each block named
  by the hash of every token before it and its own (vLLM's automatic prefix caching), so a
  prompt hits the blocks of its longest prefix already seen here;
- a **prefill cost** per uncached prompt token and a **decode cost** per output token;
- at most ``--slots`` requests running, the rest waiting in a queue;
- ``GET /metrics`` in vLLM's names (``vllm:num_requests_running``, ``…_waiting``,
  ``vllm:kv_cache_usage_perc``, ``vllm:prefix_cache_queries_total``, ``…_hits_total``);
- ``POST /control`` ``{"slow": 3.0}`` multiplies every cost from then on; ``{"reset": true}``
  empties the cache and the counters; ``GET /stats`` what it served (arrival times, and per
  request its wait in the queue, prompt tokens and tokens from the cache), and at each arrival
  the requests in every worker of the process at that instant, this one counted (``placed``:
  the workers of one process are read at once, so a row is one moment of the whole fleet).

Tokens are 4 characters of the prompt's text (role and content of every message), as the
gateway estimates them. One process serves every ``--port`` given.

    python bench/gpu_worker.py --port 8201 --port 8202 --slots 4
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvloop
from aiohttp import web

BLOCK = 16  # tokens per cache block
CHARS_PER_TOKEN = 4


def prompt_text(body: dict[str, Any]) -> str:
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if not isinstance(content, str):
            content = orjson.dumps(content).decode()
        parts.append(f"{message.get('role')}\n{content}\n")
    return "".join(parts)


def block_hashes(text: str) -> list[bytes]:
    """The names of the prompt's whole blocks: each the hash of its prefix."""
    size = BLOCK * CHARS_PER_TOKEN
    out, previous = [], b""
    for start in range(0, len(text) - size + 1, size):
        previous = hashlib.blake2b(
            previous + text[start : start + size].encode(), digest_size=8
        ).digest()
        out.append(previous)
    return out


@dataclass
class Gpu:
    capacity_blocks: int
    slots: int
    prefill_per_token: float
    decode_per_token: float
    slow: float = 1.0
    cache: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    running: int = 0
    waiting: int = 0
    queries: int = 0  # prompt tokens asked
    hits: int = 0  # of which served from the cache
    arrivals: list[float] = field(default_factory=list)
    served: list[tuple[float, int, int]] = field(default_factory=list)  # wait s, tokens, hits
    # At each arrival: every worker's running + waiting (this process's, in port order).
    placed: list[list[int]] = field(default_factory=list)
    fleet: list[Gpu] = field(default_factory=list)  # every worker of this process, this one too
    free: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.free = asyncio.Semaphore(self.slots)

    def lookup(self, blocks: list[bytes]) -> int:
        """Blocks of the longest cached prefix; then the prompt's blocks are cached (LRU)."""
        hit = 0
        for name in blocks:
            if name not in self.cache:
                break
            hit += 1
        for name in blocks:
            self.cache[name] = None
            self.cache.move_to_end(name)
        while len(self.cache) > self.capacity_blocks:
            self.cache.popitem(last=False)
        return hit

    def metrics(self) -> str:
        usage = min(1.0, self.running * 0.2)  # a share of KV blocks held by running requests
        return (
            f'vllm:num_requests_running{{model_name="sim"}} {self.running}\n'
            f'vllm:num_requests_waiting{{model_name="sim"}} {self.waiting}\n'
            f'vllm:kv_cache_usage_perc{{model_name="sim"}} {usage}\n'
            f'vllm:prefix_cache_queries_total{{model_name="sim"}} {self.queries}\n'
            f'vllm:prefix_cache_hits_total{{model_name="sim"}} {self.hits}\n'
        )


def chunk(text: str, finish: str | None = None) -> bytes:
    delta = {"content": text} if text else {}
    event = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    gpu: Gpu = request.app["gpu"]
    body = orjson.loads(await request.read())
    gpu.arrivals.append(time.monotonic())
    text = prompt_text(body)
    blocks = block_hashes(text)
    tokens = max(1, len(text) // CHARS_PER_TOKEN)
    output = int(body.get("max_tokens") or 16)
    gpu.waiting += 1
    gpu.placed.append([g.running + g.waiting for g in gpu.fleet])
    arrived = time.monotonic()
    async with gpu.free:
        gpu.waiting -= 1
        gpu.running += 1
        try:
            hit_tokens = min(tokens, gpu.lookup(blocks) * BLOCK)
            gpu.queries += tokens
            gpu.hits += hit_tokens
            gpu.served.append((time.monotonic() - arrived, tokens, hit_tokens))
            await asyncio.sleep((tokens - hit_tokens) * gpu.prefill_per_token * gpu.slow)
            return await _decode(request, gpu, output, body.get("stream") is True)
        finally:
            gpu.running -= 1


async def _decode(request: web.Request, gpu: Gpu, output: int, stream: bool) -> web.StreamResponse:
    step = gpu.decode_per_token * gpu.slow
    if not stream:
        await asyncio.sleep(step * output)
        answer = {
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok " * output},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": output},
        }
        return web.json_response(answer)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i in range(output):
        await asyncio.sleep(step)
        await response.write(chunk("ok " if i else "ok"))
    await response.write(chunk("", "stop") + b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app["gpu"].metrics(), content_type="text/plain")


async def control(request: web.Request) -> web.Response:
    gpu: Gpu = request.app["gpu"]
    asked = await request.json()
    if "slow" in asked:
        gpu.slow = float(asked["slow"])
    if asked.get("reset"):
        gpu.cache.clear()
        gpu.queries = gpu.hits = 0
        gpu.arrivals.clear()
        gpu.served.clear()
        gpu.placed.clear()
        gpu.slow = 1.0
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    gpu: Gpu = request.app["gpu"]
    return web.json_response(
        {
            "queries": gpu.queries,
            "hits": gpu.hits,
            "arrivals": gpu.arrivals,
            "served": gpu.served,
            "placed": gpu.placed,
        }
    )


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def app(gpu: Gpu) -> web.Application:
    application = web.Application()
    application["gpu"] = gpu
    application.router.add_post("/v1/chat/completions", chat)
    application.router.add_get("/metrics", metrics)
    application.router.add_post("/control", control)
    application.router.add_get("/stats", stats)
    application.router.add_get("/health", health)
    return application


async def serve(args: argparse.Namespace) -> None:
    runners = []
    fleet: list[Gpu] = []
    for port in args.port:
        gpu = Gpu(args.cache_blocks, args.slots, args.prefill_ms / 1000, args.decode_ms / 1000)
        fleet.append(gpu)
        gpu.fleet = fleet
        runner = web.AppRunner(app(gpu), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--cache-blocks", type=int, default=3000, help="of 16 tokens each")
    # About a 70B model on one GPU: ~5,000 prompt tokens a second, 50 output tokens a second.
    parser.add_argument("--prefill-ms", type=float, default=0.2, help="per uncached prompt token")
    parser.add_argument("--decode-ms", type=float, default=20.0, help="per output token")
    uvloop.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
