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


Everything listens on 127.0.0.1 on free ports; processes are stopped on exit. This module: the
command and its table; ``routing_workload``: the workload and its knobs; ``routing_fleet``: the
fleet and the runs; ``routing_bounds``: what the records say about the bound; ``routing_cost``:
the cost of choosing.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from typing import Any

import routing_cost
from routing_bounds import over_bound
from routing_fleet import RUN, fleet_bench
from routing_workload import POLICIES


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
