"""RESULTS.md, section by section in its order, and the summary printed at the end of a run
(the tables are ``report_tables``, the targets ``report_targets``, the History
``report_history``, the facts and the Method ``report_method``)."""

from __future__ import annotations

import datetime as dt

from armresult import ArmResult
from common import LOAD_CPU, Settings
from paired import Paired
from procs import QUIET_PCT
from report_history import history_line, previous_history
from report_method import method
from report_tables import (
    arm_table,
    by_key,
    fmt,
    machine_table,
    paced_table,
    paired_table,
    redis_tables,
    stream_table,
)
from report_targets import paired_rows, ratios


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
