"""Measuring an arm: a probe, wrk saturation and concurrency 1, the streaming client at
concurrency 1, the servers' CPU and RSS and, for arms on Redis, the store's commands per
request (and, for governed arms, an issued-key sample, the access log, usage and metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redisstats
from arms import Arm, Run, Server
from common import (
    CHAT_PATH,
    GOVERNED_CONCURRENCY,
    GOVERNED_RPM,
    GOVERNED_TOKENS,
    HEADERS,
    POST_LUA,
    REQUEST,
    ROOT,
    STREAM_CHUNKS,
    WORK,
    ArmFailed,
    percentile,
)
from procs import (
    CLK_TCK,
    QUIET_PCT,
    OtherLoad,
    Proc,
    Stack,
    group_ticks,
    machine_busy_ticks,
    wait_quiet,
    worker_rss_mb,
)
from streams import PACED_BODY, PACED_PATH, PacedResult, run_paced

# --- HTTP ----------------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data, headers or HEADERS, method="POST")
    try:
        with _OPENER.open(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()
    except OSError as err:
        raise ArmFailed(f"POST {url} failed: {err}") from err


def get(url: str) -> bytes:
    try:
        with _OPENER.open(url, timeout=10) as resp:
            return bytes(resp.read())
    except OSError as err:  # HTTPError included
        raise ArmFailed(f"GET {url} failed: {err}") from err


def probe(url: str, proc: Proc | None = None) -> int:
    """One request that must answer 200 with the canned JSON; returns the body size."""
    status, ctype, body = post(url, REQUEST)
    where = f"\n{proc.name} output:\n{proc.tail()}" if proc else ""
    if status != 200:
        raise ArmFailed(f"POST {url} answered {status}: {body[:500]!r}{where}")
    try:
        answer = json.loads(body)
    except ValueError:
        raise ArmFailed(f"POST {url} answered non-JSON ({ctype}): {body[:300]!r}") from None
    if not isinstance(answer, dict) or "usage" not in answer or "choices" not in answer:
        raise ArmFailed(f"POST {url} answered an unexpected body: {body[:300]!r}")
    return len(body)


# --- wrk -----------------------------------------------------------------------------------------

_BENCH_LINE = re.compile(r"^BENCH (.*)$", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: (.*)")


@dataclass
class WrkResult:
    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    socket_errors: str = ""


def wrk_cmd(url: str, connections: int, seconds: float) -> list[str]:
    return [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(POST_LUA),
        url,
    ]


def wrk_env(key: str | None = None, delay_ms: int | None = None) -> dict[str, str] | None:
    """wrk's environment: bench/post.lua reads BENCH_KEY and BENCH_DELAY_MS."""
    if key is None and delay_ms is None:
        return None
    env = dict(os.environ)
    if key is not None:
        env["BENCH_KEY"] = key
    if delay_ms is not None:
        env["BENCH_DELAY_MS"] = str(delay_ms)
    return env


