"""The scale bench (issue 23): what Redis keeps and what an admission costs as requests and keys
grow, what each unit of state costs in Redis (the sizing formula of docs/operations.md, checked
here against the runs), one owner's admissions per second on one Redis node, and the RSS of a
gateway that has served 100,000 keys.

``.venv/bin/python bench/scale.py [--quick] [--no-gateway] [--big N]``; bench/README.md ("The
scale bench") says what each part does. Every process is the bench's own, on loopback, stopped at
the end: one ``redis-server`` per part, the gateway and its mock worker. The store is driven the
way a gateway process drives it: ``Limiter.admit`` (one EVALSHA per request on the Redis lane)
and ``Limiter.settle`` (queued, written by the limiter's writer in batches of up to 256, 32
settlements per EVALSHA). Time is a ``FakeClock`` passed to ``RedisStore`` (its ``time()`` goes to
the scripts), advanced a fixed step per request, so a million requests span an hour or more of
windows in minutes; TTLs (real time) never fire during a run, so what is measured is what the
scripts themselves keep. A dated section is added to bench/RESULTS.md (before its History, plus
one History line); the rest of the file is left alone.

This module: the order of the parts and the command. ``scale_base``: what every part shares;
``scale_driver``: the store driven as a gateway process drives it; ``scale_census``: what
Redis holds; ``scale_sizing``: bytes per unit of state; ``scale_runs``: the runs and the
alternated latencies; ``scale_tenant``: one owner on one node; ``scale_gateway``: a gateway
after 100,000 keys; ``scale_report``: the verdicts and the report.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from common import RESULTS, WORK
from procs import Stack
from scale_base import PLANS, Redis, p, plural, say, verdict
from scale_gateway import gateway_rss
from scale_report import UNITS, Outcome, add_to_results, judge, report, summary_line
from scale_runs import Spec, paired, scale_run
from scale_sizing import sizing
from scale_tenant import hot_tenant

from gateway.config.load import parse_text


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=WORK.parent
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


async def bench(stack: Stack, workdir: Path, args: argparse.Namespace) -> Outcome:
    started = time.monotonic()
    config = parse_text(PLANS, "bench/scale.py", {})
    quick = bool(args.quick)
    if quick:
        specs = [
            Spec(1, 0.04, (3_000, 20_000)),
            Spec(1000, 0.04, (3_000, 20_000)),
            Spec(10_000, 0.003, (3_000, 20_000)),
        ]
        n, probes, blocks, block, tenant_s, gateway_keys = 200, 300, 6, 50, 3.0, 3_000
    else:
        specs = [
            Spec(1, 0.012, (10_000, 100_000)),
            Spec(1000, 0.012, (10_000, 1_000_000)),
            Spec(100_000, 0.0003, (10_000, 200_000)),
        ]
        n, probes, blocks, block, tenant_s, gateway_keys = 2000, 2000, 20, 100, 10.0, 100_000
    if args.big:
        specs[1] = Spec(1000, specs[1].step, (specs[1].checkpoints[0], args.big))
    say(f"== sizing: bytes per unit of state ({n:,} of each)")
    sizer = Redis(stack, workdir, "scale-sizing")
    sizes = await sizing(sizer, n)
    for name, _ in UNITS:
        say(f"   {name:18} {sizes.units[name]:8,.0f} B")
    runs = []
    for spec in specs:
        say(f"== {plural(spec.keys, 'key')}, {spec.step * 1e3:g} ms of windows per request")
        runs.append(await scale_run(stack, workdir, spec, sizes, config, probes))
    one, many = (runs[0].driver, runs[0].redis), (runs[-1].driver, runs[-1].redis)
    say(f"== admission latency, 1 key against {specs[-1].keys:,} keys (alternated blocks)")
    pair_own = await paired(one, many, blocks, block, probe_keys=False)
    pair_probe = await paired(one, many, blocks, block, probe_keys=True)
    for label, (a, b) in (("own keys", pair_own), ("new key", pair_probe)):
        say(
            f"   {label}: p99 {p(a.times, 99):.3f} ms vs {p(b.times, 99):.3f} ms; Redis "
            f"EVALSHA p99 {a.server_p99:.0f} µs vs {b.server_p99:.0f} µs"
        )
    for run in runs:
        await run.driver.close()
    say("== one owner on one node")
    tenant = await hot_tenant(stack, workdir, config, tenant_s)
    say(f"   {tenant.rate:,.0f} req/s, redis {tenant.redis_us:.0f} µs/req ({tenant.busy:.0%})")
    gateway = None
    if not args.no_gateway:
        say(f"== a gateway serving {gateway_keys:,} keys")
        gateway = await gateway_rss(stack, workdir, gateway_keys, sizes)
        say(
            f"   RSS idle {gateway.idle_mb:.0f} MB, after {gateway.after_mb:.0f} MB, "
            f"peak {gateway.peak_mb:.0f} MB; answers {gateway.statuses}"
        )
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    outcome = Outcome(when, _commit(), quick, sizes, runs, pair_own, pair_probe, tenant, gateway)
    outcome.seconds = time.monotonic() - started
    judge(outcome)
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument("--no-gateway", action="store_true", help="leave out the gateway's RSS")
    parser.add_argument("--big", type=int, default=0, help="the 1,000-key run's last checkpoint")
    parser.add_argument(
        "--no-results",
        action="store_true",
        help="leave bench/RESULTS.md alone (quick never writes it)",
    )
    args = parser.parse_args()
    workdir = WORK / "scale"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        import uvloop

        runner: Callable[[Awaitable[Outcome]], Outcome] = uvloop.run  # type: ignore[assignment]
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    with Stack() as stack:
        outcome = runner(bench(stack, workdir, args))
    lines = report(outcome)
    (workdir / "scale.md").write_text("\n".join(lines) + "\n")
    say("")
    for name, got, ok in outcome.verdicts:
        say(f"{verdict(ok)}  {name}: {got}")
    say(f"report: {workdir / 'scale.md'}")
    if not outcome.quick and not args.no_results:
        add_to_results(lines, summary_line(outcome))
        say(f"added to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
