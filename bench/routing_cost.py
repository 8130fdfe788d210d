"""What choosing an upstream costs (part of ``bench/routing.py``).

- ``timeit`` in this process: the balancer of the commit before issue 16 (read with
  ``git show``) against today's; least_loaded over 4 idle upstreams (ties: today draws at
  random) and over 4 loaded ones; affinity's key (a short chat body and a 32 KB conversation)
  and pick, with fresh worker signals and the memory of where prompts went
  (``routing.history``); the first attempt's bookkeeping (``routing.chain``: the chain, its
  pick, ``done``) against the old loop's (a list, the pick, an append), and the same with
  ``affinity`` (the key and prefixes read from the body, the pick, the memory kept).
- the chat arm: one ``gateway run`` in front of an instant worker, 3 rounds of 2000 requests
  (8 at once) for each of least_loaded and affinity, alternated; the gateway's CPU per request
  from /proc (``BENCH_ROUTING_ARM_STORE=redis``: on a Redis store, whose CPU is given too;
  ``python bench/routing_cost.py --arm``: this part alone).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from common import BENCH_KEY, PYTHON, ROOT
from procs import CLK_TCK, Proc, Stack, free_port, group_ticks, wait_listening

from gateway.clock import SystemClock
from gateway.config.schema import ModelRouting, Pricing, Upstream
from gateway.metrics import Metrics
from gateway.routing.affinity import affinity as affinity_of
from gateway.routing.balancer import Balancer
from gateway.routing.chain import Chain
from gateway.routing.router import ModelRoute

BEFORE = "ee09e59"  # the last commit before issue 16's routing
NO_MEMORY = "98f64cf"  # the last commit before affinity's memory of prompts (routing.history)
SMALL = orjson.dumps(
    {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 16,
    }
)


def old_module(commit: str, path: str, name: str, **replace: Any) -> Any:
    """``path`` as it was at ``commit``, loaded as module ``name``; ``replace``: names to set
    in it afterwards (an older module it should use instead of today's)."""
    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{name}.py", "exec"), module.__dict__)
    module.__dict__.update(replace)
    return module


def old_balancer() -> Any:
    return old_module(BEFORE, "gateway/routing/balancer.py", "balancer_before").Balancer


def unremembered() -> tuple[Any, Any]:
    """The affinity key function and the balancer of ``NO_MEMORY`` (its ring too)."""
    ring = old_module(NO_MEMORY, "gateway/routing/ring.py", "ring_no_memory")
    balancer = old_module(NO_MEMORY, "gateway/routing/balancer.py", "balancer_no_memory")
    balancer.Ring = ring.Ring
    key = old_module(NO_MEMORY, "gateway/routing/affinity.py", "affinity_no_memory")
    return key.affinity_key, balancer.Balancer


def large_payload() -> bytes:
    rng = random.Random(3)
    text = " ".join(str(rng.random()) for _ in range(1600))
    messages = [{"role": "system", "content": "You are a coding agent. " * 20}]
    messages += [
        {"role": "user" if i % 2 else "assistant", "content": text[:2000]} for i in range(16)
    ]
    return orjson.dumps({"model": "m", "messages": messages, "stream": True})


def per_call(statement: Any, number: int = 200_000) -> float:
    """Microseconds per call, the best of 5 runs."""
    return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e6


def micro() -> dict[str, float]:
    # A cap on each: the balancer before compares against one (upstreams had one by default).
    pool = tuple(
        Upstream(name=f"gpu{i}", url=f"http://10.0.0.{i}:8000", max_concurrency=4096)
        for i in range(4)
    )
    old, new = old_balancer()(SystemClock()), Balancer(SystemClock(), random.Random(1))
    affinity = ModelRouting(policy="affinity")
    out = {
        "before: least_loaded, 4 idle": per_call(lambda: old.pick(pool, (), None)),
        "today: least_loaded, 4 idle (ties at random)": per_call(lambda: new.pick(pool, (), None)),
    }
    for i, u in enumerate(pool):
        for _ in range(i + 1):
            old.acquire(u)
            new.acquire(u)
        new.observe(u.name, waiting=0, running=i, cache=0.1 * i, until=time.monotonic() + 3600)
    out["before: least_loaded, 4 loaded"] = per_call(lambda: old.pick(pool, (), None))
    out["today: least_loaded, 4 loaded, fresh signals"] = per_call(lambda: new.pick(pool, (), None))
    small, large = affinity_of(SMALL, 256), large_payload()
    assert small is not None
    out["affinity key and prefixes, the bench's chat body (97 B)"] = per_call(
        lambda: affinity_of(SMALL, 256)
    )
    out[f"affinity key and prefixes, a conversation of {len(large) // 1024} KB"] = per_call(
        lambda: affinity_of(large, 256), 5_000
    )
    out["affinity pick (bounded load, signals, the memory of prompts)"] = per_call(
        lambda: new.pick(pool, (), None, affinity, small[0], "m", small[1])
    )
    key_before, balancer_before = unremembered()
    before = balancer_before(SystemClock(), random.Random(1))
    for i, u in enumerate(pool):
        for _ in range(i + 1):
            before.acquire(u)
        before.observe(u.name, waiting=0, running=i, cache=0.1 * i, until=time.monotonic() + 3600)
    out[f"before the memory ({NO_MEMORY}): affinity key, the chat body"] = per_call(
        lambda: key_before(SMALL, 256)
    )
    out[f"before the memory ({NO_MEMORY}): affinity pick"] = per_call(
        lambda: before.pick(pool, (), None, affinity, small[0], "m")
    )
    out.update(chain_costs(pool, old, new))
    return out


def chain_costs(pool: tuple[Upstream, ...], old: Any, new: Balancer) -> dict[str, float]:
    route = ModelRoute("m", "m", pool, "gateway", Pricing(), 0)
    by_affinity = ModelRoute(
        "m", "m", pool, "gateway", Pricing(), 0, routing=ModelRouting(policy="affinity")
    )
    metrics = Metrics()

    def before() -> None:
        tried = list[str]()
        upstream = old.pick(route.upstreams, tried, None)
        tried.append(upstream.name)

    def today(model: ModelRoute = route) -> None:
        chain = Chain(new, None, metrics, model, SMALL, None, None)  # type: ignore[arg-type]
        chain.first()
        chain.done()

    return {
        "before: the first attempt's bookkeeping (list, pick)": per_call(before),
        "today: the first attempt's bookkeeping (chain, pick, done)": per_call(today),
        "today, affinity: the first attempt's bookkeeping (key and prefixes, pick, done)": (
            per_call(lambda: today(by_affinity))
        ),
    }


def arm_config(policy: str, worker: int, port: int, admin: int, store: str = "memory://") -> str:
    from gateway.auth.keys import sha256_hex

    return f"""
listen: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: {admin}}}
log: {{level: warning, access: false}}
keys: {{static: [{{id: bench, owner: bench, sha256: '{sha256_hex(BENCH_KEY)}'}}]}}
upstreams: {{w0: {{url: 'http://127.0.0.1:{worker}'}}, w1: {{url: 'http://127.0.0.1:{worker}'}}}}
models: {{bench-model: {{upstreams: [w0, w1], routing: {{policy: {policy}}}}}}}
store: {{url: '{store}'}}
"""


async def load(port: int, requests: int) -> None:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {BENCH_KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:

        async def lane(n: int) -> None:
            for _ in range(n):
                async with http.post(url, data=SMALL, headers=headers) as r:
                    await r.read()
                    assert r.status == 200, r.status

        await asyncio.gather(*(lane(requests // 8) for _ in range(8)))


def chat_arm(run: Path, rounds: int = 3, requests: int = 4000) -> dict[str, list[float]]:
    """Gateway CPU µs per request, per round, for each policy. ``BENCH_ROUTING_ARM_STORE=redis``:
    the gateway on a redis-server of its own (where affinity's requests are placed by the
    store), whose CPU per request is given too."""
    out: dict[str, list[float]] = {"least_loaded": [], "affinity": []}
    shared = os.environ.get("BENCH_ROUTING_ARM_STORE") == "redis"
    if shared:
        out.update({"least_loaded (redis CPU)": [], "affinity (redis CPU)": []})
    with Stack() as stack:
        store, redis = "memory://", None
        if shared:
            redis_port = free_port()
            cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port)]
            redis = stack.start(Proc("redis", [*cmd, "--save", ""], run / "arm-redis.log"))
            wait_listening(redis, redis_port)
            store = f"redis://127.0.0.1:{redis_port}/0"
        worker = free_port()
        cmd = [
            str(PYTHON),
            "bench/gpu_worker.py",
            f"--port={worker}",
            "--slots=64",
            "--prefill-ms=0",
            "--decode-ms=0",
        ]
        wait_listening(stack.start(Proc("instant", cmd, run / "instant.log")), worker)
        for _ in range(rounds):
            for policy in ("least_loaded", "affinity"):
                port, admin = free_port(), free_port()
                path = run / f"arm-{policy}.yaml"
                path.write_text(arm_config(policy, worker, port, admin, store))
                proc = Proc(
                    f"arm-{policy}",
                    [str(PYTHON), "-m", "gateway", "run", "--config", str(path)],
                    run / "arm.log",
                )
                stack.start(proc)
                wait_listening(proc, port)
                asyncio.run(load(port, 200))  # warm-up
                before = group_ticks(proc)
                spent = group_ticks(redis) if redis is not None else 0
                asyncio.run(load(port, requests))
                ticks = group_ticks(proc) - before
                out[policy].append(ticks / CLK_TCK * 1e6 / requests)
                if redis is not None:
                    spent = group_ticks(redis) - spent
                    out[f"{policy} (redis CPU)"].append(spent / CLK_TCK * 1e6 / requests)
                proc.stop()
    return out


def measure(run: Path) -> dict[str, Any]:
    return {"micro": micro(), "chat_arm": chat_arm(run)}


def table(cost: dict[str, Any]) -> str:
    lines = ["| what | µs per call |", "|---|--:|"]
    lines += [f"| {name} | {us:.2f} |" for name, us in cost["micro"].items()]
    arm = cost["chat_arm"]
    lines += [
        "",
        "| chat arm (gateway CPU per request, µs) | rounds | median |",
        "|---|---|--:|",
    ]
    for policy, values in arm.items():
        rounds = " / ".join(f"{v:.0f}" for v in values)
        lines.append(f"| {policy} | {rounds} | {statistics.median(values):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if "--micro" in sys.argv:
        print(table({"micro": micro(), "chat_arm": {}}))
    elif "--arm" in sys.argv:  # the chat arm alone (BENCH_ROUTING_ARM_STORE=redis: on Redis)
        work = ROOT / "bench" / ".work" / "routing"
        work.mkdir(parents=True, exist_ok=True)
        print(table({"micro": {}, "chat_arm": chat_arm(work)}))
