"""The benchmark driver (run it through ``bench/run``): starts a canned nginx upstream, then each
arm in turn (direct, nginx proxy_pass, bare aiohttp pass-through, the gateway), measures it with
wrk (saturation RPS, then latency at concurrency 1) and a small streaming client, stops
everything (even on failure) and writes ``bench/RESULTS.md``.

Knobs (environment): BENCH_DURATION, BENCH_LATENCY_DURATION, BENCH_WARMUP,
BENCH_STREAM_DURATION (seconds), BENCH_CONNECTIONS, BENCH_ARMS, BENCH_PIN, BENCH_PROFILE.
See bench/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
RESULTS = BENCH / "RESULTS.md"
PYTHON = ROOT / ".venv" / "bin" / "python"
GATEWAY = ROOT / ".venv" / "bin" / "gateway"
POST_LUA = BENCH / "post.lua"

CHAT_PATH = "/v1/chat/completions"
SSE_PATH = "/sse/v1/chat/completions"  # the canned stream (the gateway's upstream url ends /sse)
REQUEST = {
    "model": "bench-model",
    "messages": [{"role": "user", "content": "Say hello"}],
    "max_tokens": 16,
}
# The gateway's key for this bench, declared as a static key in the generated config (by its
# SHA-256); loopback only, never a secret. bench/post.lua sends the same header.
BENCH_KEY = "sk-bench-loopback-only"
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {BENCH_KEY}"}
STREAM_CHUNKS = 20
LOAD_CPU = "1"  # wrk, the canned nginx, redis and the stream client
SERVER_CPU = "0"  # the one-worker server under test
BOTH_CPUS = "0,1"
STARTUP_DEADLINE = 20.0


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass(frozen=True)
class Settings:
    duration: float = env_float("BENCH_DURATION", 10)
    latency_duration: float = env_float("BENCH_LATENCY_DURATION", 5)
    warmup: float = env_float("BENCH_WARMUP", 2)
    stream_duration: float = env_float("BENCH_STREAM_DURATION", 3)
    connections: int = int(env_float("BENCH_CONNECTIONS", 64))
    arms: tuple[str, ...] = tuple(
        a.strip() for a in os.environ.get("BENCH_ARMS", "").split(",") if a.strip()
    )
    pin: bool = os.environ.get("BENCH_PIN", "1") != "0" and (os.cpu_count() or 1) >= 2
    profile: bool = os.environ.get("BENCH_PROFILE", "0") == "1"


class ArmFailed(Exception):
    """The arm cannot be measured (did not start, answered non-2xx, wrong body...)."""


# --- canned answers ------------------------------------------------------------------------------


def canned_json() -> str:
    answer = {
        "id": "chatcmpl-bench000000000000000000000001",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "system_fingerprint": "fp_bench0001",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! How can I help you today?",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 10, "total_tokens": 19},
    }
    return json.dumps(answer, separators=(",", ":"))


def canned_sse() -> str:
    base = {
        "id": "chatcmpl-bench000000000000000000000001",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
    }
    events = []
    for i in range(STREAM_CHUNKS):
        delta: dict[str, Any] = {"content": f"tok{i} "}
        if i == 0:
            delta = {"role": "assistant", "content": ""}
        finish = "stop" if i == STREAM_CHUNKS - 1 else None
        if finish:
            delta = {}
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        events.append({**base, "choices": [choice]})
    usage = {"prompt_tokens": 9, "completion_tokens": STREAM_CHUNKS - 2, "total_tokens": 27}
    events.append({**base, "choices": [], "usage": usage})
    lines = [f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events]
    return "".join(lines) + "data: [DONE]\n\n"


def nginx_quote(text: str) -> str:
    """A single-quoted nginx string (the canned bodies have no quote, backslash or $)."""
    assert "'" not in text and "\\" not in text and "$" not in text
    return "'" + text.replace("\n", "\\n") + "'"


def nginx_return(name: str, text: str) -> str:
    """``return 200 <text>;`` with the text in variables of < 4 KiB (nginx's token limit)."""
    size = 2048
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    if len(pieces) == 1:
        return f"return 200 {nginx_quote(text)};"
    sets = [f"set ${name}{i} {nginx_quote(p)};" for i, p in enumerate(pieces)]
    joined = "".join(f"${name}{i}" for i in range(len(pieces)))
    return "\n            ".join([*sets, f'return 200 "{joined}";'])


# --- processes -----------------------------------------------------------------------------------


def taskset(cpus: str | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


@dataclass
class Proc:
    name: str
    cmd: list[str]
    log: Path
    crash_marker: str | None = None
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

    def crashed(self) -> bool:
        """The process is alive but a worker of it died (the gateway restarts its workers)."""
        return self.crash_marker is not None and self.crash_marker in self.output()

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


def wait_listening(proc: Proc, port: int, count: int = 1) -> None:
    """Poll until ``count`` sockets listen on ``port``, failing if the process dies first."""
    deadline = time.monotonic() + STARTUP_DEADLINE
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
        f"{STARTUP_DEADLINE:g} s; its output:\n{proc.tail()}"
    )


# --- other load on the machine ------------------------------------------------------------------

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


def post(url: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data, HEADERS, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()
    except OSError as err:
        raise ArmFailed(f"POST {url} failed: {err}") from err


def probe(url: str, proc: Proc | None = None) -> int:
    """One request that must answer 200 with the canned JSON; returns the body size."""
    status, ctype, body = post(url, REQUEST)
    where = f"\n{proc.name} output:\n{proc.tail()}" if proc else ""
    if status != 200:
        raise ArmFailed(f"POST {url} answered {status}: {body[:500]!r}{where}")
    try:
        answer = json.loads(body)
    except ValueError:
        raise ArmFailed(f"POST {url} answered non-JSON ({ctype}): {body[:300]!r}") from None
    if not isinstance(answer, dict) or "usage" not in answer or "choices" not in answer:
        raise ArmFailed(f"POST {url} answered an unexpected body: {body[:300]!r}")
    return len(body)


# --- wrk -----------------------------------------------------------------------------------------

_BENCH_LINE = re.compile(r"^BENCH (.*)$", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: (.*)")


@dataclass
class WrkResult:
    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    socket_errors: str = ""


def wrk(url: str, connections: int, seconds: float, cpus: str | None) -> WrkResult:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(POST_LUA),
        url,
    ]
    try:
        run = subprocess.run(
            taskset(cpus, cmd), capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise ArmFailed(f"wrk ran past its deadline: {' '.join(cmd)}") from err
    out = run.stdout + run.stderr
    match = _BENCH_LINE.search(out)
    if run.returncode != 0 or match is None:
        raise ArmFailed(f"wrk failed ({run.returncode}): {' '.join(cmd)}\n{out}")
    non2xx = _NON2XX.search(out)
    fields = {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    if non2xx or fields["status"]:
        count = non2xx.group(1) if non2xx else int(fields["status"])
        raise ArmFailed(f"{count} non-2xx/3xx responses from {url}:\n{out}")
    if fields["timeout"]:
        raise ArmFailed(f"{int(fields['timeout'])} requests timed out (5 s) on {url}:\n{out}")
    if fields["requests"] == 0:
        raise ArmFailed(f"no request completed on {url}:\n{out}")
    errors = _SOCKET_ERRORS.search(out)
    secs = fields["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        requests=int(fields["requests"]),
        seconds=secs,
        rps=fields["requests"] / secs,
        p50_ms=fields["p50"] / 1000,
        p90_ms=fields["p90"] / 1000,
        p99_ms=fields["p99"] / 1000,
        p999_ms=fields["p999"] / 1000,
        mean_ms=fields["mean"] / 1000,
        max_ms=fields["max"] / 1000,
        socket_errors=errors.group(1).strip() if errors else "",
    )


# --- the streaming client ------------------------------------------------------------------------


@dataclass
class StreamResult:
    streams: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def _stream_client(url: str, body: dict[str, Any], seconds: float) -> StreamResult:
    import aiohttp

    ttfts: list[float] = []
    totals: list[float] = []
    payload = json.dumps(body).encode()
    headers = HEADERS
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        end = time.perf_counter() + seconds
        warm = 20  # the first streams open the connections and warm the caches
        while time.perf_counter() < end or warm > 0:
            start = time.perf_counter()
            first: float | None = None
            data = bytearray()
            async with session.post(url, data=payload, headers=headers) as resp:
                if resp.status != 200:
                    text = await resp.text()
                    raise ArmFailed(f"stream POST {url} answered {resp.status}: {text[:300]}")
                async for chunk in resp.content.iter_any():
                    if first is None and b"data:" in chunk:
                        first = time.perf_counter()
                    data.extend(chunk)
            done = time.perf_counter()
            if not data.rstrip().endswith(b"data: [DONE]") or data.count(b"\n\n") < STREAM_CHUNKS:
                raise ArmFailed(f"stream from {url} is incomplete: {bytes(data[-300:])!r}")
            if warm > 0:
                warm -= 1
                continue
            ttfts.append(((first or done) - start) * 1000)
            totals.append((done - start) * 1000)
    return StreamResult(
        streams=len(totals),
        ttft_p50_ms=statistics.median(ttfts),
        ttft_p99_ms=percentile(ttfts, 99),
        total_p50_ms=statistics.median(totals),
        total_p99_ms=percentile(totals, 99),
    )


def stream_client(url: str, body: dict[str, Any], seconds: float) -> StreamResult:
    import aiohttp
    import uvloop

    async def bounded() -> StreamResult:
        async with asyncio.timeout(seconds + 30):
            return await _stream_client(url, body, seconds)

    try:
        return uvloop.run(bounded())
    except (OSError, TimeoutError, aiohttp.ClientError) as err:
        raise ArmFailed(f"the stream client failed on {url}: {err!r}") from err


# --- arms ----------------------------------------------------------------------------------------


@dataclass
class Arm:
    key: str
    title: str
    workers: int
    start: Callable[[Stack, Run], tuple[str, Proc | None]]  # -> (url, the server process)
    stream: Callable[[str], tuple[str, dict[str, Any]]] | None = None  # base url -> (url, body)

    def cpus(self, settings: Settings) -> tuple[str | None, str | None]:
        """(server CPUs, load CPUs): one-worker arms are pinned apart, two-worker arms float."""
        if not settings.pin:
            return None, None
        if self.workers == 1:
            return SERVER_CPU, LOAD_CPU
        return BOTH_CPUS, BOTH_CPUS


@dataclass
class ArmResult:
    arm: Arm
    pinning: str = ""
    saturation: WrkResult | None = None
    latency: WrkResult | None = None
    stream: StreamResult | None = None
    body_bytes: int = 0
    other_pct: float = 0.0
    cpu_busy: float = 0.0  # the server's CPU seconds per second during saturation
    cpu_us_per_request: float = 0.0  # the server's CPU time per request during saturation
    other_top: str = ""
    profile: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class Run:
    settings: Settings
    dir: Path
    canned_port: int
    server_cpus: str | None = None
    stack: Stack = field(default_factory=Stack)
    arm_stack: Stack = field(default_factory=Stack)
    quiet_budget: float = env_float("BENCH_QUIET_WAIT", 60)

    def our_groups(self) -> set[int]:
        """The process groups of everything the bench started (each Proc leads its own)."""
        return {p.pid for p in [*self.stack.procs, *self.arm_stack.procs] if p.popen}

    def proc(self, name: str, cmd: list[str], cpus: str | None) -> Proc:
        return Proc(name, taskset(cpus, cmd), self.dir / f"{name}.log")


def nginx_conf(prefix: Path, workers: int, servers: str) -> Path:
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = f"""
{user}
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{servers}
}}
"""
    path = prefix / "nginx.conf"
    path.write_text(conf)
    return path


def start_canned(stack: Stack, run: Run, name: str, port: int, cpus: str | None) -> Proc:
    """An nginx (one worker) answering the canned chat.completion and the canned stream."""
    prefix = run.dir / name
    servers = f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = {CHAT_PATH} {{
            default_type application/json;
            {nginx_return("json", canned_json())}
        }}
        location = {SSE_PATH} {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            {nginx_return("sse", canned_sse())}
        }}
    }}"""
    conf = nginx_conf(prefix, 1, servers)
    cmd = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    proc = stack.start(run.proc(name, cmd, cpus))
    wait_listening(proc, port)
    return proc


def start_direct(stack: Stack, run: Run) -> tuple[str, Proc | None]:
    """A twin of the canned upstream where the servers under test run (CPU 0 when pinned), so
    the floor crosses CPUs like every other arm's first hop."""
    port = free_port()
    proc = start_canned(stack, run, "nginx-direct", port, run.server_cpus)
    return f"http://127.0.0.1:{port}", proc


def start_nginx_proxy(workers: int) -> Callable[[Stack, Run], tuple[str, Proc | None]]:
    def start(stack: Stack, run: Run) -> tuple[str, Proc | None]:
        port = free_port()
        prefix = run.dir / f"nginx-proxy-{workers}w"
        servers = f"""
    upstream canned {{ server 127.0.0.1:{run.canned_port}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://canned;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
        conf = nginx_conf(prefix, workers, servers)
        cmd = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        proc = stack.start(run.proc(f"nginx-proxy-{workers}w", cmd, run.server_cpus))
        wait_listening(proc, port)
        return f"http://127.0.0.1:{port}", proc

    return start


def start_passthrough(workers: int) -> Callable[[Stack, Run], tuple[str, Proc | None]]:
    def start(stack: Stack, run: Run) -> tuple[str, Proc | None]:
        port = free_port()
        cmd = [
            str(PYTHON),
            str(BENCH / "passthrough.py"),
            "--port",
            str(port),
            "--upstream",
            f"http://127.0.0.1:{run.canned_port}",
            "--workers",
            str(workers),
        ]
        proc = stack.start(run.proc(f"passthrough-{workers}w", cmd, run.server_cpus))
        wait_listening(proc, port, workers)
        return f"http://127.0.0.1:{port}", proc

    return start


def gateway_config(run: Run, port: int, admin_port: int, workers: int, store: str) -> Path:
    timeouts = {"connect": 5, "first_byte": 30, "idle": 30}
    base = f"http://127.0.0.1:{run.canned_port}"
    config = {
        "listen": {"host": "127.0.0.1", "port": port, "workers": workers, "drain_timeout": 1},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "store": {"url": store},
        "upstreams": {
            "canned": {"url": base, "max_concurrency": 4096, "timeouts": timeouts},
            "canned-sse": {"url": base + "/sse", "max_concurrency": 4096, "timeouts": timeouts},
        },
        "models": {
            "bench-model": {"upstreams": ["canned"]},
            "bench-stream": {"upstreams": ["canned-sse"]},
        },
        # One static key whose owner's plan has no limits: the ungoverned arm still
        # authenticates and admits every request, but never refuses one.
        "keys": {
            "static": [
                {
                    "id": "bench",
                    "owner": "bench",
                    "sha256": hashlib.sha256(BENCH_KEY.encode()).hexdigest(),
                    "name": "bench key",
                }
            ]
        },
        "plans": {"bench": {"max_keys": None, "monthly_tokens": None, "rpm": None}},
        "default_plan": "bench",
        "log": {"level": "warning", "access": False},
    }
    path = run.dir / f"gateway-{workers}w.yaml"
    path.write_text(
        "# Generated by bench/driver.py for one benchmark run.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return path


def start_gateway(workers: int) -> Callable[[Stack, Run], tuple[str, Proc | None]]:
    def start(stack: Stack, run: Run) -> tuple[str, Proc | None]:
        port, admin_port = free_port(), free_port()
        store = "memory://"
        if workers > 1:
            redis_port = free_port()
            cmd = [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            redis = stack.start(run.proc("redis", cmd, None))
            wait_listening(redis, redis_port)
            store = f"redis://127.0.0.1:{redis_port}/0"
        config = gateway_config(run, port, admin_port, workers, store)
        cmd = [str(GATEWAY), "run", "--config", str(config)]
        proc = run.proc(f"gateway-{workers}w", cmd, run.server_cpus)
        proc.crash_marker = '"msg":"worker failed"'
        stack.start(proc)
        wait_listening(proc, port, workers)
        return f"http://127.0.0.1:{port}", proc

    return start


def stream_raw(base: str) -> tuple[str, dict[str, Any]]:
    return base + SSE_PATH, {**REQUEST, "stream": True}


def stream_gateway(base: str) -> tuple[str, dict[str, Any]]:
    return base + CHAT_PATH, {**REQUEST, "model": "bench-stream", "stream": True}


ARMS = [
    Arm("direct", "direct (wrk → canned nginx)", 1, start_direct, stream_raw),
    Arm("nginx-1w", "nginx proxy_pass, 1 worker", 1, start_nginx_proxy(1)),
    Arm("passthrough-1w", "aiohttp pass-through, 1 worker", 1, start_passthrough(1), stream_raw),
    Arm("gateway-1w", "gateway, 1 worker", 1, start_gateway(1), stream_gateway),
    Arm("nginx-2w", "nginx proxy_pass, 2 workers", 2, start_nginx_proxy(2)),
    Arm("passthrough-2w", "aiohttp pass-through, 2 workers", 2, start_passthrough(2)),
    Arm("gateway-2w", "gateway, 2 workers (redis store)", 2, start_gateway(2)),
]


def measure(run: Run, arm: Arm) -> ArmResult:
    settings = run.settings
    result = ArmResult(arm)
    server_cpus, load_cpus = arm.cpus(settings)
    run.server_cpus = server_cpus
    result.pinning = f"server {server_cpus or 'any'}, wrk {load_cpus or 'any'}"
    print(f"\n== {arm.title} [{result.pinning}]", flush=True)
    if run.quiet_budget > 0:
        run.quiet_budget -= wait_quiet(run.our_groups, min(20.0, run.quiet_budget))
    with Stack() as stack:
        run.arm_stack = stack
        other = OtherLoad(run.our_groups)
        try:
            proc = None
            base, proc = arm.start(stack, run)
            other.start()
            url = base + CHAT_PATH
            result.body_bytes = probe(url, proc)
            wrk(url, settings.connections, settings.warmup, load_cpus)
            ticks = group_ticks(proc)
            started = time.monotonic()
            sat = wrk(url, settings.connections, settings.duration, load_cpus)
            cpu = (group_ticks(proc) - ticks) / CLK_TCK
            result.saturation = sat
            result.cpu_busy = cpu / (time.monotonic() - started)
            result.cpu_us_per_request = cpu / sat.requests * 1e6
            print(
                f"   saturation c{sat.connections}: {sat.rps:,.0f} req/s; server CPU "
                f"{result.cpu_busy:.0%} of a core, {result.cpu_us_per_request:.0f} µs/request",
                flush=True,
            )
            lat = wrk(url, 1, settings.latency_duration, load_cpus)
            result.latency = lat
            print(f"   c1: p50 {lat.p50_ms:.3f} ms  p99 {lat.p99_ms:.3f} ms", flush=True)
            if arm.stream is not None:
                s_url, s_body = arm.stream(base)
                result.stream = stream_client(s_url, s_body, settings.stream_duration)
                s = result.stream
                print(
                    f"   stream c1: ttft p50 {s.ttft_p50_ms:.3f} ms, total p50 "
                    f"{s.total_p50_ms:.3f} ms ({s.streams} streams)",
                    flush=True,
                )
            if proc is not None and (not proc.alive() or proc.crashed()):
                raise ArmFailed(f"{proc.name} died during the run:\n{proc.tail()}")
        except ArmFailed as err:
            result.error = str(err)
            print(f"   FAILED: {err}", file=sys.stderr, flush=True)
        if other.started:
            result.other_pct, result.other_top = other.stop()
            if result.other_pct >= QUIET_PCT:
                print(
                    f"   other processes used {result.other_pct:.0f}% of a CPU meanwhile "
                    f"({result.other_top}): these figures are disturbed",
                    flush=True,
                )
        if settings.profile and arm.key == "gateway-1w" and proc is not None and not result.error:
            try:
                result.profile = profile(run, proc, url, load_cpus)
            except ArmFailed as err:
                print(f"   profile failed: {err}", file=sys.stderr, flush=True)
    return result


def profile(run: Run, proc: Proc, url: str, load_cpus: str | None) -> list[str]:
    """A py-spy profile of the gateway under saturation (separate from the measured run)."""
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not Path(spy).exists():
        print("   (BENCH_PROFILE: py-spy is not installed; pip install py-spy)", flush=True)
        return []
    seconds = max(3, round(run.settings.duration))
    raw = run.dir / "gateway-1w.pyspy.txt"
    cmd = [spy, "record", "-p", str(proc.pid), "-d", str(seconds), "-r", "250", "--nonblocking"]
    with Stack() as stack:
        spy_proc = stack.start(
            Proc("py-spy", [*cmd, "-f", "raw", "-o", str(raw)], run.dir / "py-spy.log")
        )
        wrk(url, run.settings.connections, seconds + 1, load_cpus)
        with contextlib.suppress(subprocess.TimeoutExpired):
            assert spy_proc.popen is not None
            spy_proc.popen.wait(15)
    print(f"   profile (collapsed stacks): {raw}", flush=True)
    summary = summarize_profile(raw)
    for line in summary:
        print("   " + line, flush=True)
    return summary


_LINE = re.compile(r":\d+\)$")
_OUTER = re.compile(r"gateway/(cli|workers)\.py|^<module>")


def summarize_profile(raw: Path) -> list[str]:
    """Own-time per function and inclusive time per gateway function, from collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
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
    if not total:
        return []
    out = ["own time:"]
    out += [f"  {n / total:6.1%} {f}" for f, n in sorted(own.items(), key=lambda i: -i[1])[:12]]
    out.append("inclusive, gateway code:")
    top = sorted(inclusive.items(), key=lambda i: -i[1])[:12]
    out += [f"  {n / total:6.1%} {f}" for f, n in top]
    return out


# --- facts and the report ------------------------------------------------------------------------


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


def by_key(results: list[ArmResult]) -> dict[str, ArmResult]:
    return {r.arm.key: r for r in results}


def ratios(results: list[ArmResult]) -> list[tuple[str, str, str, str]]:
    """(measure, value, target, verdict) rows."""
    r = by_key(results)
    rows: list[tuple[str, str, str, str]] = []

    def sat(key: str) -> float | None:
        x = r.get(key)
        return x.saturation.rps if x and x.saturation else None

    def lat(key: str) -> WrkResult | None:
        x = r.get(key)
        return x.latency if x else None

    def missing(*keys: str) -> str:
        return "FAILED" if any(k in r and r[k].error for k in keys) else "not run"

    for w in (1, 2):
        g, p = sat(f"gateway-{w}w"), sat(f"passthrough-{w}w")
        name = f"gateway / pass-through RPS, {w} worker{'s' if w > 1 else ''}"
        if g and p:
            rows.append((name, f"{g / p:.2f}", "≥ 0.80", "PASS" if g / p >= 0.8 else "MISS"))
        else:
            rows.append((name, "n/a", "≥ 0.80", missing(f"gateway-{w}w", f"passthrough-{w}w")))
    for w in (1, 2):
        g_arm, p_arm = r.get(f"gateway-{w}w"), r.get(f"passthrough-{w}w")
        if g_arm and p_arm and g_arm.cpu_us_per_request and p_arm.cpu_us_per_request:
            ratio = p_arm.cpu_us_per_request / g_arm.cpu_us_per_request
            rows.append(
                (
                    f"pass-through / gateway CPU per request, {w} worker{'s' if w > 1 else ''} "
                    "(steadier under other load)",
                    f"{ratio:.2f}",
                    "≥ 0.80",
                    "PASS" if ratio >= 0.8 else "MISS",
                )
            )
    gl, dl, pl = lat("gateway-1w"), lat("direct"), lat("passthrough-1w")
    if gl and dl:
        added = gl.p50_ms - dl.p50_ms
        verdict = "PASS" if added <= 0.5 else "MISS"
        rows.append(("gateway added p50 (c1, vs direct)", f"{added:.3f} ms", "≤ 0.5 ms", verdict))
        added99 = gl.p99_ms - dl.p99_ms
        rows.append(("gateway added p99 (c1, vs direct)", f"{added99:.3f} ms", "—", "info"))
    else:
        verdict = missing("gateway-1w", "direct")
        rows.append(("gateway added p50 (c1, vs direct)", "n/a", "≤ 0.5 ms", verdict))
    if gl and pl:
        rows.append(
            (
                "gateway - pass-through p50 / p99 (c1)",
                f"{gl.p50_ms - pl.p50_ms:.3f} / {gl.p99_ms - pl.p99_ms:.3f} ms",
                "—",
                "info",
            )
        )
    return rows


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def arm_table(results: list[ArmResult]) -> list[str]:
    direct = by_key(results).get("direct")
    d = direct.latency if direct else None
    out = [
        "| arm | pinning | sat. RPS | sat. p50 / p99 ms | server CPU | CPU µs/req | c1 p50 ms "
        "| c1 p99 ms | added p50 ms | added p99 ms | c1 RPS | other load | status |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        s, lat = r.saturation, r.latency
        added50 = lat.p50_ms - d.p50_ms if lat and d else None
        added99 = lat.p99_ms - d.p99_ms if lat and d else None
        status = "ok" if not r.error else "**FAILED**"
        if lat and lat.socket_errors:
            status += f" (socket errors: {lat.socket_errors})"
        if s and s.socket_errors:
            status += f" (socket errors: {s.socket_errors})"
        out.append(
            f"| {r.arm.title} | {r.pinning} "
            f"| {f'{s.rps:,.0f}' if s else '—'} "
            f"| {fmt(s and s.p50_ms, 2)} / {fmt(s and s.p99_ms, 2)} "
            f"| {f'{r.cpu_busy:.0%}' if s else '—'} "
            f"| {f'{r.cpu_us_per_request:.0f}' if s else '—'} "
            f"| {fmt(lat and lat.p50_ms)} | {fmt(lat and lat.p99_ms)} "
            f"| {fmt(added50)} | {fmt(added99)} "
            f"| {f'{lat.rps:,.0f}' if lat else '—'} "
            f"| {r.other_pct:.0f}%{' ⚠' if r.other_pct >= QUIET_PCT else ''} | {status} |"
        )
    return out


def stream_table(results: list[ArmResult]) -> list[str]:
    rows = [r for r in results if r.stream]
    if not rows:
        return []
    out = [
        "| arm | streams | TTFT p50 ms | TTFT p99 ms | whole stream p50 ms | whole stream p99 ms |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        s = r.stream
        assert s is not None
        out.append(
            f"| {r.arm.title} | {s.streams} | {s.ttft_p50_ms:.3f} | {s.ttft_p99_ms:.3f} "
            f"| {s.total_p50_ms:.3f} | {s.total_p99_ms:.3f} |"
        )
    return out


def history_line(when: str, info: dict[str, str], results: list[ArmResult]) -> str:
    r = by_key(results)
    parts = []
    for key in ("gateway-1w", "gateway-2w"):
        g, p = r.get(key), r.get(key.replace("gateway", "passthrough"))
        if g and p and g.saturation and p.saturation:
            g_cpu, p_cpu = g.cpu_us_per_request, p.cpu_us_per_request
            parts.append(
                f"{key} {g.saturation.rps:,.0f} req/s = {g.saturation.rps / p.saturation.rps:.2f}"
                f" x pass-through (CPU/req {g_cpu:.0f} vs {p_cpu:.0f} µs = "
                f"{p_cpu / g_cpu if g_cpu else 0:.2f})"
            )
        elif g:
            parts.append(f"{key} FAILED")
    g, d = r.get("gateway-1w"), r.get("direct")
    if g and d and g.latency and d.latency:
        parts.append(
            f"added p50 {g.latency.p50_ms - d.latency.p50_ms:.3f} ms, "
            f"p99 {g.latency.p99_ms - d.latency.p99_ms:.3f} ms"
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


def report(settings: Settings, info: dict[str, str], results: list[ArmResult], took: float) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body_bytes = next((r.body_bytes for r in results if r.body_bytes), len(canned_json()))
    pin = (
        f"one-worker arms (and direct): server on CPU {SERVER_CPU}; wrk, the canned nginx and "
        f"the stream client on CPU {LOAD_CPU}; two-worker arms: server and wrk unpinned (the "
        f"canned nginx stays on CPU {LOAD_CPU})"
        if settings.pin
        else "none (BENCH_PIN=0 or fewer than 2 CPUs)"
    )
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
        "",
        "## Method",
        "",
        f"- Every arm answers `POST /v1/chat/completions` with the same canned chat.completion "
        f"({body_bytes} bytes, with `usage`) served by one nginx worker (`return 200`).",
        "- Request: `" + json.dumps(REQUEST, separators=(",", ":")) + "`, "
        "`Content-Type: application/json` (bench/post.lua).",
        f"- Per arm: a probe (must be 200 with the canned JSON), {settings.warmup:g} s warm-up, "
        f"saturation `wrk -t1 -c{settings.connections} -d{settings.duration:g}s`, then latency "
        f"at concurrency 1 `wrk -t1 -c1 -d{settings.latency_duration:g}s` (p50/p99 from wrk's "
        "Lua `latency:percentile`). Any non-2xx answer or timeout fails the arm.",
        f"- Pinning (taskset): {pin}.",
        "- Added latency = arm - direct, both at concurrency 1.",
        f"- Streaming: a Python aiohttp client at concurrency 1 for {settings.stream_duration:g} s "
        f"(after 20 warm-up streams) against a canned SSE answer of {STREAM_CHUNKS} "
        "chat.completion.chunk events + a usage chunk + `data: [DONE]` "
        f"({len(canned_sse())} bytes, sent by nginx in one piece). TTFT = time to the first "
        "chunk holding `data:`. The gateway's model `bench-stream` points at the SSE location.",
        "- The gateway runs `log: {level: warning, access: false}` with one static key "
        "(`Authorization: Bearer`, sent to every arm) whose owner's plan has no limits, so it "
        "authenticates and admits (and settles) every request but refuses none; 1 worker with "
        "`memory://`, 2 workers with a local `redis://` store (a `redis-server` of its own).",
        "",
        "## Results",
        "",
        *arm_table(results),
        "",
    ]
    streams = stream_table(results)
    if streams:
        lines += ["### Streaming (concurrency 1)", "", *streams, ""]
    lines += [
        "## Against the targets",
        "",
        "| measure | value | target | verdict |",
        "|---|--:|--:|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in ratios(results)],
        "",
        "## Notes",
        "",
        "- The direct arm is a twin of the canned nginx placed where the servers under test run, "
        "so its wrk → server hop crosses CPUs like every other arm's. Its RPS is bounded by "
        "wrk's single thread: it is the latency floor, not a throughput ceiling.",
        f"- {settings.connections} connections saturate every Python arm (a one-worker server is "
        "CPU-bound on its core from about 16 connections on; a sweep of 8-256 found the "
        "pass-through's plateau from 16 to 128, with more connections only adding queueing "
        "latency). Override with BENCH_CONNECTIONS.",
        "- Two-worker arms float over both CPUs with wrk and the canned nginx (which stays on "
        f"CPU {LOAD_CPU}), so they cannot double the one-worker figure.",
        "- *other load*: CPU used meanwhile by processes that are not the bench's (in % of one "
        f"CPU; ⚠ from {QUIET_PCT:g}%). Before each arm the driver waits (up to 20 s, 60 s per "
        "run) for the machine to be quiet, e.g. for someone's test suite to finish. Figures "
        "of a ⚠ arm are disturbed: run again.",
        "- *server CPU* and *CPU µs/req*: user + system CPU of the server's processes (all "
        "workers) during the saturation run, from /proc, per second and per request. Other "
        "load on the machine steals throughput more than it inflates CPU per request: on a "
        "shared machine the CPU-per-request ratio is the steadier measure of the gateway's "
        "cost (it matches the RPS ratio when the server is CPU-bound, i.e. server CPU ≈ 100% "
        "per worker), though not immune (the two CPUs may be hyper-threads of one core).",
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
        if r.error:
            lines += ["", f"### {r.arm.title} FAILED", "", "```", r.error.strip()[-4000:], "```"]
    history = [*previous_history(), history_line(when, info, results)]
    lines += ["", "## History", "", *history, ""]
    return "\n".join(lines)


def print_summary(results: list[ArmResult]) -> None:
    print("\n" + "\n".join(arm_table(results)))
    streams = stream_table(results)
    if streams:
        print("\n" + "\n".join(streams))
    print()
    for a, b, c, d in ratios(results):
        print(f"{a:42} {b:>18}  target {c:9} {d}")


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


def main() -> int:
    settings = Settings()
    arms = [a for a in ARMS if not settings.arms or a.key in settings.arms]
    if not arms:
        print(f"BENCH_ARMS matches no arm; arms: {', '.join(a.key for a in ARMS)}")
        return 2
    started = time.monotonic()
    run_dir = WORK / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    info = facts()
    if settings.pin:
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # the stream client runs in this process
    run = Run(settings, run_dir, free_port())
    results: list[ArmResult] = []
    with terminate_on_sigterm(), run.stack:
        try:
            cpus = LOAD_CPU if settings.pin else None
            canned = start_canned(run.stack, run, "nginx-canned", run.canned_port, cpus)
            probe(f"http://127.0.0.1:{run.canned_port}{CHAT_PATH}", canned)
        except ArmFailed as err:
            print(f"the canned upstream did not start: {err}", file=sys.stderr)
            return 1
        for arm in arms:
            results.append(measure(run, arm))
    took = time.monotonic() - started
    print_summary(results)
    if settings.arms:
        print("\nBENCH_ARMS is set: bench/RESULTS.md is left as it was.")
    else:
        RESULTS.write_text(report(settings, info, results, took))
        print(f"\nwrote {RESULTS.relative_to(ROOT)} ({took:.0f} s)")
    failed = [r.arm.key for r in results if r.error]
    if failed:
        print(f"FAILED arms: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
