"""The tables, the verdicts against the targets and ``bench/RESULTS.md``."""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
from pathlib import Path

from common import (
    GATEWAY,
    GOVERNED_CONCURRENCY,
    GOVERNED_RPM,
    GOVERNED_TOKENS,
    LOAD_CPU,
    PYTHON,
    REQUEST,
    RESULTS,
    ROOT,
    SERVER_CPU,
    STREAM_CHUNKS,
    Settings,
    canned_json,
    canned_sse,
)
from measure import ArmResult, WrkResult
from paired import Paired
from procs import QUIET_PCT

Row = tuple[str, str, str, str]  # measure, value, target, verdict

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


# --- helpers -------------------------------------------------------------------------------------


def by_key(results: list[ArmResult]) -> dict[str, ArmResult]:
    return {r.arm.key: r for r in results}


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def status_of(r: ArmResult) -> str:
    if r.error:
        return "not available" if r.arm.optional else "**FAILED**"
    if r.problems:
        return "**CHECK FAILED**"
    return "ok"


# --- tables --------------------------------------------------------------------------------------


def arm_table(results: list[ArmResult]) -> list[str]:
    direct = by_key(results).get("direct")
    d = direct.latency if direct else None
    out = [
        "| arm | pinning | sat. RPS | sat. p50 / p99 ms | server CPU | CPU µs/req | c1 p50 ms "
        "| c1 p99 ms | added p50 ms | added p99 ms | c1 RPS | RSS/worker idle → after MB "
        "| other load | status |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        if r.arm.kind != "wrk":
            continue
        s, lat = r.saturation, r.latency
        added50 = lat.p50_ms - d.p50_ms if lat and d else None
        added99 = lat.p99_ms - d.p99_ms if lat and d else None
        status = status_of(r)
        if lat and lat.socket_errors:
            status += f" (socket errors: {lat.socket_errors})"
        if s and s.socket_errors:
            status += f" (socket errors: {s.socket_errors})"
        rss = f"{r.rss_idle_mb:.1f} → {r.rss_loaded_mb:.1f}" if r.rss_idle_mb else "—"
        out.append(
            f"| {r.arm.title} | {r.pinning} "
            f"| {f'{s.rps:,.0f}' if s else '—'} "
            f"| {fmt(s and s.p50_ms, 2)} / {fmt(s and s.p99_ms, 2)} "
            f"| {f'{r.cpu_busy:.0%}' if s else '—'} "
            f"| {f'{r.cpu_us_per_request:.0f}' if s else '—'} "
            f"| {fmt(lat and lat.p50_ms)} | {fmt(lat and lat.p99_ms)} "
            f"| {fmt(added50)} | {fmt(added99)} "
            f"| {f'{lat.rps:,.0f}' if lat else '—'} | {rss} "
            f"| {r.other_pct:.0f}%{' ⚠' if r.other_pct >= QUIET_PCT else ''} | {status} |"
        )
    return out


def machine_table(results: list[ArmResult]) -> list[str]:
    """Where the machine's CPU went per request during each saturation run."""
    rows = [r for r in results if r.arm.kind == "wrk" and r.saturation and r.machine_busy]
    if not rows:
        return []
    out = [
        "| arm | sat. RPS | the machine busy (CPUs) | machine CPU µs/req | server | redis-server "
        "| the rest (wrk, the canned nginx, the kernel) |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        assert r.saturation is not None
        redis = r.redis.cpu_us if r.redis else 0.0
        rest = r.machine_us_per_request - r.cpu_us_per_request - redis
        out.append(
            f"| {r.arm.title} | {r.saturation.rps:,.0f} | {r.machine_busy:.2f} "
            f"| {r.machine_us_per_request:.0f} | {r.cpu_us_per_request:.0f} "
            f"| {f'{redis:.0f}' if r.redis else '—'} | {rest:.0f} |"
        )
    return out


def stream_table(results: list[ArmResult]) -> list[str]:
    rows = [r for r in results if r.stream]
    if not rows:
        return []
    direct = by_key(results).get("direct")
    d = direct.stream if direct else None
    out = [
        "| arm | streams | TTFT p50 ms | TTFT p99 ms | added TTFT p50 / p99 ms "
        "| whole stream p50 ms | whole stream p99 ms |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        s = r.stream
        assert s is not None
        added = (
            f"{s.ttft_p50_ms - d.ttft_p50_ms:.3f} / {s.ttft_p99_ms - d.ttft_p99_ms:.3f}"
            if d and r.arm.key != "direct"
            else "—"
        )
        out.append(
            f"| {r.arm.title} | {s.streams} | {s.ttft_p50_ms:.3f} | {s.ttft_p99_ms:.3f} "
            f"| {added} | {s.total_p50_ms:.3f} | {s.total_p99_ms:.3f} |"
        )
    return out


def paced_table(results: list[ArmResult]) -> list[str]:
    rows = [r for r in results if r.arm.kind == "paced"]
    if not rows:
        return []
    out = [
        "| arm | rounds | complete | gap - interval p50 / p99 / max ms | gap - upstream's "
        "send gap p50 / p99 ms | upstream lateness p99 ms | transit p50 / p99 ms "
        "| first chunk p50 / p99 ms | most open at once | server CPU | CPU µs per chunk "
        "| other load | status |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        p = r.paced
        load = f"{r.other_pct:.0f}%{' ⚠' if r.other_pct >= QUIET_PCT else ''}"
        if p is None:
            out.append(f"| {r.arm.title} |{' — |' * 10} {load} | {status_of(r)} |")
            continue
        for f in (p.cold, p.warm):
            if f is None:
                continue
            out.append(
                f"| {r.arm.title} | {f.label} | {f.complete}/{f.attempted} "
                f"| {f.gap_p50_ms:.3f} / {f.gap_p99_ms:.3f} / {f.gap_max_ms:.1f} "
                f"| {f.path_gap_p50_ms:.3f} / {f.path_gap_p99_ms:.3f} | {f.send_gap_p99_ms:.3f} "
                f"| {f.transit_p50_ms:.3f} / {f.transit_p99_ms:.3f} "
                f"| {f.first_p50_ms:.1f} / {f.first_p99_ms:.1f} "
                f"| {f'{f.peak_open}/{p.streams}' if f.peak_open else '—'} "
                f"| {f'{f.server_cpu:.0%}' if p.idle_rss_mb else '—'} "
                f"| {f'{f.cpu_us_per_chunk:.0f}' if p.idle_rss_mb else '—'} "
                f"| {load} | {status_of(r)} |"
            )
    out += [
        "",
        "| arm | RSS per worker idle → with the most streams open → after MB | streams open then "
        "| KB per open stream |",
        "|---|--:|--:|--:|",
    ]
    for r in rows:
        p = r.paced
        if p is None or not p.idle_rss_mb:
            continue
        out.append(
            f"| {r.arm.title} | {p.idle_rss_mb:.1f} → {p.open_rss_mb:.1f} → {p.after_rss_mb:.1f} "
            f"| {p.peak_open}/{p.streams} | {p.per_stream_kb:.1f} |"
        )
    return out


def redis_tables(results: list[ArmResult]) -> list[str]:
    rows = [r for r in results if r.redis or r.samples]
    if not rows:
        return []
    out = [
        "Over the saturation run (INFO commandstats and INFO stats, before and after, divided "
        "by the requests the gateway answered meanwhile, from its `gateway_requests_total`; "
        "the commands run inside the Lua scripts are counted too):",
        "",
        "| arm | requests | commands | Redis reads (≈ round trips) | Redis CPU µs | "
        "calls per command |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        c = r.redis
        if c is None:
            continue
        calls = ", ".join(f"{k} {v:.2f}" for k, v in c.calls.items() if v >= 0.005)
        out.append(
            f"| {r.arm.title} | {c.requests:,} | {c.commands:.3f} | {c.reads:.3f} | "
            f"{c.cpu_us:.1f} | {calls} |"
        )
    leaks = [r for r in rows if r.leaked_leases]
    if leaks:
        out += [
            "",
            "Concurrency leases still held after every measurement of the arm (the load stopped, "
            "the settlements written): "
            + "; ".join(f"{r.arm.title} {r.leaked_leases}" for r in leaks)
            + ". Each is a request admitted and never settled: its slot stays taken (and its "
            "usage unrecorded) until the lease expires (600 s). They come from the requests in "
            "flight when wrk stops: it closes its connections, the gateway cancels those handlers "
            "(`handler_cancellation=True`, gateway/server.py), and one cancelled while awaiting "
            "`limiter.admit` was admitted in Redis but never reaches the `finally` that settles "
            "(gateway/proxy/handler.py). The same requests are counted as status 500 in "
            "`gateway_requests_total` and the access log.",
        ]
    out += [
        "",
        "Which command does what (a MONITOR sample under the same load, "
        "`BENCH_REDIS_SAMPLE` s; EVALSHAs told apart by the SHA-1 of `gateway/store/*.lua`; a "
        "run of consecutive settle EVALSHAs from one connection ≈ one pipeline):",
        "",
        "| arm | key | requests | admission EVALSHA (admissions) | settle EVALSHA (settlements) "
        "| settle "
        "pipelines (mean EVALSHAs) | GET of a key record | other GET | every command sent | "
        "verdict |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for r in rows:
        for s in r.samples:
            if s.error:
                out.append(
                    f"| {r.arm.title} | {s.label} | — | — | — | — | — | — | {s.error} | "
                    "**FAILED** |"
                )
                continue
            per = s.per_request
            size = s.settle / s.settle_runs if s.settle_runs else 0
            sent = ", ".join(
                f"{k} {per(v):.3f}"
                for k, v in sorted(s.client_commands.items(), key=lambda i: -i[1])
            )
            bad = [p for p in r.problems if p.startswith(s.label)]
            out.append(
                f"| {r.arm.title} | {s.label} | {s.requests:,} "
                f"| {per(s.admit):.3f} ({per(s.admissions):.3f}) "
                f"| {per(s.settle):.3f} ({per(s.settlements):.3f}) "
                f"| {per(s.settle_runs):.3f} ({size:.1f}) "
                f"| {per(s.key_gets):.4f} | {per(s.other_gets):.4f} | {sent} "
                f"| {'**FAILED**: ' + '; '.join(bad) if bad else 'ok'} |"
            )
    return out


# --- targets -------------------------------------------------------------------------------------


def ratios(results: list[ArmResult]) -> list[Row]:
    r = by_key(results)
    rows: list[Row] = []

    def sat(key: str) -> float | None:
        x = r.get(key)
        return x.saturation.rps if x and x.saturation else None

    def lat(key: str) -> WrkResult | None:
        x = r.get(key)
        return x.latency if x else None

    def missing(*keys: str) -> str:
        return "FAILED" if any(k in r and r[k].error for k in keys) else "not run"

    for kind in ("gateway", "governed"):
        for w in (1, 2):
            g, p = sat(f"{kind}-{w}w"), sat(f"passthrough-{w}w")
            name = f"{kind} / pass-through RPS, {w} worker{'s' if w > 1 else ''}"
            if g and p:
                rows.append((name, f"{g / p:.2f}", "≥ 0.80", verdict(g / p >= 0.8)))
            else:
                rows.append((name, "n/a", "≥ 0.80", missing(f"{kind}-{w}w", f"passthrough-{w}w")))
    for kind in ("gateway", "governed"):
        for w in (1, 2):
            g_arm, p_arm = r.get(f"{kind}-{w}w"), r.get(f"passthrough-{w}w")
            if g_arm and p_arm and g_arm.cpu_us_per_request and p_arm.cpu_us_per_request:
                ratio = p_arm.cpu_us_per_request / g_arm.cpu_us_per_request
                rows.append(
                    (
                        f"pass-through / {kind} CPU per request, {w} worker{'s' if w > 1 else ''}",
                        f"{ratio:.2f}",
                        "≥ 0.80",
                        verdict(ratio >= 0.8),
                    )
                )
    for kind in ("gateway", "governed"):
        g_arm, p_arm = r.get(f"{kind}-2w"), r.get("passthrough-2w")
        if g_arm and p_arm and g_arm.machine_us_per_request and p_arm.machine_us_per_request:
            ratio = p_arm.machine_us_per_request / g_arm.machine_us_per_request
            rows.append(
                (
                    f"pass-through / {kind} whole-machine CPU per request, 2 workers "
                    "(what bounds a 2-worker arm on a 2-CPU machine)",
                    f"{ratio:.2f}",
                    "—",
                    "info",
                )
            )
    dl = lat("direct")
    for key in ("gateway-1w", "governed-1w"):
        gl = lat(key)
        if gl and dl:
            added = gl.p50_ms - dl.p50_ms
            rows.append(
                (
                    f"{key} added p50 (c1, vs direct)",
                    f"{added:.3f} ms",
                    "≤ 0.5 ms",
                    verdict(added <= 0.5),
                )
            )
            added99 = gl.p99_ms - dl.p99_ms
            rows.append((f"{key} added p99 (c1, vs direct)", f"{added99:.3f} ms", "—", "info"))
        else:
            rows.append(
                (f"{key} added p50 (c1, vs direct)", "n/a", "≤ 0.5 ms", missing(key, "direct"))
            )
    direct_half = r["direct"].half if "direct" in r else None
    for key in ("passthrough-1w", "gateway-1w", "governed-1w", "passthrough-2w", "governed-2w"):
        x = r.get(key)
        if x and x.half and x.saturation and direct_half:
            added99 = x.half.p99_ms - direct_half.p99_ms
            baseline = key.startswith("passthrough")  # the same load shape on the bare proxy
            rows.append(
                (
                    f"{key} added p99 at half saturation ({x.half.rps:,.0f} req/s = "
                    f"{x.half.rps / x.saturation.rps:.0%}, vs direct paced alike)",
                    f"{added99:.3f} ms",
                    "—" if baseline else "≤ 3 ms",
                    "info" if baseline else verdict(added99 <= 3.0),
                )
            )
    gl, gv, pl = lat("gateway-1w"), lat("governed-1w"), lat("passthrough-1w")
    for name, a in (("gateway-1w", gl), ("governed-1w", gv)):
        if a and pl:
            rows.append(
                (
                    f"{name} - pass-through p50 / p99 (c1)",
                    f"{a.p50_ms - pl.p50_ms:.3f} / {a.p99_ms - pl.p99_ms:.3f} ms",
                    "—",
                    "info",
                )
            )
    direct = r.get("direct")
    for key in ("gateway-1w", "governed-1w", "governed-2w"):
        x = r.get(key)
        if x and x.stream and direct and direct.stream:
            a50 = x.stream.ttft_p50_ms - direct.stream.ttft_p50_ms
            a99 = x.stream.ttft_p99_ms - direct.stream.ttft_p99_ms
            rows.append(
                (
                    f"{key} added TTFT p50 / p99 (c1 streams, vs direct)",
                    f"{a50:.3f} / {a99:.3f} ms",
                    "p99 ≤ 1 ms",
                    verdict(a99 <= 1.0),
                )
            )
    rows += paced_rows(r)
    rows += memory_rows(r)
    rows += redis_rows(results)
    rows += litellm_rows(r)
    return [row for row in rows if row[3] != "not run"]


def paced_rows(r: dict[str, ArmResult]) -> list[Row]:
    rows: list[Row] = []
    for key in ("paced-direct", "paced-passthrough", "paced-gateway"):
        x = r.get(key)
        if x is None:
            continue
        p = x.paced
        if p is None:
            rows.append((f"{key}: every stream completes", "n/a", "all", missing_of(x)))
            continue
        rows.append(
            (
                f"{key}: streams completed",
                f"{p.complete}/{p.attempted}",
                "all",
                verdict(p.complete == p.attempted),
            )
        )
        gated = key != "paced-direct"
        steady, cold = p.steady, p.cold
        rows.append(
            (
                f"{key}, {steady.label}: added gap (arrival gap - the upstream's send gap), "
                "p50 / p99",
                f"{steady.path_gap_p50_ms:.3f} / {steady.path_gap_p99_ms:.3f} ms",
                "p99 ≤ 5 ms" if gated else "—",
                verdict(steady.path_gap_p99_ms <= 5) if gated else "info",
            )
        )
        rows.append(
            (
                f"{key}, {steady.label}: arrival gap - interval, p50 / p99 (with the upstream's "
                f"lateness, p99 {steady.send_gap_p99_ms:.1f} ms)",
                f"{steady.gap_p50_ms:.3f} / {steady.gap_p99_ms:.3f} ms",
                "—",
                "info",
            )
        )
        if cold is not steady and gated:
            rows.append(
                (
                    f"{key}, {cold.label}: added gap p50 / p99; first chunk p99",
                    f"{cold.path_gap_p50_ms:.3f} / {cold.path_gap_p99_ms:.3f} ms; "
                    f"{cold.first_p99_ms:.0f} ms",
                    "—",
                    "info",
                )
            )
        if gated:
            rows.append(
                (
                    f"{key}: memory per open stream ({p.peak_open} open at once)",
                    f"{p.per_stream_kb:.1f} KB",
                    "≤ 30 KB",
                    verdict(bool(p.peak_open) and p.per_stream_kb <= 30),
                )
            )
            if key == "paced-gateway":
                rows.append(
                    (
                        f"{key}: idle RSS per worker",
                        f"{p.idle_rss_mb:.1f} MB",
                        "≤ 60 MB",
                        verdict(p.idle_rss_mb <= 60),
                    )
                )
    return rows


def missing_of(x: ArmResult) -> str:
    return "FAILED" if x.error else "not run"


def memory_rows(r: dict[str, ArmResult]) -> list[Row]:
    rows: list[Row] = []
    for key in ("gateway-1w", "governed-1w", "gateway-2w", "governed-2w"):
        x = r.get(key)
        if x and x.rss_idle_mb:
            rows.append(
                (
                    f"{key}: idle RSS per worker",
                    f"{x.rss_idle_mb:.1f} MB",
                    "≤ 60 MB",
                    verdict(x.rss_idle_mb <= 60),
                )
            )
    return rows


def redis_rows(results: list[ArmResult]) -> list[Row]:
    rows: list[Row] = []
    for x in results:
        if x.leaked_leases is not None:
            rows.append(
                (
                    f"{x.arm.key}: concurrency leases held once the load stopped and every "
                    "settlement was written (admitted, never settled)",
                    f"{x.leaked_leases}",
                    "0",
                    verdict(x.leaked_leases == 0),
                )
            )
        for s in x.samples:
            if s.error or not s.requests:
                continue
            admit, admitted = s.per_request(s.admit), s.per_request(s.admissions)
            rows.append(
                (
                    f"{x.arm.key} ({s.label}): admission EVALSHA / admissions per request",
                    f"{admit:.3f} / {admitted:.3f}",
                    "≤ 1 / 1",
                    verdict(admit <= 1.02 and abs(admitted - 1) <= 0.05),
                )
            )
            settle = s.per_request(s.settle)
            rows.append(
                (
                    f"{x.arm.key} ({s.label}): settle EVALSHA / pipelines / settlements per "
                    "request",
                    f"{settle:.3f} / {s.per_request(s.settle_runs):.3f} / "
                    f"{s.per_request(s.settlements):.3f}",
                    "≤ 1",
                    verdict(settle <= 1.02),
                )
            )
            if s.label.startswith("issued"):
                rows.append(
                    (
                        f"{x.arm.key} ({s.label}): GET of a key record per request",
                        f"{s.per_request(s.key_gets):.4f}",
                        "0",
                        verdict(s.key_gets == 0),
                    )
                )
    return rows


def litellm_rows(r: dict[str, ArmResult]) -> list[Row]:
    lite = r.get("litellm-1w")
    if lite is None:
        return []
    rows: list[Row] = []
    for key in ("gateway-1w", "governed-1w"):
        g = r.get(key)
        if g and g.saturation and lite.saturation:
            ratio = g.saturation.rps / lite.saturation.rps
            rows.append(
                (
                    f"{key} RPS per worker / LiteLLM RPS per worker",
                    f"{ratio:.1f}",
                    "≥ 40",
                    verdict(ratio >= 40),
                )
            )
        elif lite.error:
            rows.append(
                (f"{key} RPS per worker / LiteLLM RPS per worker", "n/a", "≥ 40", "no LiteLLM")
            )
    return rows


# --- RESULTS.md ----------------------------------------------------------------------------------


def history_line(
    when: str, info: dict[str, str], results: list[ArmResult], paired: list[Paired] | None = None
) -> str:
    r = by_key(results)
    parts = []
    for key in ("gateway-1w", "gateway-2w", "governed-1w", "governed-2w"):
        g, p = (
            r.get(key),
            r.get(key.replace("gateway", "passthrough").replace("governed", "passthrough")),
        )
        if g and p and g.saturation and p.saturation:
            g_cpu, p_cpu = g.cpu_us_per_request, p.cpu_us_per_request
            parts.append(
                f"{key} {g.saturation.rps:,.0f} req/s = {g.saturation.rps / p.saturation.rps:.2f}"
                f" x pass-through (CPU/req {g_cpu:.0f} vs {p_cpu:.0f} µs = "
                f"{p_cpu / g_cpu if g_cpu else 0:.2f})"
            )
        elif g:
            parts.append(f"{key} FAILED")
    d = r.get("direct")
    for key in ("gateway-1w", "governed-1w"):
        g = r.get(key)
        if g and d and g.latency and d.latency:
            parts.append(
                f"{key} added p50 {g.latency.p50_ms - d.latency.p50_ms:.3f} ms, "
                f"p99 {g.latency.p99_ms - d.latency.p99_ms:.3f} ms"
            )
    for key in ("gateway-1w", "governed-1w"):
        g = r.get(key)
        if g and d and g.stream and d.stream:
            parts.append(
                f"{key} added TTFT p99 {g.stream.ttft_p99_ms - d.stream.ttft_p99_ms:.3f} ms"
            )
    redis = []
    for x in results:
        samples = [m for m in x.samples if m.requests and not m.error]
        if samples:
            admit = max(m.per_request(m.admit) for m in samples)
            settle = max(m.per_request(m.settle) for m in samples)
            gets = sum(m.key_gets for m in samples if m.label.startswith("issued"))
            leases = f", {x.leaked_leases} leases left" if x.leaked_leases else ""
            redis.append(f"{x.arm.key} {admit:.2f}+{settle:.2f}{leases}")
            if any(m.label.startswith("issued") for m in samples):
                redis[-1] += f", cached-key GETs {gets}"
    if redis:
        parts.append("Redis EVALSHA/req admit+settle: " + ", ".join(redis))
    pg = r.get("paced-gateway")
    if pg and pg.paced:
        p = pg.paced
        parts.append(
            f"{p.streams} paced streams via gateway-1w: {p.complete}/{p.attempted} complete, "
            f"added gap p99 {p.cold.path_gap_p99_ms:.2f} ms cold / "
            f"{p.steady.path_gap_p99_ms:.2f} ms warm, {p.per_stream_kb:.1f} KB/stream "
            f"({p.peak_open} open)"
        )
    elif pg:
        parts.append("paced-gateway FAILED")
    lite, g = r.get("litellm-1w"), r.get("gateway-1w")
    if lite and lite.saturation and g and g.saturation:
        parts.append(
            f"LiteLLM {lite.saturation.rps:,.0f} req/s (gateway-1w = "
            f"{g.saturation.rps / lite.saturation.rps:.1f} x)"
        )
    elif lite:
        parts.append("LiteLLM not available")
    for pr in paired or []:
        if pr.rps:
            parts.append(
                f"paired {pr.arm} / pass-through: RPS median {Paired.median(pr.rps):.2f} "
                f"({min(pr.rps):.2f}-{max(pr.rps):.2f}), CPU/req median "
                f"{Paired.median(pr.cpu):.2f}, machine CPU/req (arm / baseline) median "
                f"{Paired.median(pr.machine):.2f}"
            )
    disturbed = [x.arm.key for x in results if x.other_pct >= QUIET_PCT]
    if disturbed:
        parts.append(f"disturbed by other load: {', '.join(disturbed)}")
    commit = info["commit"].split()[0]
    return f"- {when} `{commit}`: " + "; ".join(parts)


def previous_history() -> list[str]:
    try:
        text = RESULTS.read_text()
    except OSError:
        return []
    _, found, tail = text.partition("\n## History\n")
    if not found:
        return []
    return [line for line in tail.splitlines() if line.startswith("- ")]


def append_history(line: str) -> None:
    """Add one History line to RESULTS.md, leaving the rest as it is (the soak's)."""
    try:
        text = RESULTS.read_text()
    except OSError:
        text = "# Benchmark results\n\n## History\n\n"
    if "\n## History\n" not in text:
        text = text.rstrip("\n") + "\n\n## History\n\n"
    RESULTS.write_text(text.rstrip("\n") + "\n" + line + "\n")


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


# The least each pair's median ratio may be: an arm against the pass-through, or an arm against
# the arm it adds to (TPM and budgets on the governed arm: within 5 %).
PAIR_TARGETS = {"passthrough-1w": 0.80, "governed-1w": 0.95}


def paired_rows(paired: list[Paired]) -> list[Row]:
    """The paired runs' ratios: the steadier verdict on a machine whose speed drifts."""
    rows: list[Row] = []
    for p in paired:
        label = f"{p.arm} / {p.base}"
        target = PAIR_TARGETS.get(p.base, 0.80)
        workers = "2 workers" if p.arm.endswith("-2w") else "1 worker"
        if p.error or not p.rps:
            rows.append((f"{label} RPS, {workers}, paired", "n/a", f"≥ {target:.2f}", "FAILED"))
            continue
        for name, values in (("RPS", p.rps), ("CPU per request (baseline / arm)", p.cpu)):
            mid = Paired.median(values)
            rows.append(
                (
                    f"{label} {name}, {workers}, median of {len(values)} "
                    f"alternated pairs (range {min(values):.2f}-{max(values):.2f})",
                    f"{mid:.2f}",
                    f"≥ {target:.2f}",
                    verdict(mid >= target),
                )
            )
        if p.machine:
            rows.append(machine_row(p, label, workers))
    return rows


# The whole machine's CPU per request of a governed 2-worker arm, at most this many times the
# pass-through's (both share the 2 CPUs with the load, the canned worker and Redis); other pairs
# show theirs as information.
MACHINE_TARGETS = {("governed-2w", "passthrough-2w"): 1.30}


def machine_row(p: Paired, label: str, workers: str) -> Row:
    mid, target = Paired.median(p.machine), MACHINE_TARGETS.get((p.arm, p.base))
    return (
        f"{label} whole-machine CPU per request (arm / baseline), {workers}, median of "
        f"{len(p.machine)} alternated pairs (range {min(p.machine):.2f}-{max(p.machine):.2f})",
        f"{mid:.2f}",
        f"≤ {target:.2f}" if target else "—",
        verdict(mid <= target) if target else "info",
    )


def paired_table(paired: list[Paired]) -> list[str]:
    if not paired:
        return []
    out = [
        "| arm | baseline | RPS ratio per pair | CPU-per-request ratio per pair (baseline / arm) "
        "| whole-machine CPU per request per pair (arm / baseline) |",
        "|---|---|---|---|---|",
    ]
    for p in paired:
        if p.error:
            out.append(f"| {p.arm} | {p.base} | FAILED: {p.error[:200]} | | |")
            continue
        rps, cpu, machine = (", ".join(f"{v:.2f}" for v in vs) for vs in (p.rps, p.cpu, p.machine))
        out.append(f"| {p.arm} | {p.base} | {rps} | {cpu} | {machine} |")
    return out


def report(
    settings: Settings,
    info: dict[str, str],
    results: list[ArmResult],
    took: float,
    paired: list[Paired] | None = None,
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run` on {when} (the whole run took {took:.0f} s). "
        "Regenerated on every run; only the History section at the bottom accumulates.",
        "",
        "## Machine and versions",
        "",
        f"- CPU: {info['cpus']} x {info['cpu']}; kernel {info['kernel']}; "
        f"load average at the start {info['loadavg']}",
        f"- Python {info['python']}, aiohttp {info['aiohttp']}, uvloop {info['uvloop']}, "
        f"orjson {info['orjson']}",
        f"- {info['nginx']}; {info['wrk']}; {info['redis']}",
        f"- {info['gateway']} at commit {info['commit']}",
    ]
    if info.get("litellm"):
        lines.append(f"- LiteLLM: {info['litellm']}")
    lines += ["", *method(settings, results), "", "## Results", "", *arm_table(results), ""]
    machine = machine_table(results)
    if machine:
        lines += [
            "### The whole machine's CPU during saturation",
            "",
            "Busy time of every CPU (/proc/stat: all but idle and iowait) over the saturation run, "
            "per request; the server's and redis-server's own shares beside it. When an arm's "
            "processes and the load share all the machine's CPUs (the two-worker arms on a 2-CPU "
            "machine), its RPS is bounded by this total, not by the server's own cost.",
            "",
            *machine,
            "",
        ]
    streams = stream_table(results)
    if streams:
        lines += ["### Streaming at concurrency 1", "", *streams, ""]
    paced = paced_table(results)
    if paced:
        lines += [
            f"### {settings.paced_streams} paced streams at once "
            f"({settings.paced_chunks} chunks, {settings.paced_interval_ms:g} ms apart)",
            "",
            *paced,
            "",
        ]
    redis = redis_tables(results)
    if redis:
        lines += ["### Redis commands per request", "", *redis, ""]
    checks = [r for r in results if r.checks]
    if checks:
        lines += ["### What the governed arms did besides answering", ""]
        for r in checks:
            lines.append(f"- {r.arm.title}: " + "; ".join(r.checks))
        lines.append("")
    lite = by_key(results).get("litellm-1w")
    if lite is not None:
        lines += ["### LiteLLM", ""]
        if lite.error:
            reason = lite.error.strip().splitlines()
            lines.append(
                "LiteLLM could not be measured in this run (the run goes on without it): "
                + " ".join(reason[:1])
            )
            lines += ["", "```", lite.error.strip()[-2000:], "```"]
        elif lite.saturation:
            lines.append(
                f"{info.get('litellm', 'LiteLLM')}: {lite.saturation.rps:,.0f} req/s on one "
                f"worker ({lite.cpu_us_per_request:,.0f} µs CPU per request), c1 p50 "
                f"{fmt(lite.latency and lite.latency.p50_ms)} ms."
            )
        lines.append("")
    lines += [
        "## Against the targets",
        "",
        "| measure | value | target | verdict |",
        "|---|--:|--:|---|",
        *[
            f"| {a} | {b} | {c} | {d} |"
            for a, b, c, d in ratios(results) + paired_rows(paired or [])
        ],
        "",
        *(
            [
                "### Paired runs",
                "",
                "Each arm and its baseline up at once (pinned alike), saturation runs of "
                f"{settings.pair_duration:g} s alternated A B, B A, ...; a pair's ratio is taken "
                "back to back, so the machine's drift between minutes (tens of per cent here) "
                "cancels. The verdict on a ratio target is the paired median.",
                "",
                *paired_table(paired),
                "",
            ]
            if paired
            else []
        ),
        "## Notes",
        "",
        "- The direct arm is a twin of the canned nginx placed where the servers under test run, "
        "so its wrk → server hop crosses CPUs like every other arm's. Its RPS is bounded by "
        "wrk's single thread: it is the latency floor, not a throughput ceiling.",
        f"- {settings.connections} connections saturate every Python arm (a one-worker server is "
        "CPU-bound on its core from about 16 connections on). Override with BENCH_CONNECTIONS.",
        "- Two-worker arms float over both CPUs with wrk, redis and the canned nginx (which "
        f"stays on CPU {LOAD_CPU}), so they cannot double the one-worker figure.",
        "- *other load*: CPU used meanwhile by processes that are not the bench's (in % of one "
        f"CPU; ⚠ from {QUIET_PCT:g}%). Before each arm the driver waits (up to 20 s, 60 s per "
        "run) for the machine to be quiet. Figures of a ⚠ arm are disturbed: run again.",
        "- *server CPU* and *CPU µs/req*: user + system CPU of the server's processes (all "
        "workers) during the saturation run, from /proc. On a shared machine the "
        "CPU-per-request ratio is the steadier measure of the gateway's cost.",
        "- *RSS/worker*: VmRSS of each serving process (the supervisor of a multi-worker "
        "server excluded), idle = after the probe, after = after every measurement of the arm.",
        "- Paced streams: the direct arm's gap and transit are the floor of the upstream's "
        "timers (uvloop: 1 ms resolution) and of the client sharing a CPU with it; an arm's "
        "added delay is best read against it.",
        "- The gateway measured is the working tree (editable install), at the commit above.",
    ]
    for r in results:
        if r.profile:
            lines += [
                "",
                f"### py-spy profile, {r.arm.title}, under saturation (BENCH_PROFILE=1)",
                "",
                "```",
                *r.profile,
                "```",
            ]
    for r in results:
        if r.error and not r.arm.optional:
            lines += ["", f"### {r.arm.title} FAILED", "", "```", r.error.strip()[-4000:], "```"]
    history = [*previous_history(), history_line(when, info, results, paired)]
    lines += ["", "## History", "", *history, ""]
    return "\n".join(lines)


def print_summary(results: list[ArmResult], paired: list[Paired] | None = None) -> None:
    print("\n" + "\n".join(arm_table(results)))
    for table in (stream_table(results), paced_table(results), redis_tables(results)):
        if table:
            print("\n" + "\n".join(table))
    print()
    for a, b, c, d in ratios(results) + paired_rows(paired or []):
        print(f"{a:62} {b:>18}  target {c:11} {d}")
