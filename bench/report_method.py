"""What a run measured and on what: the machine's and the versions' facts, and the Method
section of RESULTS.md."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

from armresult import ArmResult
from common import (
    GATEWAY,
    GOVERNED_CONCURRENCY,
    GOVERNED_RPM,
    GOVERNED_TOKENS,
    LOAD_CPU,
    PYTHON,
    REQUEST,
    ROOT,
    SERVER_CPU,
    STREAM_CHUNKS,
    Settings,
    canned_json,
    canned_sse,
)

# --- facts ---------------------------------------------------------------------------------------


def command_output(cmd: list[str]) -> str:
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (run.stdout + run.stderr).strip()


def facts() -> dict[str, str]:
    cpu_model = "?"
    for line in command_output(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            cpu_model = line.split(":", 1)[1].strip()
    versions = command_output(
        [
            str(PYTHON),
            "-c",
            "import aiohttp, uvloop, orjson, sys; "
            "print(sys.version.split()[0], aiohttp.__version__, uvloop.__version__, "
            "orjson.__version__)",
        ]
    ).split()
    commit = command_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = command_output(
        ["git", "-C", str(ROOT), "--no-optional-locks", "status", "--porcelain", "--", "gateway"]
    )
    return {
        "cpus": command_output(["nproc", "--all"]),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "python": versions[0] if versions else "?",
        "aiohttp": versions[1] if len(versions) > 1 else "?",
        "uvloop": versions[2] if len(versions) > 2 else "?",
        "orjson": versions[3] if len(versions) > 3 else "?",
        "nginx": command_output(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": command_output(["wrk", "-v"]).splitlines()[0].split(" Copyright")[0],
        "redis": command_output(["redis-server", "--version"]).split(" sha=")[0],
        "gateway": command_output([str(GATEWAY), "--version"]),
        "commit": commit + (" (gateway/ has uncommitted changes)" if dirty else ""),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def method(settings: Settings, results: list[ArmResult]) -> list[str]:
    body_bytes = next((r.body_bytes for r in results if r.body_bytes), len(canned_json()))
    pin = (
        f"one-worker arms (and direct): server on CPU {SERVER_CPU}; wrk, the canned nginx, the "
        f"governed arm's redis-server, the paced upstream and the clients on CPU {LOAD_CPU}; "
        f"two-worker arms: server, redis and wrk unpinned (the canned nginx stays on CPU "
        f"{LOAD_CPU})"
        if settings.pin
        else "none (BENCH_PIN=0 or fewer than 2 CPUs)"
    )
    s = settings
    return [
        "## Method",
        "",
        f"- Every wrk arm answers `POST /v1/chat/completions` with the same canned "
        f"chat.completion ({body_bytes} bytes, with `usage`) served by one nginx worker "
        "(`return 200`).",
        "- Request: `" + json.dumps(REQUEST, separators=(",", ":")) + "`, "
        "`Content-Type: application/json`, `Authorization: Bearer <the bench key>` "
        "(bench/post.lua).",
        f"- Per arm: a probe (must be 200 with the canned JSON), {s.warmup:g} s warm-up, "
        f"saturation `wrk -t1 -c{s.connections} -d{s.duration:g}s`, then latency "
        f"at concurrency 1 `wrk -t1 -c1 -d{s.latency_duration:g}s` (p50/p99 from wrk's "
        "Lua `latency:percentile`). Any non-2xx answer or timeout fails the arm.",
        f"- Pinning (taskset): {pin}.",
        "- Added latency = arm - direct, both at concurrency 1.",
        f"- Half saturation: `wrk -t1 -c16 -d{s.latency_duration:g}s` with bench/post.lua's "
        "`delay()` pausing each connection after every answer (whole ms) so that the rate is "
        "about half the arm's own saturation RPS (pause = 16 / (RPS / 2) - the answer time, "
        "measured by a 2 s trial at the pause computed from the c1 p50); direct is "
        "paced with a 5 ms pause (~3,000 req/s, the gateways' half rates). Added p99 at half "
        "saturation = arm's paced p99 - direct's paced p99.",
        f"- Streaming at concurrency 1: a Python aiohttp client for {s.stream_duration:g} s "
        f"(after 20 warm-up streams) against a canned SSE answer of {STREAM_CHUNKS} "
        "chat.completion.chunk events + a usage chunk + `data: [DONE]` "
        f"({len(canned_sse())} bytes, sent by nginx in one piece). TTFT = time to the first "
        "chunk holding `data:`; added TTFT = arm - direct. The gateway's model `bench-stream` "
        "points at the SSE location.",
        "- Light gateway arms: `log: {level: warning, access: false}`, one static key whose "
        "owner's plan has no limits (authenticated, admitted and settled, never refused); 1 "
        "worker on `memory://`, 2 workers on a `redis://` store (a `redis-server` of its own, "
        '`--save "" --appendonly no`).',
        "- **Governed** gateway arms: a Redis store of their own (1 and 2 workers); the static "
        f"key with `ip_whitelist: [127.0.0.0/8]`, `rpm_limit: {GOVERNED_RPM}`, "
        f"`max_concurrency: {GOVERNED_CONCURRENCY}`, `daily_limit` and `monthly_limit` "
        f"{GOVERNED_TOKENS:.0e}; the owner's plan with `rpm: {GOVERNED_RPM}` and "
        f"`monthly_tokens: {GOVERNED_TOKENS:.0e}` (all checked, none reached); metrics on "
        "(always); `log: {level: warning, access: true}` with stderr to a file; usage "
        "recorded. After the measurements the driver checks the access log's lines, the usage "
        "the admin API reports and `gateway_requests_total`.",
        "- Redis per request: around the saturation run of every arm on Redis, `INFO "
        "commandstats` and `INFO stats`; then a `MONITOR` sample under the same load with the "
        "static key and, on governed arms, with a key issued through the admin API (same limits, "
        "cached by each worker after a 1 s warm-up): admission must be 1 EVALSHA per request, "
        "settlement ≤ 1 (pipelined), and a cached key must cost no GET of its record, else the "
        "arm is marked CHECK FAILED and the run exits 1.",
        f"- Paced streams: `bench/paced_upstream.py` (aiohttp + uvloop, on CPU {LOAD_CPU}) answers "
        f"every POST with {s.paced_chunks} chunks {s.paced_interval_ms:g} ms apart (fixed "
        "schedule), each carrying its CLOCK_MONOTONIC send time; a bare asyncio client (one "
        f"protocol per connection, CPU {LOAD_CPU}) opens {s.paced_streams} streams (spread over "
        f"{min(0.5, s.paced_streams / 1000):g} s) through the arm, {s.paced_rounds} rounds "
        "after 16 warm-up streams: round 1 is *cold* (each stream opens a new upstream "
        "connection), the later rounds *warm* (the proxy's pooled upstream connections). Per "
        "chunk: arrival gap - interval (the brief's measure; it includes the upstream's own "
        "timer lateness, shown apart), arrival gap - the upstream's actual send gap (what the "
        "path added: the target is checked on it, warm rounds), transit (arrival - send time), "
        "time to the first chunk. Memory from /proc/<pid>/status VmRSS: idle before round 1, "
        "sampled every 20 ms during it; KB per open stream = (RSS with the most streams open "
        "- idle) / the streams open then (all of them unless the server fell behind).",
        "- LiteLLM (optional): `litellm[proxy]` pinned, in `bench/.work/litellm-env`, 1 worker "
        "(uvicorn), master key = the bench key, no database, access log off, model "
        "`openai/bench-model` with `api_base` = the canned upstream; measured like the other arms.",
    ]
