"""What an arm on Redis asks of it, and what a governed arm did besides answering: MONITOR
samples (the static key, an issued key once cached) checked against the expected commands per
request, the leases left, and the governed arm's access log, recorded usage and metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import redisstats
from armresult import ArmResult
from arms import Arm, Run, Server
from clients import get, post, wrk
from common import CHAT_PATH, GOVERNED_CONCURRENCY, GOVERNED_RPM, GOVERNED_TOKENS, ArmFailed
from procs import Proc, Stack

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