def parse_wrk(url: str, cmd: list[str], returncode: int, out: str, connections: int) -> WrkResult:
    match = _BENCH_LINE.search(out)
    if returncode != 0 or match is None:
        raise ArmFailed(f"wrk failed ({returncode}): {' '.join(cmd)}\n{out}")
    non2xx = _NON2XX.search(out)
    fields = {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    if non2xx or fields["status"]:
        count = non2xx.group(1) if non2xx else int(fields["status"])
        raise ArmFailed(f"{count} non-2xx/3xx responses from {url}:\n{out}")
    if fields["timeout"]:
        raise ArmFailed(f"{int(fields['timeout'])} requests timed out (5 s) on {url}:\n{out}")
    if fields["requests"] == 0:
        raise ArmFailed(f"no request completed on {url}:\n{out}")
    errors = _SOCKET_ERRORS.search(out)
    secs = fields["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        requests=int(fields["requests"]),
        seconds=secs,
        rps=fields["requests"] / secs,
        p50_ms=fields["p50"] / 1000,
        p90_ms=fields["p90"] / 1000,
        p99_ms=fields["p99"] / 1000,
        p999_ms=fields["p999"] / 1000,
        mean_ms=fields["mean"] / 1000,
        max_ms=fields["max"] / 1000,
        socket_errors=errors.group(1).strip() if errors else "",
    )


def wrk(
    url: str,
    connections: int,
    seconds: float,
    cpus: str | None,
    key: str | None = None,
    delay_ms: int | None = None,
) -> WrkResult:
    from procs import taskset

    cmd = wrk_cmd(url, connections, seconds)
    try:
        run = subprocess.run(
            taskset(cpus, cmd),
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
            env=wrk_env(key, delay_ms),
        )
    except subprocess.TimeoutExpired as err:
        raise ArmFailed(f"wrk ran past its deadline: {' '.join(cmd)}") from err
    return parse_wrk(url, cmd, run.returncode, run.stdout + run.stderr, connections)


# --- the streaming client at concurrency 1 -------------------------------------------------------


@dataclass
class StreamResult:
    streams: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float


async def _stream_client(url: str, body: dict[str, Any], seconds: float) -> StreamResult:
    import aiohttp

    ttfts: list[float] = []
    totals: list[float] = []
    payload = json.dumps(body).encode()
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        end = time.perf_counter() + seconds
        warm = 20  # the first streams open the connections and warm the caches
        while time.perf_counter() < end or warm > 0:
            start = time.perf_counter()
            first: float | None = None
            data = bytearray()
            async with session.post(url, data=payload, headers=HEADERS) as resp:
                if resp.status != 200:
                    text = await resp.text()
                    raise ArmFailed(f"stream POST {url} answered {resp.status}: {text[:300]}")
                async for chunk in resp.content.iter_any():
                    if first is None and b"data:" in chunk:
                        first = time.perf_counter()
                    data.extend(chunk)
            done = time.perf_counter()
            if not data.rstrip().endswith(b"data: [DONE]") or data.count(b"\n\n") < STREAM_CHUNKS:
                raise ArmFailed(f"stream from {url} is incomplete: {bytes(data[-300:])!r}")
            if warm > 0:
                warm -= 1
                continue
            ttfts.append(((first or done) - start) * 1000)
            totals.append((done - start) * 1000)
    return StreamResult(
        streams=len(totals),
        ttft_p50_ms=statistics.median(ttfts),
        ttft_p99_ms=percentile(ttfts, 99),
        total_p50_ms=statistics.median(totals),
        total_p99_ms=percentile(totals, 99),
    )


def stream_client(url: str, body: dict[str, Any], seconds: float) -> StreamResult:
    import aiohttp
    import uvloop

    async def bounded() -> StreamResult:
        async with asyncio.timeout(seconds + 30):
            return await _stream_client(url, body, seconds)

    try:
        return uvloop.run(bounded())
    except (OSError, TimeoutError, aiohttp.ClientError) as err:
        raise ArmFailed(f"the stream client failed on {url}: {err!r}") from err


# --- results -------------------------------------------------------------------------------------


@dataclass
class ArmResult:
    arm: Arm
    pinning: str = ""
    saturation: WrkResult | None = None
    latency: WrkResult | None = None
    half: WrkResult | None = None  # paced to about half of the saturation rate
    stream: StreamResult | None = None
    paced: PacedResult | None = None
    body_bytes: int = 0
    other_pct: float = 0.0
    cpu_busy: float = 0.0  # the server's CPU seconds per second during saturation
    cpu_us_per_request: float = 0.0  # the server's CPU time per request during saturation
    # The whole machine's busy CPU (every process and the kernel) during saturation, per request
    # and in CPUs: what bounds an arm whose processes share the machine's CPUs with the load.
    machine_us_per_request: float = 0.0
    machine_busy: float = 0.0
    rss_idle_mb: float = 0.0  # per worker, after the probe, before any load
    rss_loaded_mb: float = 0.0  # per worker, after every measurement
    other_top: str = ""
    redis: redisstats.RedisCost | None = None
    leaked_leases: int | None = None  # leases held once the load stopped and all settled
    samples: list[redisstats.MonitorSample] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # what the governed arm verified
    problems: list[str] = field(default_factory=list)  # failed checks (the run fails)
    profile: list[str] = field(default_factory=list)
    error: str = ""


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


# --- Redis: who asks what ------------------------------------------------------------------------


_STATUS = re.compile(r'status="(\d+)"')


def answered_by_status(server: Server) -> dict[str, int]:
    """``gateway_requests_total`` (all workers) by status."""
    if not server.admin_url:
        return {}
    out: dict[str, int] = {}
    for line in get(server.admin_url + "/metrics").decode().splitlines():
        if line.startswith("gateway_requests_total{"):
            match = _STATUS.search(line)
            status = match.group(1) if match else "?"
            out[status] = out.get(status, 0) + round(float(line.rsplit(" ", 1)[1]))
    return out


def answered(server: Server) -> int | None:
    """The requests the gateway answered so far (``gateway_requests_total``, all workers)."""
    counts = answered_by_status(server)
    return sum(counts.values()) if server.admin_url else None


def create_issued_key(server: Server) -> str:
    """A key issued through the admin API (stored in Redis, cached by each worker after its
    first lookup), with the same limits as the static governed key."""
    assert server.admin_url
    body = {
        "owner": "bench",
        "name": "issued bench key",
        "ipWhitelist": ["127.0.0.0/8"],
        "rpmLimit": GOVERNED_RPM,
        "maxConcurrency": GOVERNED_CONCURRENCY,
        "dailyLimit": GOVERNED_TOKENS,
        "monthlyLimit": GOVERNED_TOKENS,
    }
    status, _, answer = post(
        server.admin_url + "/admin/keys", body, {"Content-Type": "application/json"}
    )
    if status != 201:
        raise ArmFailed(f"creating an issued key answered {status}: {answer[:300]!r}")
    return str(json.loads(answer)["key"])


def monitor_sample(
    run: Run, server: Server, label: str, key: str | None, load: str | None
) -> redisstats.MonitorSample:
    """``MONITOR`` while wrk loads the arm for ``BENCH_REDIS_SAMPLE`` seconds."""
    assert server.redis_port
    url = server.url + CHAT_PATH
    out = run.dir / f"{server.proc.name if server.proc else 'arm'}-monitor-{len(label)}.txt"
    cmd = ["redis-cli", "-p", str(server.redis_port), "monitor"]
    redisstats.wait_settled(server.redis_port)  # what came before, settled
    count = answered(server)
    with Stack() as stack, out.open("wb") as sink:
        mon = Proc("redis-monitor", cmd, out)
        stack.procs.append(mon)
        mon.popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        time.sleep(0.3)
        sample = wrk(url, run.settings.connections, run.settings.redis_sample, load, key)
        redisstats.wait_settled(server.redis_port)  # the settlements of the last answers
    end = answered(server)
    # Admitted requests: the gateway's count (wrk does not count those in flight at its end).
    n = end - count if end is not None and count is not None else sample.requests
    return redisstats.parse_monitor(out, label, n)


def redis_samples(run: Run, arm: Arm, server: Server, result: ArmResult, load: str | None) -> None:
    result.samples.append(monitor_sample(run, server, "static key", None, load))
    if arm.governed:
        key = create_issued_key(server)
        wrk(server.url + CHAT_PATH, run.settings.connections, 1, load, key)  # fills the caches
        result.samples.append(monitor_sample(run, server, "issued key, cached", key, load))
    redisstats.wait_settled(server.redis_port)
    result.leaked_leases = redisstats.leases(server.redis_port)
    print(
        f"   concurrency leases still held after the load: {result.leaked_leases}",
        flush=True,
    )
    for s in result.samples:
        if s.error:
            result.problems.append(f"{s.label}: {s.error}")
            continue
        admit, admitted = s.per_request(s.admit), s.per_request(s.admissions)
        print(
            f"   MONITOR {s.label}: {s.requests} requests; per request admit EVALSHA "
            f"{admit:.3f} ({admitted:.3f} admissions), "
            f"settle EVALSHA {s.per_request(s.settle):.3f} "
            f"({s.per_request(s.settlements):.3f} settlements) in "
            f"{s.settle_runs} runs, key-record GET {s.per_request(s.key_gets):.4f}, other GET "
            f"{s.per_request(s.other_gets):.4f}",
            flush=True,
        )
        if admit > 1.02:
            result.problems.append(
                f"{s.label}: {admit:.3f} admission EVALSHAs per request (expected ≤ 1)"
            )
        if abs(admitted - 1) > 0.05:  # a call may straddle the sample's edges
            result.problems.append(f"{s.label}: {admitted:.3f} admissions per request (expected 1)")
        if s.per_request(s.settle) > 1.02:
            result.problems.append(
                f"{s.label}: {s.per_request(s.settle):.3f} settlement EVALSHAs per request (≤ 1)"
            )
        if abs(s.per_request(s.settlements) - 1) > 0.05:  # a batch may straddle the edges
            result.problems.append(
                f"{s.label}: {s.per_request(s.settlements):.3f} settlements per request "
                "(expected 1)"
            )
        if s.label.startswith("issued") and s.key_gets:
            result.problems.append(
                f"{s.label}: {s.key_gets} GETs of a key record for a cached key (expected 0)"
            )
    for p in result.problems:
        print(f"   REDIS CHECK FAILED: {p}", file=sys.stderr, flush=True)


def governed_checks(server: Server, result: ArmResult) -> None:
    """The governed arm really logs, records usage and counts metrics."""
    assert server.proc and server.admin_url
    sat = result.saturation.requests if result.saturation else 0
    time.sleep(1.2)  # the access log is flushed every second
    lines = server.proc.count(b'"request_id"')
    result.checks.append(f"access log: {lines:,} lines (saturation alone: {sat:,} requests)")
    if lines < sat:
        result.problems.append(f"the access log has {lines} lines for ≥ {sat} requests")
    try:
        usage = json.loads(get(server.admin_url + "/admin/keys/bench/usage?owner=bench&days=1"))
        recorded = int(usage["totals"]["requests"])
        result.checks.append(f"usage recorded for the static key today: {recorded:,} requests")
        if recorded < sat:
            result.problems.append(f"usage records {recorded} requests for ≥ {sat}")
    except (ArmFailed, ValueError, KeyError, TypeError) as err:
        result.checks.append(f"usage: could not be read ({err})")
    try:
        counts = answered_by_status(server)
        shown = ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items()))
        result.checks.append(f"metrics: gateway_requests_total by status {shown}")
    except (ArmFailed, ValueError, IndexError) as err:
        result.checks.append(f"metrics: could not be read ({err})")
    for c in result.checks:
        print(f"   {c}", flush=True)


