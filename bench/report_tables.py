"""The report's tables, printed and written to RESULTS.md alike: the arms, the whole machine's
CPU, the streams at concurrency 1, the paced streams, Redis per request and the paired runs;
with the small helpers the targets share (``by_key``, ``fmt``, ``verdict``)."""

from __future__ import annotations

from armresult import ArmResult
from paired import Paired
from procs import QUIET_PCT

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
