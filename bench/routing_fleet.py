"""The routing bench's fleet and its runs: the simulated GPU workers, the gateways of a policy
(their config, on one Redis or each on memory), the client replaying the workload through them
while the workers' loads are sampled, one run per policy and the slowed worker's run."""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import statistics
import subprocess
import time
from typing import Any

import aiohttp
from common import BENCH_KEY, PYTHON, WORK, percentile
from procs import Proc, Stack, free_port, wait_listening
from routing_bounds import (
    arrivals_over,
    departures_only,
    in_transit,
    over_bound,
    served_shares,
    shares,
)
from routing_workload import (
    IN_FLIGHT,
    LOAD_FACTOR,
    POLICIES,
    SIGNALS_INTERVAL,
    ideal_hits,
    workload,
)

RUN = WORK / "routing"
WORKERS = 4
GATEWAYS = 2
# The gateways' store: one Redis for both (``memory``: each its own, as before 2026-12-06 noon,
# when affinity's memory could not be shared).
STORE = os.environ.get("BENCH_ROUTING_STORE", "redis")
# Each upstream's max_concurrency (never reached: 16 in flight); on Redis a cap is a lease per
# request (issue 17). BENCH_ROUTING_CAP=none: no cap.
_CAP = os.environ.get("BENCH_ROUTING_CAP", "64")
CAP = "" if _CAP == "none" else f", max_concurrency: {int(_CAP)}"


def gateway_config(arm: str, ports: list[int], port: int, admin: int, store: str) -> str:
    from gateway.auth.keys import sha256_hex

    policy, _, factor = arm.partition("+")[0].partition("@")

    upstreams = "\n".join(
        f"  gpu{i}: {{url: 'http://127.0.0.1:{p}', metrics_path: /metrics{CAP}}}"
        for i, p in enumerate(ports)
    )
    pool = ", ".join(f"gpu{i}" for i in range(len(ports)))
    return f"""
listen: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: {admin}}}
log: {{level: warning, access: false}}
keys: {{static: [{{id: bench, owner: bench, sha256: '{sha256_hex(BENCH_KEY)}'}}]}}
upstreams:
{upstreams}
models:
  sim:
    upstreams: [{pool}]
    routing: {{policy: {policy}, load_factor: {factor or LOAD_FACTOR}}}
routing: {{signals_interval: {SIGNALS_INTERVAL}}}
store: {{url: '{store}'}}
"""


