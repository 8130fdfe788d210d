"""One hot tenant on one Redis and on a 3-node Redis Cluster (issue 23, item 4): where its
store work lands and how much of a node's CPU a request costs there.

    .venv/bin/python bench/hot_tenant.py [--seconds S] [--keys K] [--modes redis,cluster]

One owner (``--keys`` keys, each with its own rpm, concurrency and token limits, on a plan with
rpm and monthly tokens: every admission is owner-wide) is admitted and settled as fast as one
gateway process can (``Limiter.admit`` and ``Limiter.settle``, 64 requests in flight, Redis
``TIME``), for ``--seconds`` after a second of warm-up. Per node: redis-server CPU per request
(``INFO cpu``, user + sys; of which running the scripts: ``INFO commandstats``' EVALSHA
usec) and commands per request (``INFO commandstats``, the scripts' inner
commands included), whether the node holds the owner's slot. A node's ceiling for this tenant
is 1e6 / its µs per request: requests per second when that node's one core is the only limit.
The gateway package is imported from PYTHONPATH first, so the same script measures an older
tree (``PYTHONPATH=/path/to/tree``). Every server is the bench's own, on loopback, stopped at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.crc import key_slot

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # after PYTHONPATH: the tree under test comes first

from gateway.clock import SystemClock  # noqa: E402
from gateway.config.load import parse_text  # noqa: E402
from gateway.limits.limiter import Limiter  # noqa: E402
from gateway.records import KeyRecord  # noqa: E402
from gateway.store.redis import RedisStore  # noqa: E402
from tests import redis_server  # noqa: E402

OWNER = "hot-tenant"
CONCURRENCY = 64
MODEL = "bench-model"
RESERVE, PROMPT, COMPLETION, RESERVE_COST, COST = 120, 9, 16, 300, 41
PLANS = """
store: {timeout_ms: 5000}
plans:
  free: {rpm: null, monthly_tokens: null, max_keys: null}
  metered: {rpm: 100000000, monthly_tokens: 1000000000000000, max_keys: null}
"""


@dataclass
class Node:
    port: int
    owner: bool  # holds the owner's slot

    def read(self) -> Reading:
        """CPU seconds, commands run (the scripts' inner ones too; the bench's INFO and the
        client's CLUSTER calls left out), seconds spent running the scripts."""
        with redis.Redis(port=self.port) as r:
            cpu = r.info("cpu")
            stats = r.info("commandstats")
        counted = {k: v for k, v in stats.items() if isinstance(v, dict)}
        calls = sum(
            int(v["calls"])
            for k, v in counted.items()
            if k not in ("cmdstat_info", "cmdstat_cluster")
        )
        scripts = sum(int(v["usec"]) for k, v in counted.items() if k == "cmdstat_evalsha") / 1e6
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls, scripts


def owner_node(ports: list[int]) -> int:
    slot = key_slot(f"gw:{{{OWNER}}}:keys".encode())
    with redis.Redis(port=ports[0]) as r:
        for first, last, master, *_ in r.execute_command("CLUSTER", "SLOTS"):
            if int(first) <= slot <= int(last):
                return int(master[1])
    raise RuntimeError("no node holds the owner's slot")


Reading = tuple[float, int, float]
Readings = list[Reading]


async def drive(
    url: str, keys: int, seconds: float, read: Callable[[], Readings]
) -> tuple[int, float, Readings, Readings]:
    """Admit and settle the owner's requests for ``seconds``, after a second of warm-up (the
    scripts loaded): (requests, wall seconds, the nodes' readings before and after)."""
    config = parse_text(PLANS, "bench/hot_tenant.py", {})
    store = RedisStore(url, 5000)
    records = [
        KeyRecord(
            id=f"hot{i}",
            owner=OWNER,
            key_hash=f"{i:064x}",
            rpm_limit=1_000_000,
            max_concurrency=1000,
            daily_limit=10**12,
            monthly_limit=10**12,
        )
        for i in range(keys)
    ]
    for record in records:
        await store.insert_key(record, None)
    await store.set_plan(OWNER, "metered")
    limiter = Limiter(store, config, SystemClock())
    await limiter.start()
    prefix, sent, stop = "req_" + os.urandom(6).hex(), 0, 0.0

    async def worker() -> None:
        nonlocal sent
        while time.monotonic() < stop:
            sent += 1
            record = records[sent % keys]
            ticket = await limiter.admit(
                f"{prefix}{sent:08x}", record, RESERVE, False, MODEL, RESERVE_COST
            )
            limiter.settle(ticket, MODEL, PROMPT, COMPLETION, False, False, cost=COST)

    try:
        stop = time.monotonic() + 1.0  # warm-up
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        await settled(limiter)
        before = read()
        first, started = sent, time.monotonic()
        stop = started + seconds
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        await settled(limiter)
        wall = time.monotonic() - started
        return sent - first, wall, before, read()
    finally:
        await limiter.stop()
        await store.close()


async def settled(limiter: Limiter) -> None:
    deadline = time.monotonic() + 60
    while limiter.buffer.pending:
        if time.monotonic() > deadline:
            raise RuntimeError("settlements not written within 60 s")
        await asyncio.sleep(0.005)


async def measure(mode: str, keys: int, seconds: float) -> list[str]:
    if mode == "cluster":
        cluster = redis_server.start_cluster()
        servers, url = cluster.nodes, cluster.url
        home = owner_node([s.port for s in servers])
    else:
        server = redis_server.start_redis()
        servers, url, home = [server], server.url, server.port
    nodes = [Node(s.port, s.port == home) for s in servers]
    try:
        requests, wall, before, after = await drive(
            url, keys, seconds, lambda: [n.read() for n in nodes]
        )
    finally:
        for s in servers:
            s.stop()
    lines = [
        f"{mode}: {requests:,} requests in {wall:.1f} s ({requests / wall:,.0f}/s), {keys} keys"
    ]
    for n, (c0, k0, s0), (c1, k1, s1) in zip(nodes, before, after, strict=True):
        us = (c1 - c0) / requests * 1e6
        ceiling = f", ceiling {1e6 / us:,.0f} req/s" if n.owner and us else ""
        lines.append(
            f"  node :{n.port}{' (owner)' if n.owner else ''}: {us:.1f} µs/req "
            f"(scripts {(s1 - s0) / requests * 1e6:.1f}), {(k1 - k0) / requests:.2f} "
            f"commands/req, busy {(c1 - c0) / wall:.0%}{ceiling}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--modes", default="redis,cluster")
    args = parser.parse_args()
    for mode in args.modes.split(","):
        for line in asyncio.run(measure(mode, args.keys, args.seconds)):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
