"""RESULTS.md's History: the one dated line a run adds, the lines kept from before, and adding
one line to the file alone (the soak's)."""

from __future__ import annotations

from armresult import ArmResult
from common import RESULTS
from paired import Paired
from procs import QUIET_PCT
from report_tables import by_key


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
