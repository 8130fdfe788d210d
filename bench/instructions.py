"""Instructions per request under callgrind: the hot path's cost as a count, not a time.

    .venv/bin/python bench/instructions.py [COMMIT|DIR ...] [--requests N] [--governed|--capped]
    .venv/bin/python bench/instructions.py [COMMIT|DIR ...] --apis [--requests N]
    .venv/bin/python bench/instructions.py --passthrough [--requests N]

Wall-clock pairs drift ±10 % on a shared 2-CPU machine; the number of instructions a request
costs does not (two runs of one commit agree within 0.1 %). For each commit (checked out in a
worktree under bench/.work/) or directory (a source tree as it is, uncommitted changes
included; ``.`` by default) the gateway-1w config (memory store, one static key, a plan without
limits, access log off) runs as one worker under ``valgrind --tool=callgrind`` with
instrumentation off; after 600 warm-up requests it is switched on for ``--requests`` chat
requests over 8 keep-alive connections, then the count is dumped. The canned upstream and the
client are plain asyncio on CPU 1, outside valgrind; only the gateway is counted. One line per
source: ``<label> <commit> Ir/request: N``. ``--governed``: governed-1w's config (a Redis store
of its own, every limit, the access log); ``--capped``: governed-capped-1w's (the same, the
upstream capped: a capacity lease per request), to set against ``--governed``;
``--passthrough``: the baseline itself, ``bench/passthrough.py`` (aiohttp, one worker) before the
same upstream and client, counted the same way (no source: it is the bench's own).

``--apis``: the Responses API (translate mode) beside chat, as ``bench/apis.py`` pairs them but
counted: ``bench/apis.py``'s governed config (a Redis store of its own, every limit, the access
log) and its canned upstream (``bench/dialects_upstream.py``: the canned 18-token answer whole,
or its 22-event stream in one piece); chat and Responses, whole and streamed, the same
conversation, in one gateway process, each batch (``--requests``, 500 by default) dumped apart,
the four batches run twice in mirrored order (the two counts of one batch agree within 1 to 2 %:
how requests share the Redis lane moves them a little). One line per batch, then the ratios
Responses / chat of the two counts' means (target: at most 1.15, issue 15).

Needs valgrind (``apt-get install valgrind``). About a minute per source.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import apis as bench_apis  # noqa: E402
from bench.dialects import OPENAI  # noqa: E402
from bench.responses import RESPONSES  # noqa: E402

WORK = ROOT / "bench" / ".work" / "instructions"
KEY = "sk-bench-loopback-only"
BODY = b'{"model":"bench-model","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"bench-model",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I '
    b'help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":7,'
    b'"total_tokens":16}}'
)
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


PORT, ADMIN, UPSTREAM = free_port(), free_port(), free_port()


def config(redis_port: int | None, capped: bool = False) -> Path:
    """gateway-1w's config; with ``redis_port``, governed-1w's (every limit set, none reached,
    the access log on); ``capped``: governed-capped-1w's (the upstream's ``max_concurrency`` a
    global cap never reached: a lease in Redis per request, no queue)."""
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    key: dict[str, object] = {"id": "bench", "owner": "bench", "sha256": digest}
    plan: dict[str, object] = {"max_keys": None, "monthly_tokens": None, "rpm": None}
    if redis_port is not None:
        key |= {"ip_whitelist": ["127.0.0.0/8"], "rpm_limit": 10**8, "max_concurrency": 10**5}
        key |= {"daily_limit": 10**12, "monthly_limit": 10**12}
        plan |= {"monthly_tokens": 10**12, "rpm": 10**8}
    limits = {"connect": 5, "first_byte": 30, "idle": 30}
    upstream: dict[str, object] = {"url": f"http://127.0.0.1:{UPSTREAM}", "timeouts": limits}
    if capped:
        upstream["max_concurrency"] = 4096
    text = yaml.safe_dump(
        {
            "listen": {"host": "127.0.0.1", "port": PORT, "workers": 1, "drain_timeout": 1},
            "admin": {"host": "127.0.0.1", "port": ADMIN},
            # a gateway under callgrind runs ~50x slower: the store's default 250 ms would fail
            # calls at the instrumentation switch (503 store_unavailable), as bench/apis.py's 2 s
            # does not
            "store": {
                "url": f"redis://127.0.0.1:{redis_port}" if redis_port else "memory://",
                "timeout_ms": 2000,
            },
            "upstreams": {"canned": upstream},
            "models": {"bench-model": {"upstreams": ["canned"]}},
            "keys": {"static": [key]},
            "plans": {"bench": plan},
            "default_plan": "bench",
            "log": {"level": "warning", "access": redis_port is not None},
        },
        sort_keys=False,
    )
    path = WORK / "gateway.yaml"
    path.write_text(text)
    return path


class Canned(asyncio.Protocol):
    """The upstream: one fixed chat answer per request, keep-alive."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(HEAD % len(ANSWER) + ANSWER)


