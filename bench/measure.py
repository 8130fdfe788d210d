"""Measuring one arm: a probe, wrk saturation, concurrency 1 and half saturation, the streaming
client at concurrency 1, the servers' CPU and RSS, then for arms on Redis the store's commands
per request and, for governed arms, an issued-key sample, the access log, usage and metrics
(``armchecks``), and with BENCH_PROFILE=1 a py-spy profile (``spyprofile``); for the paced
arms, the streams of ``streams``."""

from __future__ import annotations

import sys
import time

import redisstats
from armchecks import answered, governed_checks, redis_samples
from armresult import ArmResult
from arms import Arm, Run, Server
from clients import WrkResult, probe, stream_client, wrk
from common import CHAT_PATH, ArmFailed
from procs import (
    CLK_TCK,
    QUIET_PCT,
    OtherLoad,
    Stack,
    group_ticks,
    machine_busy_ticks,
    wait_quiet,
    worker_rss_mb,
)
from spyprofile import profile
from streams import PACED_BODY, PACED_PATH, run_paced

# --- one arm -------------------------------------------------------------------------------------


def measure(run: Run, arm: Arm) -> ArmResult:
    settings = run.settings
    result = ArmResult(arm)
    server_cpus, load_cpus = arm.cpus(settings)
    run.server_cpus, run.load_cpus = server_cpus, load_cpus
    result.pinning = f"server {server_cpus or 'any'}, load {load_cpus or 'any'}"
    print(f"\n== {arm.key}: {arm.title} [{result.pinning}]", flush=True)
    if run.quiet_budget > 0:
        run.quiet_budget -= wait_quiet(run.our_groups, min(20.0, run.quiet_budget))
    with Stack() as stack:
        run.arm_stack = stack
        other = OtherLoad(run.our_groups)
        server: Server | None = None
        try:
            server = arm.start(stack, run)
            other.start()
            if arm.kind == "paced":
                measure_paced(run, server, result)
            else:
                measure_wrk(run, arm, server, result, load_cpus)
            proc = server.proc
            if proc is not None and (not proc.alive() or proc.crashed()):
                raise ArmFailed(f"{proc.name} died during the run:\n{proc.tail()}")
        except ArmFailed as err:
            result.error = str(err)
            print(f"   FAILED: {err}", file=sys.stderr, flush=True)
        if other.started:
            result.other_pct, result.other_top = other.stop()
            if result.other_pct >= QUIET_PCT:
                print(
                    f"   other processes used {result.other_pct:.0f}% of a CPU meanwhile "
                    f"({result.other_top}): these figures are disturbed",
                    flush=True,
                )
        if settings.profile and arm.profile and server and server.proc and not result.error:
            try:
                result.profile = profile(run, arm, server.proc, server.url + CHAT_PATH, load_cpus)
            except ArmFailed as err:
                print(f"   profile failed: {err}", file=sys.stderr, flush=True)
    return result


