"""The verdicts against the targets: one row (measure, value, target, verdict) per ratio,
latency, stream, memory, Redis and LiteLLM target, and per paired run."""

from __future__ import annotations

from armresult import ArmResult
from clients import WrkResult
from paired import Paired
from report_tables import by_key, verdict

Row = tuple[str, str, str, str]  # measure, value, target, verdict


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
                rows.append(idle_rss_row(key, p.idle_rss_mb))
    return rows


def missing_of(x: ArmResult) -> str:
    return "FAILED" if x.error else "not run"


def memory_rows(r: dict[str, ArmResult]) -> list[Row]:
    rows: list[Row] = []
    for key in ("gateway-1w", "governed-1w", "gateway-2w", "governed-2w"):
        x = r.get(key)
        if x and x.rss_idle_mb:
            rows.append(idle_rss_row(key, x.rss_idle_mb))
    return rows


IDLE_RSS_MB = 60  # the most an idle worker may hold


def idle_rss_row(key: str, mb: float) -> Row:
    return (
        f"{key}: idle RSS per worker",
        f"{mb:.1f} MB",
        f"≤ {IDLE_RSS_MB} MB",
        verdict(mb <= IDLE_RSS_MB),
    )


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