def post(path: str, body: bytes, key: str = KEY) -> bytes:
    """One keep-alive POST of ``body`` (JSON) to ``path``, as bytes."""
    return (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer %s\r\n"
        b"Content-Length: %d\r\n\r\n%s"
    ) % (path.encode(), key.encode(), len(body), body)


async def answer(reader: asyncio.StreamReader) -> bytes:
    """One answer's body (by its length, or its chunks); any status but 200 stops the run."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"the gateway answered {head[:40]!r}")
    lines = head.lower().split(b"\r\n")
    if b"transfer-encoding: chunked" in lines:
        parts = []
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            parts.append((await reader.readexactly(size + 2))[:-2])
        await reader.readexactly(2)
        return b"".join(parts)
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:"))
    return await reader.readexactly(length)


async def drive(count: int, connections: int = 8, request: bytes | None = None) -> None:
    """``count`` requests (chat's, or ``request``) over keep-alive connections; any answer but
    200, or an answer cut short, stops the run."""
    request = request or post("/v1/chat/completions", BODY)
    left = [count]

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        while left[0] > 0:
            left[0] -= 1
            writer.write(request)
            body = await answer(reader)
            if not (body.endswith((b"}", b"[DONE]\n\n")) or b"response.completed" in body):
                raise SystemExit(f"an answer ended short: {body[-80:]!r}")
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))


def ready(process: subprocess.Popen[bytes], deadline: float, url: str) -> None:
    """Wait until ``url`` answers 200 (the gateway's /readyz; the pass-through's one POST)."""
    request = urllib.request.Request(url, data=b"{}" if "/v1/" in url else None)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the server exited under valgrind (see bench/.work/instructions)")
        try:
            with urllib.request.urlopen(request, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server was not ready within the deadline")


def gateway_command(gateway_config: Path) -> tuple[list[str], str]:
    """The gateway's command line and the address that says it is ready."""
    command = [sys.executable, "-m", "gateway", "run", "--config", str(gateway_config)]
    return command, f"http://127.0.0.1:{ADMIN}/readyz"


def passthrough_command() -> tuple[list[str], str]:
    """The bench's aiohttp pass-through, one worker, before the same upstream."""
    script = str(ROOT / "bench" / "passthrough.py")
    command = [sys.executable, script, "--port", str(PORT), "--workers", "1"]
    command += ["--upstream", f"http://127.0.0.1:{UPSTREAM}"]
    return command, f"http://127.0.0.1:{PORT}/v1/chat/completions"


def source(name: str) -> tuple[Path, str]:
    """A directory as it is, or a commit checked out in a worktree of its own."""
    if Path(name).is_dir():
        return Path(name).resolve(), name
    tree = WORK / "tree"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree)])
    # the name as the repository reads it: in the worktree, HEAD is the last commit measured there
    show = ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{name}^{{commit}}"]
    commit = subprocess.run(show, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "-C", str(tree), "checkout", "-q", "--detach", commit], check=True)
    return tree, name


def serve_upstream() -> None:
    """The canned upstream on a loop of its own (a daemon thread)."""
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(Canned, "127.0.0.1", UPSTREAM))
    threading.Thread(target=loop.run_forever, daemon=True).start()


@contextlib.contextmanager
def counted(tree: Path, label: str, server: tuple[list[str], str]) -> Iterator[Callable[[], int]]:
    """The server (``gateway_command``'s, of ``tree``, or ``passthrough_command``'s) under
    callgrind, ready, instrumentation off; yields ``dump``: instrumentation on from the first
    call, each call the instructions since the last."""
    out = WORK / f"callgrind.{label}"
    for old in WORK.glob(f"callgrind.{label}*"):
        old.unlink()
    command = ["taskset", "-c", "0", "valgrind", "--tool=callgrind", "--instr-atstart=no"]
    command += [f"--callgrind-out-file={out}", *server[0]]
    # one hash seed for every source: dict and set layouts (and so counts) alike across processes
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    with open(WORK / f"valgrind.{label}.log", "wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=WORK, stdout=log, stderr=subprocess.STDOUT
        )  # run from WORK: ``-m`` puts the working directory first on the import path
    control, pid, parts = ["callgrind_control"], str(process.pid), [0]

    def dump() -> int:
        """The instructions counted since the last call (none before the first)."""
        if not parts[0]:
            subprocess.run([*control, "-i", "on", pid], capture_output=True, check=True)
            parts[0] = 1
            return 0
        subprocess.run([*control, "-d", pid], capture_output=True, check=True)
        total = 0  # the dumped part's total
        for line in Path(f"{out}.{parts[0]}").read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
        parts[0] += 1
        return total

    try:
        ready(process, time.monotonic() + 180, server[1])
        yield dump
        subprocess.run([*control, "-i", "off", pid], capture_output=True)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait()


