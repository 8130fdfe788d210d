"""The arms: what answers the load (nginx twins and proxies, the bare aiohttp pass-through, the
gateway light and governed) and how each is started on free loopback ports."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from common import (
    BENCH,
    BENCH_KEY,
    BOTH_CPUS,
    CAPPED_SLOTS,
    CHAT_PATH,
    GATEWAY,
    GOVERNED_CONCURRENCY,
    GOVERNED_RPM,
    GOVERNED_TOKENS,
    LOAD_CPU,
    PYTHON,
    REQUEST,
    SERVER_CPU,
    SSE_PATH,
    Settings,
    canned_json,
    canned_sse,
    env_float,
)
from procs import Proc, Stack, free_port, taskset, wait_listening


@dataclass
class Server:
    """A started arm: where to send requests and what to watch."""

    url: str
    proc: Proc | None
    workers: int = 1
    redis_port: int | None = None
    admin_url: str | None = None


@dataclass
class Run:
    settings: Settings
    dir: Path
    canned_port: int
    paced_port: int = 0
    server_cpus: str | None = None
    load_cpus: str | None = None
    stack: Stack = field(default_factory=Stack)
    arm_stack: Stack = field(default_factory=Stack)
    quiet_budget: float = env_float("BENCH_QUIET_WAIT", 60)

    def our_groups(self) -> set[int]:
        """The process groups of everything the bench started (each Proc leads its own)."""
        return {p.pid for p in [*self.stack.procs, *self.arm_stack.procs] if p.popen}

    def proc(self, name: str, cmd: list[str], cpus: str | None) -> Proc:
        return Proc(name, taskset(cpus, cmd), self.dir / f"{name}.log")


Starter = Callable[[Stack, Run], Server]


@dataclass
class Arm:
    key: str
    title: str
    workers: int
    start: Starter
    stream: Callable[[str], tuple[str, dict[str, Any]]] | None = None  # base url -> (url, body)
    kind: str = "wrk"  # "wrk": saturation + c1 (+ streams at c1); "paced": 512 paced streams
    governed: bool = False  # every limit set, access log on, Redis costs checked
    optional: bool = False  # a failure is reported, but does not fail the run (LiteLLM)
    profile: bool = False  # BENCH_PROFILE=1 profiles it with py-spy

    def cpus(self, settings: Settings) -> tuple[str | None, str | None]:
        """(server CPUs, load CPUs): one-worker arms are pinned apart, two-worker arms float."""
        if not settings.pin:
            return None, None
        if self.workers == 1:
            return SERVER_CPU, LOAD_CPU
        return BOTH_CPUS, BOTH_CPUS


# --- nginx ---------------------------------------------------------------------------------------


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


def start_direct(stack: Stack, run: Run) -> Server:
    """A twin of the canned upstream where the servers under test run (CPU 0 when pinned), so
    the floor crosses CPUs like every other arm's first hop."""
    port = free_port()
    proc = start_canned(stack, run, "nginx-direct", port, run.server_cpus)
    return Server(f"http://127.0.0.1:{port}", proc)


def start_nginx_proxy(workers: int) -> Starter:
    def start(stack: Stack, run: Run) -> Server:
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
        return Server(f"http://127.0.0.1:{port}", proc, workers)

    return start


# --- the bare aiohttp pass-through ---------------------------------------------------------------


def start_passthrough(workers: int, upstream: str = "canned") -> Starter:
    """``upstream``: "canned" (nginx) or "paced" (bench/paced_upstream.py)."""

    def start(stack: Stack, run: Run) -> Server:
        port = free_port()
        target = run.canned_port if upstream == "canned" else run.paced_port
        cmd = [
            str(PYTHON),
            str(BENCH / "passthrough.py"),
            "--port",
            str(port),
            "--upstream",
            f"http://127.0.0.1:{target}",
            "--workers",
            str(workers),
        ]
        name = f"passthrough-{workers}w" + ("" if upstream == "canned" else f"-{upstream}")
        proc = stack.start(run.proc(name, cmd, run.server_cpus))
        wait_listening(proc, port, workers)
        return Server(f"http://127.0.0.1:{port}", proc, workers)

    return start


# --- the gateway ---------------------------------------------------------------------------------


def start_redis(stack: Stack, run: Run, name: str, cpus: str | None) -> int:
    """A redis-server of the arm's own (no persistence); its port."""
    port = free_port()
    cmd = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    proc = stack.start(run.proc(name, cmd, cpus))
    wait_listening(proc, port)
    return port


# The budgeted governed arm: tokens per minute and money budgets on the key and the plan, priced
# models; as the other limits, far above what a run uses (~10^7 tokens and ~$10 a minute).
BUDGET_TPM = 10**12
BUDGET_USD = 10.0**9
BUDGET_PRICING = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}


def budget_limits(key: dict[str, Any], plan: dict[str, Any], models: dict[str, Any]) -> None:
    """Add TPM and budgets to the governed key and plan, and prices to every model."""
    key |= {
        "tpm_limit": BUDGET_TPM,
        "daily_budget_usd": BUDGET_USD,
        "monthly_budget_usd": BUDGET_USD,
    }
    plan |= {"tpm": BUDGET_TPM, "monthly_budget_usd": BUDGET_USD}
    for model in models.values():
        model["pricing"] = dict(BUDGET_PRICING)


