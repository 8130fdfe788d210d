"""What choosing an upstream by affinity costs per request, in µs: the key and prefixes read from
the chat arm's body, then the pick (bounded load, fresh worker signals, the memory of prompts),
today's code against a commit's (``git show``), alternated in this process so that both see
the same machine.

    flock /tmp/bench.lock .venv/bin/python bench/routing_choice.py [COMMIT]   # ~1 minute
    flock /tmp/bench.lock .venv/bin/python bench/routing_choice.py --instructions [COMMIT]
    flock /tmp/bench.lock .venv/bin/python bench/routing_choice.py --store   # the store's part

COMMIT: what to compare with (default ``36b8517``, before the cut of issue 16's second pass).
"key and placement": a request's part on a shared store, where the store places affinity's
requests (``routing.placing``: the candidates' order, then the choice remembered; the store's
call apart); for a commit before that, its key and pick.
The pick is the call ``routing.chain`` makes (``Balancer.affinity`` now, ``pick`` before it
existed). Each figure is the best of ``ROUNDS`` rounds of ``NUMBER`` calls, rounds alternating
between the two codes; "spread" is the median round over the best. Pools: the chat arm's 2
upstreams (``bench/routing_cost.py``), and 4 loaded ones with fresh signals
(``bench/routing.py``'s).

``--instructions``: instructions per call instead of time (``valgrind --tool=callgrind``: this
script run with ``COUNTED`` calls of a case and with none, the difference divided), which a
loaded machine does not move; about 4 minutes for ``INSTRUCTION_CASES``.
"""

from __future__ import annotations

import pathlib
import random
import re
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from routing_cost import SMALL, old_module

from gateway.clock import SystemClock
from gateway.config.schema import ModelRouting, Upstream
from gateway.routing import affinity as affinity_now
from gateway.routing import balancer as balancer_now

BASE = "36b8517"
ROUNDS, NUMBER = 15, 40_000
AFFINITY = ModelRouting(policy="affinity")


def modules(commit: str) -> tuple[Any, Any]:
    """The affinity function and Balancer class of ``commit`` (its ring and memory too)."""
    ring = old_module(commit, "gateway/routing/ring.py", f"ring_{commit}")
    history = old_module(commit, "gateway/routing/history.py", f"history_{commit}")
    key = old_module(commit, "gateway/routing/affinity.py", f"affinity_{commit}")
    balancer = old_module(commit, "gateway/routing/balancer.py", f"balancer_{commit}")
    balancer.Ring, balancer.History = ring.Ring, history.History
    path = f"{commit}:gateway/routing/state.py"
    known = subprocess.run(["git", "cat-file", "-e", path], capture_output=True)
    if known.returncode == 0:  # its per-upstream state too, where it had one
        state = old_module(commit, "gateway/routing/state.py", f"state_{commit}")
        balancer.UpstreamState, balancer.full = state.UpstreamState, state.full
    return key.affinity, balancer.Balancer


def fleet(balancer_class: Any, size: int) -> tuple[Any, tuple[Upstream, ...]]:
    pool = tuple(Upstream(name=f"gpu{i}", url=f"http://10.0.0.{i}:8000") for i in range(size))
    balancer = balancer_class(SystemClock(), random.Random(1))
    for i, upstream in enumerate(pool):
        for _ in range(i % 2 + 1):
            balancer.acquire(upstream)
        until = time.monotonic() + 3600
        balancer.observe(upstream.name, waiting=0, running=i, cache=0.1 * i, until=until)
    return balancer, pool


def calls(affinity: Callable[..., Any], balancer_class: Any) -> dict[str, Callable[[], Any]]:
    out: dict[str, Callable[[], Any]] = {}
    out["key and prefixes (chat body)"] = lambda: affinity(SMALL, 256)
    for size in (2, 4):
        balancer, pool = fleet(balancer_class, size)
        key, prefixes = affinity(SMALL, 256)

        if hasattr(balancer, "affinity"):  # what ``routing.chain`` calls, since d3b16a2

            def pick(b: Any = balancer, p: Any = pool, k: int = key, f: Any = prefixes) -> Any:
                return b.affinity(p, (), None, 1.25, k, f)

            def both(b: Any = balancer, p: Any = pool) -> Any:
                k, f = affinity(SMALL, 256)
                return b.affinity(p, (), None, 1.25, k, f)

        else:

            def pick(b: Any = balancer, p: Any = pool, k: int = key, f: Any = prefixes) -> Any:
                return b.pick(p, (), None, AFFINITY, k, "m", f)

            def both(b: Any = balancer, p: Any = pool) -> Any:
                k, f = affinity(SMALL, 256)
                return b.pick(p, (), None, AFFINITY, k, "m", f)

        out[f"pick, {size} upstreams"] = pick
        out[f"key and pick, {size} upstreams"] = both
        out[f"least_loaded pick, {size} upstreams"] = lambda b=balancer, p=pool: b.pick(p, (), None)
        # On a shared store (since the store places affinity's requests): the key, the order
        # of the candidates, and the choice remembered; the store call not counted. A commit
        # before it: its key and pick (what a request did there).
        out[f"key and placement, {size} upstreams"] = placing_call(balancer, pool) or both
    return out