class Fleet:
    """The GPU workers (one process) and the gateways of one policy."""

    def __init__(self, stack: Stack, args: list[str] | None = None) -> None:
        self.stack = stack
        self.ports = [free_port() for _ in range(WORKERS)]
        cmd = [str(PYTHON), "bench/gpu_worker.py", *[f"--port={p}" for p in self.ports]]
        self.proc = stack.start(Proc("gpu-workers", cmd + (args or []), RUN / "gpu.log"))
        for port in self.ports:
            wait_listening(self.proc, port)
        self.store, self.redis_port = "memory://", 0
        if STORE == "redis":
            self.redis_port = free_port()
            redis = [
                *("redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port)),
                *("--save", "", "--appendonly", "no"),
            ]
            wait_listening(stack.start(Proc("redis", redis, RUN / "redis.log")), self.redis_port)
            self.store = f"redis://127.0.0.1:{self.redis_port}/0"
        self.gateways: list[tuple[Proc, int]] = []

    def start_gateways(self, policy: str, count: int = GATEWAYS) -> list[int]:
        for proc, _ in self.gateways:
            proc.stop()
        self.gateways = []
        for n in range(count):
            port, admin = free_port(), free_port()
            path = RUN / f"gateway-{policy}-{n}.yaml"
            path.write_text(gateway_config(policy, self.ports, port, admin, self.store))
            cmd = [str(PYTHON), "-m", "gateway", "run", "--config", str(path)]
            proc = self.stack.start(Proc(f"gateway-{n}", cmd, RUN / f"gateway-{n}.log"))
            wait_listening(proc, port)
            self.gateways.append((proc, port))
        return [port for _, port in self.gateways]

    def publishes(self) -> int:
        """PUBLISH commands Redis ran since its counters were last reset (then resets them):
        the placements the gateways told each other."""
        if not self.redis_port:
            return 0
        redis = ["redis-cli", "-p", str(self.redis_port)]
        info = subprocess.run([*redis, "INFO", "commandstats"], capture_output=True, text=True)
        subprocess.run([*redis, "CONFIG", "RESETSTAT"], capture_output=True, check=True)
        found = re.search(r"cmdstat_publish:calls=(\d+)", info.stdout)
        return int(found.group(1)) if found else 0

    async def control(self, http: aiohttp.ClientSession, index: int, **asked: Any) -> None:
        url = f"http://127.0.0.1:{self.ports[index]}/control"
        async with http.post(url, json=asked) as r:
            assert r.status == 200

    async def stats(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        out = []
        for port in self.ports:
            async with http.get(f"http://127.0.0.1:{port}/stats") as r:
                out.append(await r.json())
        return out


async def sample_loads(
    http: aiohttp.ClientSession,
    fleet: Fleet,
    samples: list[list[float]],
    stop: asyncio.Event,
    times: list[float],
) -> None:
    """Every 20 ms, every worker's requests in the system (running + waiting), and when."""

    async def load(port: int) -> float:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
        return sum(float(x.split()[-1]) for x in text.splitlines()[:2])

    while not stop.is_set():  # the workers read at once: one row is one moment
        samples.append(list(await asyncio.gather(*(load(port) for port in fleet.ports))))
        times.append(time.monotonic())
        await asyncio.sleep(0.02)


async def one_request(
    http: aiohttp.ClientSession, port: int, messages: list[dict[str, str]]
) -> float:
    """Stream one turn; the seconds to its first content event."""
    body = {"model": "sim", "stream": True, "max_tokens": 16, "messages": messages}
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    async with http.post(
        f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers
    ) as r:
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {await r.text()}")
        ttft = None
        async for line in r.content:
            if ttft is None and line.startswith(b"data: {"):
                ttft = time.monotonic() - started
        return ttft if ttft is not None else math.nan


async def replay(
    http: aiohttp.ClientSession,
    ports: list[int],
    convs: list[list[list[dict[str, str]]]],
    deadline: float = math.inf,
    way: str = "",
) -> tuple[list[float], list[list[dict[str, str]]]]:
    """Every conversation's turns in order, IN_FLIGHT requests at once, each the next turn of
    the conversation waiting longest; requests alternate between the gateways (``way``
    "pinned": conversation ``c`` always through gateway ``c mod 2``; "random": a gateway drawn
    at random, seeded). Lanes stop at ``deadline`` (monotonic) if it comes first."""
    draw = random.Random(16)
    ready = list(range(len(convs)))
    turn = [0] * len(convs)
    ttfts: list[float] = []
    order: list[list[dict[str, str]]] = []
    count = 0

    async def lane() -> None:
        nonlocal count
        while ready and time.monotonic() < deadline:
            c = ready.pop(0)
            messages = convs[c][turn[c]]
            order.append(messages)
            count += 1
            if way == "random":
                port = draw.choice(ports)
            else:
                port = ports[(c if way == "pinned" else count) % len(ports)]
            ttfts.append(await one_request(http, port, messages))
            turn[c] += 1
            if turn[c] < len(convs[c]):
                ready.append(c)

    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
    return ttfts, order


async def policy_run(
    http: aiohttp.ClientSession, fleet: Fleet, policy: str, convs: Any
) -> dict[str, Any]:
    ports = fleet.start_gateways(policy)
    for i in range(WORKERS):
        await fleet.control(http, i, reset=True)
    await asyncio.sleep(1.5)  # the gateways read the workers' signals once
    fleet.publishes()
    samples: list[list[float]] = []
    times: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_loads(http, fleet, samples, stop, times))
    started = time.monotonic()
    ttfts, order = await replay(http, ports, convs, way=policy.partition("+")[2])
    elapsed = time.monotonic() - started
    stop.set()
    await sampler
    stats = await fleet.stats(http)
    hits = sum(s["hits"] for s in stats) / max(1, sum(s["queries"] for s in stats))
    ideal_hit, ideal_total = ideal_hits(order)
    share, excess = over_bound(samples)
    at_arrival = arrivals_over(stats, started)
    return {
        "policy": policy,
        "requests": len(ttfts),
        "seconds": elapsed,
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p95_ms": 1000 * percentile(ttfts, 95),
        "hit_rate": hits,
        **served_shares([row for s in stats for row in s["served"]]),
        "ideal_hit_rate": ideal_hit / ideal_total,
        "per_worker": [len(s["arrivals"]) for s in stats],
        "over_bound_share": share,
        "over_by": excess,
        "arrivals_over": at_arrival[0],
        "arrivals_over2": at_arrival[1],
        "arrivals_over_at": at_arrival[2],
        "arrivals_over_in_transit": in_transit(stats, started),
        "departures_only": departures_only(stats, samples, times),
        "told_per_request": fleet.publishes() / max(1, len(ttfts)),
        "samples": [[round(t - started, 3), *row] for t, row in zip(times, samples, strict=True)],
    }


async def slow_worker_run(
    http: aiohttp.ClientSession, fleet: Fleet, convs: Any, slow_at: float = 5.0
) -> dict[str, Any]:
    """Affinity; worker 2 made 3x slower ``slow_at`` seconds in (for 10 s more); its share of
    arrivals."""
    ports = fleet.start_gateways("affinity")
    for i in range(WORKERS):
        await fleet.control(http, i, reset=True)
    await asyncio.sleep(1.5)
    origin = time.monotonic()

    async def slow_down() -> None:
        await asyncio.sleep(slow_at)
        await fleet.control(http, 2, slow=3.0)

    await asyncio.gather(replay(http, ports, convs, origin + slow_at + 10), slow_down())
    stats = await fleet.stats(http)
    return shares(stats, origin, slow_at)


async def fleet_bench(
    conversations: int, turns: int, policies: tuple[str, ...] = POLICIES, slow_run: bool = True
) -> dict[str, Any]:
    RUN.mkdir(parents=True, exist_ok=True)
    convs = workload(conversations, turns)
    results: dict[str, Any] = {}
    with Stack() as stack:
        fleet = Fleet(stack)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            results["policies"] = [await policy_run(http, fleet, p, convs) for p in policies]
            if slow_run:
                slow = workload(400, 6, seed=7)  # more than 15 s of work: the deadline ends it
                results["slow"] = await slow_worker_run(http, fleet, slow)
    return results