def gateway_config(
    run: Run,
    name: str,
    port: int,
    admin_port: int,
    workers: int,
    store: str,
    governed: bool,
    budget: bool = False,
    capped: bool = False,
) -> Path:
    timeouts: dict[str, Any] = {"connect": 5, "first_byte": 30, "idle": 30}
    base = f"http://127.0.0.1:{run.canned_port}"
    # No max_concurrency but on the capped arm: a set cap is counted across processes (a lease
    # in the store per request), which governed-capped-1w measures against governed-1w.
    cap: dict[str, Any] = {"max_concurrency": CAPPED_SLOTS} if capped else {}
    upstreams: dict[str, Any] = {
        "canned": {"url": base, "timeouts": timeouts, **cap},
        "canned-sse": {"url": base + "/sse", "timeouts": timeouts, **cap},
    }
    models: dict[str, Any] = {
        "bench-model": {"upstreams": ["canned"]},
        "bench-stream": {"upstreams": ["canned-sse"]},
    }
    if run.paced_port:
        paced = f"http://127.0.0.1:{run.paced_port}"
        upstreams["paced"] = {"url": paced, "timeouts": timeouts}
        models["bench-paced"] = {"upstreams": ["paced"]}
    key: dict[str, Any] = {
        "id": "bench",
        "owner": "bench",
        "sha256": hashlib.sha256(BENCH_KEY.encode()).hexdigest(),
        "name": "bench key",
    }
    if governed:
        # Every limit set, none reached during a run: the full admission and settlement work.
        key |= {
            "ip_whitelist": ["127.0.0.0/8"],
            "rpm_limit": GOVERNED_RPM,
            "max_concurrency": GOVERNED_CONCURRENCY,
            "daily_limit": GOVERNED_TOKENS,
            "monthly_limit": GOVERNED_TOKENS,
        }
        plan = {"max_keys": None, "monthly_tokens": GOVERNED_TOKENS, "rpm": GOVERNED_RPM}
        if budget:
            budget_limits(key, plan, models)
    else:
        # The owner's plan has no limits: the light arm still authenticates and admits (and
        # settles) every request.
        plan = {"max_keys": None, "monthly_tokens": None, "rpm": None}
    config = {
        "listen": {"host": "127.0.0.1", "port": port, "workers": workers, "drain_timeout": 1},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "store": {"url": store},
        "upstreams": upstreams,
        "models": models,
        "keys": {"static": [key]},
        "plans": {"bench": plan},
        "default_plan": "bench",
        "log": {"level": "warning", "access": governed},
    }
    path = run.dir / f"{name}.yaml"
    path.write_text(
        "# Generated by bench/driver.py for one benchmark run.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return path


def start_gateway(
    workers: int,
    governed: bool = False,
    name: str | None = None,
    budget: bool = False,
    capped: bool = False,
) -> Starter:
    """1 light worker on memory://; 2 light workers or any governed arm on a redis:// store
    served by a redis-server of the arm's own (on the load CPU for one-worker arms)."""
    label = name or f"{'governed' if governed else 'gateway'}-{workers}w"

    def start(stack: Stack, run: Run) -> Server:
        port, admin_port = free_port(), free_port()
        store, redis_port = "memory://", None
        if workers > 1 or governed:
            cpus = run.load_cpus if workers == 1 else None
            redis_port = start_redis(stack, run, f"{label}-redis", cpus)
            store = f"redis://127.0.0.1:{redis_port}/0"
        config = gateway_config(
            run, label, port, admin_port, workers, store, governed, budget, capped
        )
        cmd = [str(GATEWAY), "run", "--config", str(config)]
        proc = run.proc(label, cmd, run.server_cpus)
        proc.crash_marker = '"msg":"worker failed"'
        stack.start(proc)
        wait_listening(proc, port, workers)
        return Server(
            f"http://127.0.0.1:{port}",
            proc,
            workers,
            redis_port=redis_port,
            admin_url=f"http://127.0.0.1:{admin_port}",
        )

    return start


def stream_raw(base: str) -> tuple[str, dict[str, Any]]:
    return base + SSE_PATH, {**REQUEST, "stream": True}


def stream_gateway(base: str) -> tuple[str, dict[str, Any]]:
    return base + CHAT_PATH, {**REQUEST, "model": "bench-stream", "stream": True}


def wrk_arms() -> list[Arm]:
    return [
        Arm("direct", "direct (wrk → canned nginx)", 1, start_direct, stream_raw),
        Arm("nginx-1w", "nginx proxy_pass, 1 worker", 1, start_nginx_proxy(1)),
        Arm(
            "passthrough-1w", "aiohttp pass-through, 1 worker", 1, start_passthrough(1), stream_raw
        ),
        Arm(
            "gateway-1w",
            "gateway, 1 worker (memory)",
            1,
            start_gateway(1),
            stream_gateway,
            profile=True,
        ),
        Arm(
            "governed-1w",
            "gateway governed, 1 worker (redis)",
            1,
            start_gateway(1, governed=True),
            stream_gateway,
            governed=True,
            profile=True,
        ),
        Arm(
            "governed-budget-1w",
            "gateway governed with TPM and budgets, 1 worker (redis)",
            1,
            start_gateway(1, governed=True, name="governed-budget-1w", budget=True),
            stream_gateway,
            governed=True,
        ),
        Arm(
            "governed-capped-1w",
            "gateway governed, its upstreams capped (never full), 1 worker (redis)",
            1,
            start_gateway(1, governed=True, name="governed-capped-1w", capped=True),
            stream_gateway,
            governed=True,
        ),
    ]


def wrk_arms_2w() -> list[Arm]:
    return [
        Arm("nginx-2w", "nginx proxy_pass, 2 workers", 2, start_nginx_proxy(2)),
        Arm("passthrough-2w", "aiohttp pass-through, 2 workers", 2, start_passthrough(2)),
        Arm("gateway-2w", "gateway, 2 workers (redis)", 2, start_gateway(2)),
        Arm(
            "governed-2w",
            "gateway governed, 2 workers (redis)",
            2,
            start_gateway(2, governed=True),
            stream_gateway,
            governed=True,
        ),
    ]