def placing_call(balancer: Any, pool: tuple[Upstream, ...]) -> Callable[[], Any] | None:
    """``routing.placing``'s part of a request on a shared store, if this is today's balancer."""
    if not isinstance(balancer, balancer_now.Balancer):
        return None
    from gateway.routing.placing import placed, placement

    def place(b: Any = balancer, p: Any = pool) -> Any:
        k, f = affinity_now.affinity(SMALL, 256)
        found = placement(b, p, (), None, 1.25, k, f)
        placed(b, found, found[0][0])
        return found

    return place


def measure(commit: str) -> dict[str, dict[str, list[float]]]:
    old = calls(*modules(commit))
    new = calls(affinity_now.affinity, balancer_now.Balancer)
    rounds: dict[str, dict[str, list[float]]] = {name: {"then": [], "now": []} for name in new}
    for _ in range(ROUNDS):
        for name in new:
            for side, fn in (("then", old[name]), ("now", new[name])):
                seconds = timeit.timeit(fn, number=NUMBER)
                rounds[name][side].append(seconds / NUMBER * 1e6)
    return rounds


def table(rounds: dict[str, dict[str, list[float]]], commit: str) -> str:
    lines = [
        f"| µs per call | {commit} best (spread) | now best (spread) | now / then |",
        "|---|--:|--:|--:|",
    ]
    for name, sides in rounds.items():
        cells = []
        for side in ("then", "now"):
            values = sides[side]
            cells.append(f"{min(values):.2f} (+{statistics.median(values) - min(values):.2f})")
        ratio = min(sides["now"]) / min(sides["then"])
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {ratio:.2f} |")
    return "\n".join(lines)


COUNTED = 2000
INSTRUCTION_CASES = (
    "key and prefixes (chat body)",
    "pick, 2 upstreams",
    "key and pick, 2 upstreams",
    "least_loaded pick, 2 upstreams",
    "key and placement, 2 upstreams",
    "key and placement, 4 upstreams",
)


def run_case(side: str, case: str, count: int) -> None:
    """Call ``case`` of ``side`` (a commit, or "now") ``count`` times."""
    found = calls(*modules(side)) if side != "now" else None
    fn = (found or calls(affinity_now.affinity, balancer_now.Balancer))[case]
    for _ in range(count):
        fn()


def instructions(side: str, case: str) -> float:
    """Instructions per call of ``case``: callgrind's total with ``COUNTED`` calls less the
    total with none, divided."""
    totals = []
    for count in (0, COUNTED):
        cmd = [
            *("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
            *(sys.executable, __file__, "--count", side, case, str(count)),
        ]
        err = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
        found = re.search(r"Collected : (\d+)", err)
        assert found is not None, err[-2000:]
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / COUNTED


def instruction_table(commit: str) -> str:
    lines = [f"| instructions per call | {commit} | now | now / then |", "|---|--:|--:|--:|"]
    for case in INSTRUCTION_CASES:
        then, now = instructions(commit, case), instructions("now", case)
        lines.append(f"| {case} | {then:,.0f} | {now:,.0f} | {now / then:.2f} |")
    return "\n".join(lines)


STORE_CALLS = 4000


def store_cost() -> str:
    """The store's part of a placement on a shared store, apart from choosing: a placement of
    4 candidates and its release on a redis-server on loopback, one after the other (nothing
    to batch with): the wall time per placement (its round trip, p50 and p99) and the CPU this
    process spends per placement and release (the call made, the reply read)."""
    import asyncio
    import tempfile

    from procs import Proc, Stack, free_port, wait_listening

    from gateway.store.capacity import UNCAPPED
    from gateway.store.capacity_redis import RedisLeaseStore

    async def run(url: str, bound: Any) -> tuple[list[float], float]:
        store = RedisLeaseStore(url, 5000)
        spec = [(f"gpu{i}", UNCAPPED) for i in range(4)]
        walls: list[float] = []
        try:
            await store.acquire(spec, "warm", None, bound)
            cpu = time.process_time()
            for i in range(STORE_CALLS):
                started = time.perf_counter()
                got = await store.acquire_now(spec, f"l{i}", None, False, bound)
                walls.append(time.perf_counter() - started)
                store.release_now([(spec[got][0], f"l{i}")], True)
            cpu = time.process_time() - cpu
        finally:
            await store.close()
        return walls, cpu

    with Stack() as stack, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        log = pathlib.Path(tmp) / "redis.log"
        wait_listening(stack.start(Proc("redis", [*cmd, "--appendonly", "no"], log)), port)
        lines = []
        for what, bound in (("bounded", (1.25, [1.0] * 4)), ("plain lease", None)):
            walls, cpu = asyncio.run(run(f"redis://127.0.0.1:{port}/0", bound))
            walls.sort()
            p50, p99 = walls[len(walls) // 2], walls[int(len(walls) * 0.99)]
            lines.append(
                f"{what}, 4 candidates, {STORE_CALLS} one after the other: round trip p50 "
                f"{p50 * 1e6:.0f} µs, p99 {p99 * 1e6:.0f} µs; this process's CPU per "
                f"acquisition and release {cpu / STORE_CALLS * 1e6:.1f} µs"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--store"]:
        print(store_cost())
    elif args[:1] == ["--count"]:
        run_case(args[1], args[2], int(args[3]))
    elif args[:1] == ["--instructions"]:
        base = args[1] if len(args) > 1 else BASE
        print(instruction_table(base))
    else:
        base = args[0] if args else BASE
        print(table(measure(base), base))
