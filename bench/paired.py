"""Paired saturation runs: an arm and its baseline up at once, measured alternately.

The machine's speed drifts by tens of per cent between minutes here (other tenants of the host),
so one saturation run of each arm minutes apart gives a ratio as noisy as the drift. Here both
servers run side by side (pinned alike; the idle one costs nothing), and short saturation runs
alternate A, B, B, A, ... (``BENCH_PAIRS`` pairs of ``BENCH_PAIR_DURATION`` s, after a warm-up
of each); each pair's ratio is taken back to back, and the median of the pairs is reported with
their range. The two-worker pair (governed-2w against passthrough-2w) floats over both CPUs
as its arms do, unpinned, the idle arm costing nothing while the other runs.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field

import redisstats
from arms import Arm, Run, Server
from common import CHAT_PATH, ArmFailed
from measure import probe, wrk
from procs import CLK_TCK, Stack, group_ticks, machine_busy_ticks

# (arm, its baseline); the budgeted arm against the governed one: TPM and budgets must cost
# ≤ 5 % of its RPS (and still one admission round trip, checked by the arm's own run); the light
# 2-worker arm beside the governed one tells the store's and the machine's share of the 2-worker
# gap from what governing adds
PAIRS_OF = (
    ("gateway-1w", "passthrough-1w"),
    ("governed-1w", "passthrough-1w"),
    ("governed-budget-1w", "governed-1w"),
    ("governed-capped-1w", "governed-1w"),
    ("gateway-2w", "passthrough-2w"),
    ("governed-2w", "passthrough-2w"),
)


@dataclass
class Paired:
    arm: str
    base: str
    rps: list[float] = field(default_factory=list)  # arm RPS / baseline RPS, per pair
    cpu: list[float] = field(default_factory=list)  # baseline / arm CPU per request, per pair
    # arm / baseline busy CPU of the whole machine per request (every process and the kernel:
    # the load, the canned worker and Redis too), per pair: what bounds a 2-worker arm
    machine: list[float] = field(default_factory=list)
    error: str = ""

    @staticmethod
    def median(values: list[float]) -> float:
        return statistics.median(values) if values else 0.0


def _saturate(run: Run, server: Server, seconds: float) -> tuple[float, float, float]:
    """(RPS, the server's CPU seconds per request, the whole machine's) of one saturation
    run."""
    url = server.url + CHAT_PATH
    ticks, machine = group_ticks(server.proc), machine_busy_ticks()
    result = wrk(url, run.settings.connections, seconds, run.load_cpus)
    if server.redis_port:
        redisstats.wait_settled(server.redis_port)  # its settlements are its own cost
    cpu = (group_ticks(server.proc) - ticks) / CLK_TCK
    machine = (machine_busy_ticks() - machine) / CLK_TCK
    requests = max(1, result.requests)
    return result.rps, cpu / requests, machine / requests


def run_pairs(run: Run, arms: dict[str, Arm], pairs: int, seconds: float) -> list[Paired]:
    out: list[Paired] = []
    for key, base in PAIRS_OF:
        if key not in arms or base not in arms:
            continue
        paired = Paired(key, base)
        out.append(paired)
        print(f"\n== paired: {key} against {base}, {pairs} pairs of {seconds:g} s", flush=True)
        run.server_cpus, run.load_cpus = arms[key].cpus(run.settings)
        with Stack() as stack:
            run.arm_stack = stack
            try:
                a, b = arms[key].start(stack, run), arms[base].start(stack, run)
                for server in (a, b):
                    probe(server.url + CHAT_PATH, server.proc)
                    wrk(server.url + CHAT_PATH, run.settings.connections, 2, run.load_cpus)
                for i in range(pairs):
                    first, second = (a, b) if i % 2 == 0 else (b, a)
                    got = {id(first): _saturate(run, first, seconds)}
                    got[id(second)] = _saturate(run, second, seconds)
                    (a_rps, a_cpu, a_all), (b_rps, b_cpu, b_all) = got[id(a)], got[id(b)]
                    paired.rps.append(a_rps / b_rps)
                    paired.cpu.append(b_cpu / a_cpu)
                    paired.machine.append(a_all / b_all)
                    print(
                        f"   pair {i + 1}: {a_rps:,.0f} vs {b_rps:,.0f} req/s "
                        f"({paired.rps[-1]:.2f}); {a_cpu * 1e6:.0f} vs {b_cpu * 1e6:.0f} "
                        f"µs/request ({paired.cpu[-1]:.2f}); the machine {a_all * 1e6:.0f} vs "
                        f"{b_all * 1e6:.0f} µs/request ({paired.machine[-1]:.2f})",
                        flush=True,
                    )
            except ArmFailed as err:
                paired.error = str(err)
                print(f"   FAILED: {err}", file=sys.stderr, flush=True)
    return out
