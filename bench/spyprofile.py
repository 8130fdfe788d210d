"""BENCH_PROFILE=1: a py-spy profile of a one-worker gateway under saturation, summed up as own
time, inclusive time per gateway function and time by area."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from pathlib import Path

from arms import Arm, Run
from clients import wrk
from common import ROOT, WORK
from procs import Proc, Stack

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