# --- py-spy --------------------------------------------------------------------------------------


def py_spy() -> str | None:
    for candidate in (shutil.which("py-spy"), str(ROOT / ".venv" / "bin" / "py-spy")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def profile(run: Run, arm: Arm, proc: Proc, url: str, load_cpus: str | None) -> list[str]:
    """A py-spy profile of a one-worker gateway under saturation (apart from the measured run)."""
    spy = py_spy()
    if spy is None:
        print("   (BENCH_PROFILE: py-spy is not installed; pip install py-spy)", flush=True)
        return []
    seconds = max(3, round(run.settings.duration))
    raw = run.dir / f"{arm.key}.pyspy.txt"
    cmd = [spy, "record", "-p", str(proc.pid), "-d", str(seconds), "-r", "250", "--nonblocking"]
    with Stack() as stack:
        spy_proc = stack.start(
            Proc("py-spy", [*cmd, "-f", "raw", "-o", str(raw)], run.dir / f"{arm.key}-py-spy.log")
        )
        wrk(url, run.settings.connections, seconds + 1, load_cpus)
        with contextlib.suppress(subprocess.TimeoutExpired):
            assert spy_proc.popen is not None
            spy_proc.popen.wait(15)
    print(f"   profile (collapsed stacks): {raw.relative_to(WORK.parent.parent)}", flush=True)
    summary = summarize_profile(raw)
    for line in summary:
        print("   " + line, flush=True)
    return summary


_LINE = re.compile(r":\d+\)$")
_OUTER = re.compile(r"gateway/(cli|workers)\.py|^<module>")
# Where time goes: each sample goes to the area of its innermost frame that names a specific one
# (access log, metrics, store, limits, auth, upstream client), else of its innermost frame that
# names a generic one (the proxy handler, the middleware, aiohttp's server side), else "other".
SPECIFIC = (
    ("access log", ("gateway/logs.py", "Observer._line")),
    ("metrics", ("prometheus_client/", "Observer.done")),
    ("store: redis client", ("redis/", "gateway/store/redis")),
    ("limits", ("gateway/limits/", "gateway/store/memory.py")),
    ("auth", ("gateway/auth/",)),
    (
        "upstream client (proxy/wire.py; aiohttp's for pass-through)",
        ("aiohttp/client", "aiohttp/connector", "proxy/upstream.py", "proxy/wire.py"),
    ),
)
GENERIC = (
    ("aiohttp server (request parsing, response writing)", ("aiohttp/",)),
    ("gateway handler and middleware", ("gateway/",)),
)


def area_of(frames: list[str]) -> str:
    for table in (SPECIFIC, GENERIC):
        for frame in reversed(frames):
            for name, marks in table:
                if any(m in frame for m in marks):
                    return name
    return "event loop and other"


def summarize_profile(raw: Path) -> list[str]:
    """Own time per function, inclusive time per gateway function and time by area."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    areas: dict[str, int] = {}
    total = 0
    try:
        lines = raw.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1].strip() or "(unnamed frame)"
        own[leaf] = own.get(leaf, 0) + count
        for function in {_LINE.sub(")", f) for f in frames}:
            if "gateway/" in function and not _OUTER.search(function):
                inclusive[function] = inclusive.get(function, 0) + count
        area = area_of(frames)
        areas[area] = areas.get(area, 0) + count
    if not total:
        return []
    out = ["own time:"]
    out += [f"  {n / total:6.1%} {f}" for f, n in sorted(own.items(), key=lambda i: -i[1])[:12]]
    out.append("inclusive, gateway code:")
    top = sorted(inclusive.items(), key=lambda i: -i[1])[:12]
    out += [f"  {n / total:6.1%} {f}" for f, n in top]
    out.append("by area:")
    out += [f"  {n / total:6.1%} {a}" for a, n in sorted(areas.items(), key=lambda i: -i[1])]
    return out
