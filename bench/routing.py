"""The routing bench (issue 16): does affinity routing pay on GPU workers, and what does choosing
cost?

    flock /tmp/bench.lock .venv/bin/python bench/routing.py   # about 5 minutes; the tables

1. **Policies on a GPU fleet.** 4 simulated GPU workers (``bench/gpu_worker.py``: a prefix cache
   of 3,000 blocks of 16 tokens, 0.2 ms per uncached prompt token, 20 ms per output token, 4
   slots and a queue, vLLM's metrics) behind 2 gateway processes (``gateway run`` on one
   Redis store, through which they tell each other where affinity moved a conversation;
   ``BENCH_ROUTING_STORE=memory``: each its own memory store; the client alternates between
   them, pins each conversation to one (``+pinned``) or draws one per request (``+random``);
   signals read every 0.1 s, the same share of a simulated request's half second as the
   default 1 s is of a real one). A multi-turn
   workload (48 conversations of 10 turns, each turn extending the previous prompt; 4 shared
   system prompts) is replayed under each policy, 16 requests in flight, streamed, 16 output
   tokens. Measured: time to first token at the client, the prefix-cache hit rate against the
   ideal (one worker with an infinite cache, the same requests in the same order), and the
   workers' loads (running + waiting, the 4 read at once) sampled every 20 ms against
   ``ceil(1.25 x mean)``, over the whole run and after its first second, with the share of
   those over only because requests ended elsewhere since the worker's last arrival; and the
   bound at each arrival (what routing decides: the workers record every worker's load at
   that instant), with how many of those over it a request arriving at another worker within
   5 ms after would bring within it (perhaps placed before it, not yet at its worker: a
   placement counts it, the worker's instant does not) (``affinity@2``: affinity with
   ``load_factor: 2``).
2. **A worker made 3x slower mid-run** (affinity): its share of new requests per 0.5 s, when a
   second of it first fell to two thirds of its share before, and its share once settled.
3. **The cost of choosing**, in this process (``timeit``): the pick of the code before issue 16
   (``git show`` of its balancer) against today's, least_loaded and affinity (key and pick), and
   the whole first attempt's bookkeeping (``routing.chain``) against the old loop's.
4. **The chat arm's CPU**: one gateway process in front of an instant worker, 3 x 4000
   requests alternated between ``least_loaded`` and ``affinity``; the gateway's CPU per request.

Everything listens on 127.0.0.1 on free ports; processes are stopped on exit.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import math
import os
import random
import re
import statistics
import subprocess
import time
from typing import Any

import aiohttp
import routing_cost
from common import BENCH_KEY, PYTHON, WORK, percentile
from gpu_worker import BLOCK, block_hashes, prompt_text
from procs import Proc, Stack, free_port, wait_listening

RUN = WORK / "routing"
WORKERS = 4
GATEWAYS = 2
IN_FLIGHT = 16
LOAD_FACTOR = 1.25
# Seconds from a request's placement to its arrival at its worker, at most (loopback, loaded
# host): an arrival elsewhere within this after an arrival may have been placed before it.
TRANSIT = 0.005
# A simulated request lasts about half a second (real ones: seconds to minutes): the signals are
# read at the same fraction of a request's life as the default 1 s is of a real one.
SIGNALS_INTERVAL = 0.1
# "policy@load_factor": affinity with a looser bound, to show what the bound costs in hits.
# "+pinned": each conversation through one gateway (as a client keeping its connection does);
# "+random": each request through a gateway drawn at random (a load balancer's spread);
# otherwise every request goes to the other gateway than the one before it.
POLICIES = (
    "least_loaded",
    "round_robin",
    "affinity",
    "affinity@2",
    "least_loaded+pinned",
    "affinity+pinned",
    "least_loaded+random",
    "affinity+random",
)
# The gateways' store: one Redis for both (``memory``: each its own, as before 2026-12-06 noon,
# when affinity's memory could not be shared).
STORE = os.environ.get("BENCH_ROUTING_STORE", "redis")
# Each upstream's max_concurrency (never reached: 16 in flight); on Redis a cap is a lease per
# request (issue 17). BENCH_ROUTING_CAP=none: no cap.
_CAP = os.environ.get("BENCH_ROUTING_CAP", "64")
CAP = "" if _CAP == "none" else f", max_concurrency: {int(_CAP)}"
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()  # noqa: SIM905


def words(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(rng.choice(WORDS) + str(rng.randrange(1000)))
    return " ".join(out)


def workload(conversations: int, turns: int, seed: int = 16) -> list[list[list[dict[str, str]]]]:
    """Each conversation's prompts, turn by turn: 4 shared system prompts, a long opening
    message of its own, then an answer and a follow-up per turn."""
    rng = random.Random(seed)
    systems = [f"You are assistant {i}. " + words(rng, 600) for i in range(4)]
    out = []
    for c in range(conversations):
        messages = [
            {"role": "system", "content": systems[c % len(systems)]},
            {"role": "user", "content": f"Document {c}: " + words(rng, 2000)},
        ]
        prompts = [list(messages)]
        for _ in range(turns - 1):
            messages += [
                {"role": "assistant", "content": words(rng, 400)},
                {"role": "user", "content": words(rng, 200)},
            ]
            prompts.append(list(messages))
        out.append(prompts)
    return out


def ideal_hits(prompts: list[list[dict[str, str]]]) -> tuple[int, int]:
    """(hit tokens, prompt tokens) of one worker with an infinite cache, in this order."""
    seen: set[bytes] = set()
    hits = total = 0
    for messages in prompts:
        text = prompt_text({"messages": messages})
        blocks = block_hashes(text)
        total += max(1, len(text) // 4)
        hit = 0
        for name in blocks:
            if name not in seen:
                break
            hit += 1
        hits += hit * BLOCK
        seen.update(blocks)
    return hits, total


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


def served_shares(served: list[list[float]]) -> dict[str, float]:
    """Of the requests the workers served: the share that waited in a queue (over 1 ms), their
    mean wait, and the share served cold (under half of the prompt from the cache)."""
    waited = [wait for wait, *_ in served if wait > 0.001]
    cold = sum(1 for _, tokens, hit, *_ in served if hit < tokens / 2)
    count = max(1, len(served))
    return {
        "waited_share": len(waited) / count,
        "wait_mean_ms": 1000 * statistics.mean(waited) if waited else 0.0,
        "cold_share": cold / count,
    }


def over_bound(samples: list[list[float]]) -> tuple[float, list[float]]:
    """Share of the samples with requests in the system where some worker held more than
    ceil(load_factor x mean), and the shares where the most loaded held 1, 2, 3 or more
    requests over that bound."""
    busy = [row for row in samples if sum(row) > 0]
    excess = [0, 0, 0]
    for row in busy:
        over = max(row) - math.ceil(LOAD_FACTOR * sum(row) / len(row))
        if over > 0:
            excess[min(int(over), 3) - 1] += 1
    count = max(1, len(busy))
    return sum(excess) / count, [n / count for n in excess]


def arrivals_over(stats: list[dict[str, Any]], origin: float) -> tuple[float, float, list[float]]:
    """At each arrival, the worker it reached against ceil(load_factor x the fleet's mean) at
    that instant, this request counted (the workers are one process: one moment): the share of
    arrivals over, over by 2 or more, and when (seconds after ``origin``) each over came. What
    consistent hashing with bounded loads bounds is this: a placement; requests ending
    elsewhere afterwards lower the mean under a worker that cannot give its requests back,
    which the samples count too."""
    over = [0, 0]
    count = 0
    times: list[float] = []
    for i, s in enumerate(stats):
        for t, row in zip(s["arrivals"], s.get("placed", ()), strict=False):
            excess = row[i] - math.ceil(LOAD_FACTOR * sum(row) / len(row) - 1e-9)
            count += 1
            over[0] += excess > 0
            over[1] += excess > 1
            if excess > 0:
                times.append(round(t - origin, 3))
    return over[0] / max(1, count), over[1] / max(1, count), sorted(times)


def in_transit(stats: list[dict[str, Any]], origin: float) -> list[float]:
    """Of the arrivals over the bound, when (as ``arrivals_over``) those that the requests
    arriving at other workers within ``TRANSIT`` seconds after them would bring within it:
    requests perhaps placed before them but not yet at their worker, which a placement counts
    and the worker's instant does not (an upper bound of what that explains)."""
    arrivals = sorted((t, i) for i, s in enumerate(stats) for t in s["arrivals"])
    out = []
    for i, s in enumerate(stats):
        for t, row in zip(s["arrivals"], s.get("placed", ()), strict=False):
            if row[i] <= math.ceil(LOAD_FACTOR * sum(row) / len(row) - 1e-9):
                continue
            j = bisect.bisect_right(arrivals, (t, len(stats)))
            later = 0
            while j < len(arrivals) and arrivals[j][0] <= t + TRANSIT:
                later += arrivals[j][1] != i
                j += 1
            if row[i] <= math.ceil(LOAD_FACTOR * (sum(row) + later) / len(row) - 1e-9):
                out.append(round(t - origin, 3))
    return sorted(out)


def departures_only(
    stats: list[dict[str, Any]], samples: list[list[float]], times: list[float]
) -> float:
    """Of the samples over the bound, the share where the busiest worker was within the bound
    at its last arrival before the sample: only requests ending elsewhere put it over."""
    over = within = 0
    for t, row in zip(times, samples, strict=True):
        if not sum(row):
            continue
        bound = math.ceil(LOAD_FACTOR * sum(row) / len(row) - 1e-9)
        w = max(range(len(row)), key=row.__getitem__)
        if row[w] <= bound:
            continue
        over += 1
        arrivals = stats[w]["arrivals"]
        j = bisect.bisect_right(arrivals, t) - 1
        placed = stats[w].get("placed", ())
        if 0 <= j < len(placed):
            prow = placed[j]
            within += prow[w] <= math.ceil(LOAD_FACTOR * sum(prow) / len(prow) - 1e-9)
    return within / over if over else math.nan


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


def shares(stats: list[dict[str, Any]], origin: float, slow_at: float) -> dict[str, Any]:
    """The slow worker's share of arrivals per 0.5 s; when a second of it (two windows) first
    fell to two thirds of its share before, and its share once settled (3 s to 10 s after)."""
    arrivals = [[t - origin for t in s["arrivals"]] for s in stats]
    end = max(t for a in arrivals for t in a)
    windows = []
    t = 0.0
    while t < end:
        total = sum(1 for a in arrivals for x in a if t <= x < t + 0.5)
        slow = sum(1 for x in arrivals[2] if t <= x < t + 0.5)
        windows.append((t, slow / total if total else 0.0))
        t += 0.5
    before = [s for w, s in windows if 1.0 <= w < slow_at]
    base = statistics.mean(before) if before else 0.0
    seconds = [(w, (a + b) / 2) for (w, a), (_, b) in itertools.pairwise(windows)]
    moved = next((w + 1.0 - slow_at for w, s in seconds if w >= slow_at and s <= base * 2 / 3), -1)
    later = [s for w, s in windows if slow_at + 3 <= w < slow_at + 10]
    return {
        "share_before": base,
        "moved_after_s": moved,
        "share_after": statistics.mean(later) if later else math.nan,
        "windows": windows,
    }


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


def ratio_to_least_loaded(results: list[dict[str, Any]], r: dict[str, Any]) -> str:
    """TTFT p50 against least_loaded's with the same way of choosing gateways, if it ran."""
    way = r["policy"].partition("+")[2]
    base = next(
        (b for b in results if b["policy"] == "least_loaded" + (f"+{way}" if way else "")), None
    )
    return f"{r['ttft_p50_ms'] / base['ttft_p50_ms']:.2f}x" if base else "-"


def settled(r: dict[str, Any]) -> str:
    """The bound after the run's first second (its first requests all start at once, through
    both gateways, before either can tell the other anything)."""
    rows = [row[1:] for row in r.get("samples", ()) if row[0] >= 1.0]
    if not rows:
        return "-"
    share, excess = over_bound(rows)
    return f"{share:.1%}, {excess[1] + excess[2]:.1%}"


def report(fleet: dict[str, Any], cost: dict[str, Any] | None) -> str:
    lines = [
        "| arm | TTFT p50 ms | of least_loaded's | TTFT p95 ms | prefix-cache hits | of the ideal "
        "| requests per worker | waited in a queue | served cold "
        "| samples over ceil(1.25 x mean) | by 1 / 2 / 3+ | after the first second: over, by 2+ "
        "| of those, over only by requests ending elsewhere "
        "| arrivals over ceil(1.25 x mean), by 2+ (how many after the first second; how many a "
        "request arriving elsewhere within 5 ms would bring within it) "
        "| PUBLISH per request |",
        "|---|--:|--:|--:|--:|--:|---|--:|--:|--:|---|---|--:|---|--:|",
    ]
    for r in fleet["policies"]:
        lines.append(
            f"| {r['policy']} | {r['ttft_p50_ms']:.1f}"
            f" | {ratio_to_least_loaded(fleet['policies'], r)} | {r['ttft_p95_ms']:.1f}"
            f" | {r['hit_rate']:.1%} | {r['hit_rate'] / r['ideal_hit_rate']:.1%}"
            f" | {' / '.join(map(str, r['per_worker']))} | {r['waited_share']:.1%}"
            f" | {r['cold_share']:.1%} | {r['over_bound_share']:.1%}"
            f" | {' / '.join(f'{x:.1%}' for x in r['over_by'])} | {settled(r)}"
            f" | {r.get('departures_only', math.nan):.0%}"
            f" | {r.get('arrivals_over', math.nan):.1%}, {r.get('arrivals_over2', math.nan):.2%}"
            f" ({sum(t >= 1.0 for t in r.get('arrivals_over_at', ()))} after 1 s;"
            f" {len(r.get('arrivals_over_in_transit', ()))} with a request in transit)"
            f" | {r.get('told_per_request', 0.0):.3f} |"
        )
    slow = fleet.get("slow")
    if slow:
        lines += [
            "",
            f"Worker made 3x slower (affinity): its share of arrivals before "
            f"{slow['share_before']:.1%}; a second of it at two thirds of that or less ended "
            f"{slow['moved_after_s']:.1f} s after the slowdown; {slow['share_after']:.1%} from "
            "3 s to 10 s after it.",
        ]
    if cost:
        lines += ["", routing_cost.table(cost)]
    return "\n".join(lines)


def main() -> None:
    """Environment: BENCH_ROUTING_CONVERSATIONS, _TURNS (48, 10), _POLICIES (comma-separated
    arms, default ``POLICIES``), _SLOW=0 and _COST=0 to leave out the slow worker's run and
    the cost of choosing, _REUSE_FLEET=1 to report the last fleet run again, _STORE."""
    conversations = int(os.environ.get("BENCH_ROUTING_CONVERSATIONS", 48))
    turns = int(os.environ.get("BENCH_ROUTING_TURNS", 10))
    policies = tuple(filter(None, os.environ.get("BENCH_ROUTING_POLICIES", "").split(",")))
    RUN.mkdir(parents=True, exist_ok=True)
    saved = RUN / "fleet.json"  # kept, so that a failure measuring the cost loses nothing
    if os.environ.get("BENCH_ROUTING_REUSE_FLEET") and saved.exists():
        fleet = json.loads(saved.read_text())
    else:
        slow = os.environ.get("BENCH_ROUTING_SLOW") != "0"
        fleet = asyncio.run(fleet_bench(conversations, turns, policies or POLICIES, slow))
        saved.write_text(json.dumps(fleet))
    cost = routing_cost.measure(RUN) if os.environ.get("BENCH_ROUTING_COST") != "0" else None
    text = report(fleet, cost)
    print(text)
    (RUN / "results.json").write_text(json.dumps({"fleet": fleet, "cost": cost}, indent=1))


if __name__ == "__main__":
    main()
