"""The soak (``BENCH_SOAK=<seconds>``, never by default): about half the saturation rate on the
governed one-worker gateway for that long, its RSS and its Redis's ``used_memory`` sampled every
10 s, and the slope of each over time in MB per minute (target < 0.5 for both: Redis holds what
the limits and usage need, bounded once the first minute's windows are full, never a key per
request).

The rate is set with wrk's ``delay()`` hook (bench/post.lua, BENCH_DELAY_MS): 16 connections
each wait a fixed time after every answer, calibrated once on a short run.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time

import redis
from arms import Run, start_gateway
from clients import parse_wrk, probe, wrk, wrk_cmd, wrk_env
from common import CHAT_PATH, ArmFailed
from procs import Proc, Stack, rss_kb, taskset

CONNECTIONS = 16
SAMPLE_EVERY = 10.0


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (m - mean_m) for t, m in points)
    return cov / var * 60


def redis_used_mb(client: redis.Redis | None) -> float:
    """Redis's ``used_memory`` in MB (0 without a Redis, or when it does not answer)."""
    if client is None:
        return 0.0
    try:
        return int(client.info("memory")["used_memory"]) / 1e6
    except redis.RedisError:
        return 0.0


def paced_rate(url: str, delay_ms: int, cpus: str | None, seconds: float = 3) -> float:
    cmd = wrk_cmd(url, CONNECTIONS, seconds)
    out = subprocess.run(
        taskset(cpus, cmd),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
        env=wrk_env(delay_ms=delay_ms),
    )
    return parse_wrk(url, cmd, out.returncode, out.stdout + out.stderr, CONNECTIONS).rps


def run_soak(run: Run, seconds: float) -> tuple[list[str], str]:
    """(report lines, a one-line summary for the History)."""
    settings = run.settings
    pinned = settings.pin
    run.server_cpus, run.load_cpus = ("0", "1") if pinned else (None, None)
    with Stack() as stack:
        run.arm_stack = stack
        server = start_gateway(1, governed=True, name="soak-governed-1w")(stack, run)
        assert server.proc is not None
        url = server.url + CHAT_PATH
        probe(url, server.proc)
        wrk(url, settings.connections, settings.warmup, run.load_cpus)
        sat = wrk(url, settings.connections, 5, run.load_cpus)
        target = sat.rps / 2
        delay = max(1, round(CONNECTIONS / target * 1000))
        got = paced_rate(url, delay, run.load_cpus)
        own = max(0.0, CONNECTIONS / got * 1000 - delay)  # the time of one answer, in ms
        delay = max(1, round(CONNECTIONS / target * 1000 - own))
        print(
            f"   saturation {sat.rps:,.0f} req/s; soak target {target:,.0f} req/s: "
            f"{CONNECTIONS} connections, {delay} ms pause after each answer",
            flush=True,
        )
        cmd = wrk_cmd(url, CONNECTIONS, seconds)
        load = Proc(
            "soak-wrk",
            taskset(run.load_cpus, cmd),
            run.dir / "soak-wrk.log",
            env=wrk_env(delay_ms=delay),
        )
        started = time.monotonic()
        points: list[tuple[float, float]] = []
        redis_points: list[tuple[float, float]] = []
        store = (
            redis.Redis(host="127.0.0.1", port=server.redis_port, socket_timeout=5)
            if server.redis_port
            else None
        )
        stack.start(load)
        deadline = started + seconds + 60
        next_sample = started
        while load.alive() and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_sample:
                mb = rss_kb(server.proc.pid) * 1024 / 1e6
                used = redis_used_mb(store)
                points.append((now - started, mb))
                redis_points.append((now - started, used))
                print(
                    f"   t={now - started:5.0f} s  RSS {mb:.1f} MB  Redis {used:.1f} MB", flush=True
                )
                next_sample += SAMPLE_EVERY
            if not server.proc.alive():
                raise ArmFailed(f"the gateway died during the soak:\n{server.proc.tail()}")
            time.sleep(0.5)
        if load.alive():
            raise ArmFailed("wrk did not end in time")
        assert load.popen is not None
        result = parse_wrk(url, cmd, load.popen.returncode or 0, load.output(), CONNECTIONS)
        if store is not None:
            store.close()
    whole = slope_mb_per_min(points)
    warmed = min(60.0, seconds / 5)
    warm = [p for p in points if p[0] >= warmed]
    after_warm = slope_mb_per_min(warm)
    verdict = "PASS" if max(whole, after_warm) < 0.5 else "MISS"
    # Redis fills its windows during the first minute (the rpm log holds the last 60 s): its
    # slope is judged after that minute only.
    redis_warm = [p for p in redis_points if p[0] >= 60.0] or redis_points
    redis_slope = slope_mb_per_min(redis_warm)
    redis_whole = slope_mb_per_min(redis_points)
    redis_verdict = "PASS" if redis_slope < 0.5 else "MISS"
    r_first, r_last = (redis_points[0][1], redis_points[-1][1]) if redis_points else (0.0, 0.0)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    first, last = (points[0][1], points[-1][1]) if points else (0.0, 0.0)
    lines = [
        f"# Soak, {when}",
        "",
        f"- governed gateway, 1 worker (redis), {seconds:.0f} s at {result.rps:,.0f} req/s "
        f"(half of the {sat.rps:,.0f} req/s saturation measured first; {result.requests:,} "
        f"requests, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, no error)",
        f"- RSS {first:.1f} MB at the start, {last:.1f} MB at the end, max "
        f"{max((m for _, m in points), default=0):.1f} MB ({len(points)} samples, every "
        f"{SAMPLE_EVERY:g} s)",
        f"- slope: {whole:.3f} MB/min over the whole run, {after_warm:.3f} MB/min after the "
        f"first {warmed:.0f} s (target < 0.5): {verdict}",
        f"- Redis used_memory {r_first:.1f} MB at the first sample, {r_last:.1f} MB at the end, "
        f"max {max((m for _, m in redis_points), default=0):.1f} MB; slope {redis_whole:.3f} "
        f"MB/min over the whole run, {redis_slope:.3f} MB/min after the first 60 s (its windows "
        f"full; target < 0.5): {redis_verdict}",
        "",
        "| t (s) | RSS (MB) | Redis used_memory (MB) |",
        "|--:|--:|--:|",
        *[
            f"| {t:.0f} | {m:.1f} | {r:.1f} |"
            for (t, m), (_, r) in zip(points, redis_points, strict=True)
        ],
    ]
    summary = (
        f"soak {seconds:.0f} s governed-1w at {result.rps:,.0f} req/s: RSS "
        f"{first:.1f} → {last:.1f} MB, slope {whole:.3f} MB/min ({after_warm:.3f} after warm-up)"
        f": {verdict}; Redis {r_first:.1f} → {r_last:.1f} MB, slope {redis_slope:.3f} MB/min "
        f"after the first minute: {redis_verdict}"
    )
    return lines, summary
