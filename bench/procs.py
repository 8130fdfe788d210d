"""Processes of the benchmark: started in their own process group, stopped as a whole (even on
failure), pinned with taskset; free ports; the CPU and memory they (and others) use."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT, STARTUP_DEADLINE, ArmFailed


def taskset(cpus: str | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


@dataclass
class Proc:
    name: str
    cmd: list[str]
    log: Path
    crash_marker: str | None = None
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
                cwd=ROOT,
                env=self.env,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, chars: int = 3000) -> str:
        """What went wrong, readably: the first logged traceback (the gateway logs JSON lines
        with an ``exc`` field), else the end of the output."""
        text = self.output()
        for line in text.splitlines():
            if '"exc":' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            first = f"{entry.get('msg', '')}\n{entry['exc']}"
            repeats = text.count('"exc":')
            more = f"\n(the log holds {repeats} tracebacks; the first is shown)" if repeats else ""
            return first[-chars:] + more
        return text.rstrip()[-chars:]

    def count(self, marker: bytes) -> int:
        """Occurrences of ``marker`` in the output (read in pieces: an access log is large)."""
        total, carry = 0, b""
        try:
            with self.log.open("rb") as f:
                while piece := f.read(1 << 20):
                    data = carry + piece
                    total += data.count(marker)
                    # shorter than the marker: an occurrence across the boundary only
                    carry = data[-(len(marker) - 1) :] if len(marker) > 1 else b""
        except OSError:
            return 0
        return total

    def crashed(self) -> bool:
        """The process is alive but a worker of it died (the gateway restarts its workers)."""
        return self.crash_marker is not None and self.count(self.crash_marker.encode()) > 0

    def stop(self, grace: float = 5.0) -> None:
        if self.popen is None:
            return
        pgid = self.popen.pid  # the session leader: its pid is the group id
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Forked workers may outlive their parent: the whole group goes, whatever is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace)


class Stack:
    """Processes stopped in reverse order on exit, whatever happened."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc.start()

    def stop(self) -> None:
        while self.procs:
            self.procs.pop().stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (one per SO_REUSEPORT worker)."""
    wanted = f"0100007F:{port:04X}"
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1] == wanted and parts[3] == "0A":
                count += 1
    return count


def wait_listening(
    proc: Proc, port: int, count: int = 1, deadline_s: float = STARTUP_DEADLINE
) -> None:
    """Poll until ``count`` sockets listen on ``port``, failing if the process dies first."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ArmFailed(
                f"{proc.name} exited ({proc.popen and proc.popen.returncode}) before listening "
                f"on {port}; its output:\n{proc.tail()}"
            )
        if proc.crashed():
            raise ArmFailed(f"{proc.name} crashed while starting:\n{proc.tail()}")
        if listeners(port) >= count:
            return
        time.sleep(0.05)
    raise ArmFailed(
        f"{proc.name} did not listen on {port} ({count} socket(s)) within "
        f"{deadline_s:g} s; its output:\n{proc.tail()}"
    )


# --- CPU and memory ------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")
QUIET_PCT = 15.0  # % of one CPU used by others under which the machine counts as quiet


def process_times() -> dict[int, tuple[int, int, str]]:
    """pid -> (process group, CPU ticks used, command name), for every process."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                data = f.read()
        except OSError:
            continue
        end = data.rfind(")")
        fields = data[end + 2 :].split()
        comm = data[data.find("(") + 1 : end]
        out[int(entry.name)] = (int(fields[2]), int(fields[11]) + int(fields[12]), comm)
    return out


@dataclass
class OtherLoad:
    """CPU used by processes that are not the benchmark's (not in its process groups, not
    kernel threads) over a window: approximate (a process that starts and ends inside the
    window is missed), but enough to tell a quiet run from one shared with a test suite."""

    ours: Callable[[], set[int]]
    before: dict[int, tuple[int, int, str]] = field(default_factory=dict)
    started: float = 0.0

    def start(self) -> OtherLoad:
        self.before = process_times()
        self.started = time.monotonic()
        return self

    def stop(self) -> tuple[float, str]:
        """(% of one CPU, the top consumers)."""
        after = process_times()
        wall = max(1e-3, time.monotonic() - self.started)
        ours = self.ours() | {0, os.getpgid(0)}
        by_name: dict[str, int] = {}
        for pid, (pgrp, ticks, comm) in after.items():
            if pgrp in ours:
                continue
            old = self.before.get(pid)
            used = ticks - old[1] if old and old[2] == comm else ticks
            if used > 0:
                by_name[comm] = by_name.get(comm, 0) + used
        pct = {name: 100 * t / CLK_TCK / wall for name, t in by_name.items()}
        top = sorted(pct.items(), key=lambda i: -i[1])[:3]
        return sum(pct.values()), ", ".join(f"{n} {p:.0f}%" for n, p in top if p >= 1)


def machine_busy_ticks() -> int:
    """CPU ticks every CPU of the machine has spent busy so far (all but idle and iowait):
    the server, wrk, nginx, redis-server and the kernel's network work alike."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def group_ticks(proc: Proc | None) -> int:
    """CPU ticks used so far by the live processes of ``proc``'s process group."""
    if proc is None or proc.popen is None:
        return 0
    return sum(t for pgrp, t, _ in process_times().values() if pgrp == proc.pid)


def wait_quiet(ours: Callable[[], set[int]], budget: float) -> float:
    """Wait (at most ``budget`` seconds) until others use < QUIET_PCT of a CPU; the time spent."""
    started = time.monotonic()
    while True:
        load = OtherLoad(ours).start()
        time.sleep(1.0)
        pct, top = load.stop()
        spent = time.monotonic() - started
        if pct < QUIET_PCT or spent >= budget:
            if pct >= QUIET_PCT:
                print(f"   the machine is busy ({pct:.0f}% of a CPU: {top}); going on", flush=True)
            return spent
        print(f"   waiting for a quiet machine ({pct:.0f}% of a CPU: {top})", flush=True)


def rss_kb(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def worker_pids(proc: Proc, workers: int) -> list[int]:
    """The serving processes of ``proc``: itself with one worker, else its group's processes
    other than the supervisor (the group leader)."""
    if proc.popen is None:
        return []
    if workers <= 1:
        return [proc.pid]
    group = [pid for pid, (pgrp, _, _) in process_times().items() if pgrp == proc.pid]
    return sorted(pid for pid in group if pid != proc.pid)


def worker_rss_mb(proc: Proc, workers: int) -> float:
    """Mean RSS of the serving processes, in MB (10^6 bytes)."""
    pids = worker_pids(proc, workers)
    sizes = [rss_kb(pid) for pid in pids]
    sizes = [s for s in sizes if s]
    return sum(sizes) / len(sizes) * 1024 / 1e6 if sizes else 0.0
