"""The fair admission bench (its own command): two gateway processes on one Redis in front of
one worker with capacity 8 that counts the requests it holds at once (an aiohttp server in this
process), two owners on plans of shares 1 and 4 with far more demand than capacity, a third
owner with light traffic, then one gateway process killed.

    .venv/bin/python bench/fairness.py [seconds]     # default 20; prints one JSON line

Reports the split of served requests (target 4 ± 10 %), the light owner's waits (p99 ≤ 1 s),
the worker's peak (never above 8), and how long after the kill the worker holds 8 again (the
dead process's slots back, ≤ 5 s). Not part of the test suite (tests/fairness asserts the
same figures in a few seconds)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web
from common import PYTHON, WORK
from procs import Proc, Stack, free_port, wait_listening

CAP = 8
DELAY = 0.05  # seconds a request holds the worker
HEAVY = 24  # clients per heavy owner, split over the two gateways
KEYS = {o: f"sk-fair-{o}-loopback-only-0123456789" for o in ("one", "four", "light")}
TOKEN = "fair-bench-admin-token-0123456789"


class Worker:
    def __init__(self) -> None:
        self.held = self.peak = 0
        self.served: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.held += 1
        self.peak = max(self.peak, self.held)
        try:
            await asyncio.sleep(DELAY)
        finally:
            self.held -= 1
        self.served[body["messages"][0]["content"]] += 1
        message = {"role": "assistant", "content": "ok"}
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


def config(port: int, admin: int, redis: int, worker: int) -> str:
    keys = ", ".join(
        f"{{id: {o}, owner: {o}, sha256: '{hashlib.sha256(k.encode()).hexdigest()}'}}"
        for o, k in KEYS.items()
    )
    free = "max_keys: null, monthly_tokens: null, rpm: null"
    return f"""\
listen: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: {admin}, token: {TOKEN}}}
store: {{url: "redis://127.0.0.1:{redis}", timeout_ms: 1000}}
upstreams: {{gpu: {{url: "http://127.0.0.1:{worker}", max_concurrency: {CAP}}}}}
models: {{m: {{upstreams: [gpu]}}}}
plans: {{one: {{{free}, share: 1}}, four: {{{free}, share: 4}}}}
default_plan: one
keys: {{static: [{keys}]}}
log: {{level: warning, access: false}}
"""


async def chat(http: aiohttp.ClientSession, port: int, owner: str) -> int:
    async with http.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEYS[owner]}"},
        json={"model": "m", "messages": [{"role": "user", "content": owner}]},
    ) as reply:
        await reply.read()
        return reply.status


async def until(check: Any, seconds: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def run(seconds: float, stack: Stack) -> dict[str, Any]:
    work = WORK / "fairness"
    work.mkdir(parents=True, exist_ok=True)
    redis = free_port()
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(redis), "--save", ""]
    wait_listening(stack.start(Proc("redis", cmd, work / "redis.log")), redis)
    worker = Worker()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", worker.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    worker_port = runner.addresses[0][1]
    ports = []
    for i in range(2):
        port, admin = free_port(), free_port()
        path = work / f"gateway-{i}.yaml"
        path.write_text(config(port, admin, redis, worker_port))
        argv = [str(PYTHON), "-m", "gateway", "run", "--config", str(path)]
        gateway = stack.start(Proc(f"gateway-{i}", argv, work / f"gateway-{i}.log"))
        wait_listening(gateway, port)
        ports.append((port, admin, gateway))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        url = f"http://127.0.0.1:{ports[0][1]}/admin/owners/four"
        async with http.put(url, json={"plan": "four"}, headers=auth) as r:
            assert r.status == 200, await r.text()
        stop, alive = False, [True, True]

        async def heavy(i: int, owner: str) -> None:
            while not stop and alive[i]:
                try:
                    await chat(http, ports[i][0], owner)
                except aiohttp.ClientError:
                    if alive[i]:
                        raise

        tasks = [
            asyncio.create_task(heavy(i % 2, owner))
            for owner in ("one", "four")
            for i in range(HEAVY)
        ]
        await until(lambda: worker.held == CAP, 10)
        await asyncio.sleep(1.0)
        before, waits, started = worker.served.copy(), [], time.monotonic()
        i = 0
        while time.monotonic() - started < seconds:
            t = time.monotonic()
            assert await chat(http, ports[i % 2][0], "light") == 200
            waits.append(time.monotonic() - t)
            i += 1
            await asyncio.sleep(0.1)
        served = worker.served - before
        alive[0] = False
        os.killpg(ports[0][2].pid, signal.SIGKILL)  # no drain, no release: its leases stay
        killed = time.monotonic()
        await until(lambda: worker.held < CAP, 5)
        await until(lambda: worker.held == CAP, 30)
        back = time.monotonic() - killed
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()
    waits.sort()
    return {
        "seconds": seconds,
        "served": dict(served),
        "ratio_four_to_one": round(served["four"] / max(1, served["one"]), 3),
        "light_wait_p50_s": round(waits[len(waits) // 2], 4),
        "light_wait_p99_s": round(waits[max(0, int(len(waits) * 0.99) - 1)], 4),
        "worker_peak": worker.peak,
        "slots_back_after_kill_s": round(back, 2),
    }


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    with Stack() as stack:
        print(json.dumps(asyncio.run(run(seconds, stack))))


if __name__ == "__main__":
    main()
