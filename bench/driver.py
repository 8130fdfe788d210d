"""The benchmark driver (run it through ``bench/run``): starts a canned nginx upstream (and the
paced SSE upstream), then each arm in turn, measures it, stops everything (even on failure) and
writes ``bench/RESULTS.md``.

- ``arms``: what answers the load and how each arm starts (nginx, the bare aiohttp pass-through,
  the gateway light and governed); ``litellm_arm``: the optional LiteLLM proxy;
- ``measure``: one arm's measurements in order, with ``clients`` (HTTP, wrk, the c1 streaming
  client), ``armresult`` (what they hold), ``armchecks`` (the Redis checks of the arms on
  Redis, the governed arm's log, usage and metrics) and ``spyprofile`` (py-spy);
  ``redisstats``: INFO commandstats and MONITOR;
- ``streams``: 512 paced streams at once (``paced_upstream.py`` serves them);
- ``report``: RESULTS.md and the printed summary (``report_tables``, ``report_targets``,
  ``report_history``, ``report_method``: its parts); ``soak``: BENCH_SOAK=<seconds>.

Knobs (environment): see bench/README.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator

from armresult import ArmResult
from arms import Arm, Run, start_canned, wrk_arms, wrk_arms_2w
from clients import probe
from common import CHAT_PATH, LOAD_CPU, RESULTS, ROOT, WORK, ArmFailed, Settings
from litellm_arm import installed_version, litellm_arm
from measure import measure
from paired import run_pairs
from procs import free_port
from report import print_summary, report
from report_history import append_history
from report_method import facts
from soak import run_soak
from streams import paced_arms, start_paced_upstream


def all_arms(settings: Settings) -> list[Arm]:
    arms = wrk_arms()
    if settings.litellm:
        arms.append(litellm_arm())
    return [*arms, *wrk_arms_2w(), *paced_arms()]


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` stops its processes."""

    def raise_exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def soak_main(settings: Settings, run: Run, info: dict[str, str]) -> int:
    print(f"== soak: {settings.soak:.0f} s on the governed gateway, 1 worker", flush=True)
    try:
        lines, summary = run_soak(run, settings.soak)
    except ArmFailed as err:
        print(f"soak FAILED: {err}", file=sys.stderr)
        return 1
    text = "\n".join(lines) + "\n"
    out = run.dir / "soak.md"
    out.write_text(text)
    print("\n" + text)
    commit = info["commit"].split()[0]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    append_history(f"- {when} `{commit}`: {summary}")
    print(f"wrote {out.relative_to(ROOT)}; a History line was added to bench/RESULTS.md")
    return 0 if "PASS" in summary else 1


def main() -> int:
    settings = Settings()
    known = all_arms(settings)
    arms = [a for a in known if not settings.arms or a.key in settings.arms]
    if not arms and not settings.soak:
        print(f"BENCH_ARMS matches no arm; arms: {', '.join(a.key for a in known)}")
        return 2
    started = time.monotonic()
    run_dir = WORK / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    info = facts()
    if settings.pin:
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # the clients run in this process
    run = Run(settings, run_dir, free_port())
    results: list[ArmResult] = []
    with terminate_on_sigterm(), run.stack:
        cpus = LOAD_CPU if settings.pin else None
        try:
            canned = start_canned(run.stack, run, "nginx-canned", run.canned_port, cpus)
            probe(f"http://127.0.0.1:{run.canned_port}{CHAT_PATH}", canned)
            if any(a.kind == "paced" for a in arms):
                start_paced_upstream(run.stack, run, cpus)
        except ArmFailed as err:
            print(f"the canned upstreams did not start: {err}", file=sys.stderr)
            return 1
        if settings.soak:
            return soak_main(settings, run, info)
        for arm in arms:
            results.append(measure(run, arm))
        paired = run_pairs(run, {a.key: a for a in arms}, settings.pairs, settings.pair_duration)
    took = time.monotonic() - started
    version = installed_version()
    if version:
        info["litellm"] = f"litellm[proxy] {version} (bench/.work/litellm-env)"
    print_summary(results, paired)
    if settings.arms:
        print("\nBENCH_ARMS is set: bench/RESULTS.md is left as it was.")
    else:
        RESULTS.write_text(report(settings, info, results, took, paired))
        print(f"\nwrote {RESULTS.relative_to(ROOT)} ({took:.0f} s)")
    failed = [r.arm.key for r in results if r.error and not r.arm.optional]
    checks = [r.arm.key for r in results if r.problems] + [
        f"paired {p.arm}" for p in paired if p.error
    ]
    unavailable = [r.arm.key for r in results if r.error and r.arm.optional]
    if unavailable:
        print(f"not available (optional): {', '.join(unavailable)}", file=sys.stderr)
    if failed or checks:
        print(f"FAILED arms: {', '.join(failed + checks)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