def count(tree: Path, label: str, requests: int, server: tuple[list[str], str]) -> int:
    with counted(tree, label, server) as dump:
        asyncio.run(drive(600))
        dump()
        asyncio.run(drive(requests))
        return dump() // requests


# --apis: (name, path, body) of each batch; chat's and Responses' conversation as bench/apis.py's
APIS: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("chat, whole", "/v1/chat/completions", {**OPENAI, "model": "m-json"}),
    ("Responses, whole", "/v1/responses", {**RESPONSES, "model": "m-json"}),
    ("chat, streamed", "/v1/chat/completions", {**OPENAI, "model": "m-sse", "stream": True}),
    ("Responses, streamed", "/v1/responses", {**RESPONSES, "model": "m-sse", "stream": True}),
)


def apis_config(redis_port: int) -> Path:
    """``bench/apis.py``'s governed config, on this script's ports (a drain of 1 s)."""
    text = bench_apis.config(PORT, ADMIN, UPSTREAM, f"redis://127.0.0.1:{redis_port}")
    settings = yaml.safe_load(text)
    settings["listen"]["drain_timeout"] = 1
    path = WORK / "gateway-apis.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def count_apis(tree: Path, label: str, requests: int, gateway_config: Path) -> None:
    """Each of ``APIS`` counted over ``requests`` requests, twice (in mirrored order); one line
    per batch, then Responses / chat whole and streamed."""
    requests_of = {
        name: post(path, orjson.dumps(body), bench_apis.KEY) for name, path, body in APIS
    }
    counts: dict[str, list[int]] = {name: [] for name in requests_of}
    order = list(requests_of)
    with counted(tree, label, gateway_command(gateway_config)) as dump:
        for name in order:  # warm-up
            asyncio.run(drive(400, request=requests_of[name]))
        dump()
        for name in order + order[::-1]:
            asyncio.run(drive(requests, request=requests_of[name]))
            counts[name].append(dump() // requests)
            print(f"{label} {name:20s} Ir/request: {counts[name][-1]}", flush=True)
    mean = {name: sum(found) / len(found) for name, found in counts.items()}
    for shape in ("whole", "streamed"):
        ratio = mean[f"Responses, {shape}"] / mean[f"chat, {shape}"]
        print(f"{label} Responses / chat, {shape}: {ratio:.3f} (target <= 1.15)", flush=True)


def upstream_process() -> subprocess.Popen[bytes]:
    """``bench/dialects_upstream.py`` on ``UPSTREAM`` (CPU 1, as this process), once ready."""
    script = str(ROOT / "bench" / "dialects_upstream.py")
    process = subprocess.Popen(
        [sys.executable, script, "--port", str(UPSTREAM)], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        raise SystemExit("the canned upstream did not start")
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="*", default=["."])
    parser.add_argument("--requests", type=int, default=None, help="2,000 (--apis: 500)")
    parser.add_argument(
        "--governed", action="store_true", help="governed-1w: a Redis store and every limit"
    )
    parser.add_argument(
        "--capped",
        action="store_true",
        help="governed-capped-1w: --governed with the upstream capped (never full)",
    )
    parser.add_argument(
        "--passthrough",
        action="store_true",
        help="the baseline: bench/passthrough.py (aiohttp, one worker), no source",
    )
    parser.add_argument(
        "--apis",
        action="store_true",
        help="Responses (whole, streamed) beside chat, bench/apis.py's config",
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {1})  # the upstream and the client: CPU 1
    redis, redis_port = None, free_port()
    if args.governed or args.capped or args.apis:  # a redis-server of its own on CPU 1
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # (/readyz waits for it)
    upstream = None
    if args.apis:
        gateway_config, upstream = apis_config(redis_port), upstream_process()
    else:
        gateway_config = config(redis_port if redis is not None else None, args.capped)
        serve_upstream()
    requests = args.requests or (500 if args.apis else 2000)
    try:
        if args.passthrough:
            per_request = count(ROOT, "passthrough", requests, passthrough_command())
            print(f"passthrough-1w Ir/request: {per_request}", flush=True)
            return
        measure(args.sources, requests, gateway_config, count_apis if args.apis else None)
    finally:
        for process in (redis, upstream):
            if process is not None:
                process.terminate()
                process.wait()


def measure(
    sources: list[str],
    requests: int,
    gateway_config: Path,
    apis: Callable[[Path, str, int, Path], None] | None = None,
) -> None:
    for name in sources:
        tree, label = source(name)
        commit = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        safe = label.replace("/", "_").strip("._") or "tree"
        if apis is not None:
            print(f"{label} {commit}", flush=True)
            apis(tree, safe, requests, gateway_config)
            continue
        per_request = count(tree, safe, requests, gateway_command(gateway_config))
        print(f"{label} {commit} Ir/request: {per_request}", flush=True)


if __name__ == "__main__":
    main()
