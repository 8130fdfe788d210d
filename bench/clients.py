"""The clients that load an arm: plain HTTP calls (a POST, a GET, the probe that must get the
canned JSON), wrk (its command, its environment, its parsed summary) and the streaming client
at concurrency 1."""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from common import HEADERS, POST_LUA, REQUEST, STREAM_CHUNKS, ArmFailed, percentile
from procs import Proc

# --- HTTP ----------------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data, headers or HEADERS, method="POST")
    try:
        with _OPENER.open(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()
    except OSError as err:
        raise ArmFailed(f"POST {url} failed: {err}") from err


def get(url: str) -> bytes:
    try:
        with _OPENER.open(url, timeout=10) as resp:
            return bytes(resp.read())
    except OSError as err:  # HTTPError included
        raise ArmFailed(f"GET {url} failed: {err}") from err


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


def wrk_cmd(url: str, connections: int, seconds: float) -> list[str]:
    return [
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


def wrk_env(key: str | None = None, delay_ms: int | None = None) -> dict[str, str] | None:
    """wrk's environment: bench/post.lua reads BENCH_KEY and BENCH_DELAY_MS."""
    if key is None and delay_ms is None:
        return None
    env = dict(os.environ)
    if key is not None:
        env["BENCH_KEY"] = key
    if delay_ms is not None:
        env["BENCH_DELAY_MS"] = str(delay_ms)
    return env


def parse_wrk(url: str, cmd: list[str], returncode: int, out: str, connections: int) -> WrkResult:
    match = _BENCH_LINE.search(out)
    if returncode != 0 or match is None:
        raise ArmFailed(f"wrk failed ({returncode}): {' '.join(cmd)}\n{out}")
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


def wrk(
    url: str,
    connections: int,
    seconds: float,
    cpus: str | None,
    key: str | None = None,
    delay_ms: int | None = None,
) -> WrkResult:
    from procs import taskset

    cmd = wrk_cmd(url, connections, seconds)
    try:
        run = subprocess.run(
            taskset(cpus, cmd),
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
            env=wrk_env(key, delay_ms),
        )
    except subprocess.TimeoutExpired as err:
        raise ArmFailed(f"wrk ran past its deadline: {' '.join(cmd)}") from err
    return parse_wrk(url, cmd, run.returncode, run.stdout + run.stderr, connections)


# --- the streaming client at concurrency 1 -------------------------------------------------------


@dataclass
class StreamResult:
    streams: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float


async def _stream_client(url: str, body: dict[str, Any], seconds: float) -> StreamResult:
    import aiohttp

    ttfts: list[float] = []
    totals: list[float] = []
    payload = json.dumps(body).encode()
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        end = time.perf_counter() + seconds
        warm = 20  # the first streams open the connections and warm the caches
        while time.perf_counter() < end or warm > 0:
            start = time.perf_counter()
            first: float | None = None
            data = bytearray()
            async with session.post(url, data=payload, headers=HEADERS) as resp:
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