def measure_wrk(run: Run, arm: Arm, server: Server, result: ArmResult, load: str | None) -> None:
    settings = run.settings
    proc = server.proc
    url = server.url + CHAT_PATH
    result.body_bytes = probe(url, proc)
    if proc is not None:
        result.rss_idle_mb = worker_rss_mb(proc, server.workers)
    wrk(url, settings.connections, settings.warmup, load)
    if server.redis_port:
        redisstats.wait_settled(server.redis_port)  # the warm-up's last requests, settled
    ticks = group_ticks(proc)
    before = redisstats.snapshot(server.redis_port) if server.redis_port else None
    count = answered(server) if server.redis_port else None
    started, machine = time.monotonic(), machine_busy_ticks()
    sat = wrk(url, settings.connections, settings.duration, load)
    cpu = (group_ticks(proc) - ticks) / CLK_TCK
    machine = (machine_busy_ticks() - machine) / CLK_TCK
    result.machine_busy = machine / (time.monotonic() - started)
    result.machine_us_per_request = machine / sat.requests * 1e6
    if before is not None and server.redis_port:
        # The settlements of the last answers are written after them, in batches.
        lag, polls = redisstats.wait_settled(server.redis_port)
        after = redisstats.snapshot(server.redis_port)
        end = answered(server)
        n = end - count if end is not None and count is not None else sat.requests
        result.redis = redisstats.cost(before, after, n, polls)
        result.redis.settle_lag = lag
    result.saturation = sat
    result.cpu_busy = cpu / (time.monotonic() - started)
    result.cpu_us_per_request = cpu / sat.requests * 1e6
    print(
        f"   saturation c{sat.connections}: {sat.rps:,.0f} req/s; server CPU "
        f"{result.cpu_busy:.0%} of a core, {result.cpu_us_per_request:.0f} µs/request; "
        f"the machine {result.machine_busy:.2f} CPUs busy, {result.machine_us_per_request:.0f} "
        "µs/request",
        flush=True,
    )
    if result.redis:
        r = result.redis
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(r.calls.items())[:6])
        print(
            f"   redis per request: {r.commands:.2f} commands, {r.reads:.2f} reads; {top}; "
            f"last settlement {r.settle_lag:.2f} s after the load",
            flush=True,
        )
    lat = wrk(url, 1, settings.latency_duration, load)
    result.latency = lat
    print(f"   c1: p50 {lat.p50_ms:.3f} ms  p99 {lat.p99_ms:.3f} ms", flush=True)
    delay = half_delay(arm, sat, lat.p50_ms)
    if arm.key != "direct":  # calibrate: the answer time under this load, not at c1
        trial = wrk(url, HALF_CONNECTIONS, 2, load, delay_ms=delay)
        delay = half_delay(arm, sat, max(0.0, HALF_CONNECTIONS / trial.rps * 1000 - delay))
    half = wrk(url, HALF_CONNECTIONS, settings.latency_duration, load, delay_ms=delay)
    result.half = half
    print(
        f"   paced c{HALF_CONNECTIONS}: {half.rps:,.0f} req/s ({half.rps / sat.rps:.0%} of "
        f"saturation): p50 {half.p50_ms:.3f} ms  p99 {half.p99_ms:.3f} ms",
        flush=True,
    )
    if arm.stream is not None:
        s_url, s_body = arm.stream(server.url)
        result.stream = stream_client(s_url, s_body, settings.stream_duration)
        s = result.stream
        print(
            f"   stream c1: ttft p50 {s.ttft_p50_ms:.3f} ms, p99 {s.ttft_p99_ms:.3f} ms, total "
            f"p50 {s.total_p50_ms:.3f} ms ({s.streams} streams)",
            flush=True,
        )
    if server.redis_port:
        redis_samples(run, arm, server, result, load)
    if arm.governed:
        governed_checks(server, result)
    if proc is not None:
        result.rss_loaded_mb = worker_rss_mb(proc, server.workers)


HALF_CONNECTIONS = 16
DIRECT_HALF_DELAY_MS = 5  # the floor's paced run: ~3,000 req/s, the gateways' half rates


def half_delay(arm: Arm, sat: WrkResult, answer_ms: float) -> int:
    """wrk's pause after each answer (bench/post.lua's ``delay()``, whole ms) that paces
    ``HALF_CONNECTIONS`` connections to about half the arm's saturation rate: each connection
    makes one request per pause + answer time (``answer_ms``)."""
    if arm.key == "direct":
        return DIRECT_HALF_DELAY_MS
    cycle_ms = HALF_CONNECTIONS / (sat.rps / 2) * 1000
    return max(1, round(cycle_ms - answer_ms))


def measure_paced(run: Run, server: Server, result: ArmResult) -> None:
    s = run.settings
    print(
        f"   {s.paced_rounds} x {s.paced_streams} concurrent streams of {s.paced_chunks} chunks "
        f"{s.paced_interval_ms:g} ms apart",
        flush=True,
    )
    paced = run_paced(run, server, PACED_PATH, PACED_BODY)
    result.paced = paced
    for f in (paced.cold, paced.warm):
        if f is None:
            continue
        print(
            f"   {f.label}: {f.complete}/{f.attempted} complete; gap - "
            f"{s.paced_interval_ms:g} ms p50 {f.gap_p50_ms:.3f} p99 {f.gap_p99_ms:.3f} max "
            f"{f.gap_max_ms:.1f} ms; gap - send gap p50 {f.path_gap_p50_ms:.3f} p99 "
            f"{f.path_gap_p99_ms:.3f} ms; upstream lateness p99 {f.send_gap_p99_ms:.3f} ms; "
            f"transit p50 {f.transit_p50_ms:.3f} p99 {f.transit_p99_ms:.3f} ms; first chunk p50 "
            f"{f.first_p50_ms:.1f} p99 {f.first_p99_ms:.1f} ms; server CPU {f.server_cpu:.0%} "
            f"({f.cpu_us_per_chunk:.0f} µs per chunk); "
            f"most open {f.peak_open}",
            flush=True,
        )
    if paced.idle_rss_mb:
        print(
            f"   RSS idle {paced.idle_rss_mb:.1f} MB, {paced.open_rss_mb:.1f} MB with "
            f"{paced.peak_open} streams open ({paced.per_stream_kb:.1f} KB per stream), after "
            f"{paced.after_rss_mb:.1f} MB",
            flush=True,
        )
    if paced.complete != paced.attempted:
        raise ArmFailed(
            f"{paced.attempted - paced.complete} of {paced.attempted} paced streams failed: "
            f"{paced.failures}"
        )
