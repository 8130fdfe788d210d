"""Many paced streams at once: ``BENCH_PACED_STREAMS`` (512) concurrent streams of
``BENCH_PACED_CHUNKS`` (64) chunks ``BENCH_PACED_INTERVAL_MS`` (20 ms) apart, served by
``bench/paced_upstream.py`` and read through an arm (directly, the bare pass-through, the
gateway with one worker).

The client is a bare asyncio protocol per connection (uvloop; no HTTP library: it writes one
request and reads the answer's bytes), so that 25,600 chunks a second cost it little. Each
chunk's content carries the upstream's CLOCK_MONOTONIC send time, so per chunk it records:

- the gap since the previous chunk of its stream, minus the upstream's interval (the delay the
  path adds to the pacing; the upstream's own timer error is in every arm, see the direct arm);
- the transit time (arrival - send time);

and, while every stream is open, the server's RSS (``/proc/<pid>/status`` VmRSS), whose growth
over the idle RSS measured before, divided by the streams, is the memory one open stream costs.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from arms import Arm, Run, Server, start_gateway, start_passthrough
from common import BENCH, BENCH_KEY, CHAT_PATH, PYTHON, ArmFailed, percentile
from procs import (
    CLK_TCK,
    Proc,
    Stack,
    free_port,
    group_ticks,
    rss_kb,
    wait_listening,
    worker_pids,
)

_SENT = re.compile(rb't(\d+\.\d{6}) "')
_DONE = b"data: [DONE]"


def start_paced_upstream(stack: Stack, run: Run, cpus: str | None) -> Proc:
    s = run.settings
    port = free_port()
    cmd = [
        str(PYTHON),
        str(BENCH / "paced_upstream.py"),
        "--port",
        str(port),
        "--chunks",
        str(s.paced_chunks),
        "--interval-ms",
        f"{s.paced_interval_ms:g}",
    ]
    proc = stack.start(run.proc("paced-upstream", cmd, cpus))
    wait_listening(proc, port)
    run.paced_port = port
    return proc


@dataclass
class PacedStats:
    streams: int = 0
    complete: int = 0
    failures: list[str] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)  # arrival gap - interval
    path_gaps_ms: list[float] = field(default_factory=list)  # arrival gap - send gap
    send_gaps_ms: list[float] = field(default_factory=list)  # send gap - interval (upstream)
    transit_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)  # request written -> first chunk
    peak_open: int = 0  # the most streams open at once in an RSS sample
    peak_rss_kb: int = 0  # the server's RSS in the sample(s) with the most streams open
    seconds: float = 0.0


class StreamProtocol(asyncio.Protocol):
    """One stream: writes the request, keeps (arrival time, bytes) of every read and nothing
    more while the stream runs (the parsing waits for its end: the client shares its CPU with
    the upstream, and 25,600 chunks a second must not saturate it)."""

    def __init__(self, request: bytes, chunks: int, tracker: Tracker) -> None:
        self.request = request
        self.chunks = chunks
        self.tracker = tracker
        self.pieces: list[tuple[float, bytes]] = []
        self.tail = b""
        self.started = 0.0
        self.done = asyncio.get_running_loop().create_future()
        self.transport: Any = None
        self.sent: list[float] = []
        self.arrived: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's is no asyncio.Transport subclass
        self.started = time.monotonic()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.pieces:
            self.tracker.opened()
        self.pieces.append((time.monotonic(), data))
        if _DONE in self.tail + data:
            self._finish()
        self.tail = data[-16:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(f"connection lost: {exc!r}" if exc else None)

    def _finish(self, error: str | None = None) -> None:
        if self.done.done():
            return
        if self.pieces:
            self.tracker.closed()
        self.done.set_result(error)
        if self.transport is not None:
            self.transport.close()

    def parse(self, error: str | None) -> str | None:
        """Fills ``sent`` and ``arrived`` (a chunk arrives with the read that completes it);
        the stream's error, if any."""
        data = b"".join(piece for _, piece in self.pieces)
        status = data.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            return f"answered {status.decode(errors='replace')}: {data[:300]!r}"
        ends, total = [], 0
        for _, piece in self.pieces:
            total += len(piece)
            ends.append(total)
        for match in _SENT.finditer(data):
            self.sent.append(float(match.group(1)))
            self.arrived.append(self.pieces[bisect.bisect_left(ends, match.end())][0])
        if error is None and _DONE not in data:
            error = "no data: [DONE]"
        if error is None and len(self.sent) != self.chunks:
            error = f"{len(self.sent)} chunks instead of {self.chunks}"
        return error


@dataclass
class Tracker:
    """How many streams are open (first chunk received, [DONE] not yet)."""

    open: int = 0
    peak: int = 0

    def opened(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        self.open -= 1


async def paced_round(
    host: str,
    port: int,
    path: str,
    body: dict[str, Any],
    streams: int,
    chunks: int,
    interval_ms: float,
    pids: list[int],
    stats: PacedStats,
    spread: float,
) -> None:
    """``streams`` concurrent streams, opened over ``spread`` seconds (a listen queue must not
    overflow); samples the servers' RSS every 20 ms, keeping the sample(s) with the most streams
    open."""
    payload = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {BENCH_KEY}\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload
    loop = asyncio.get_running_loop()
    tracker = Tracker()
    protocols: list[StreamProtocol] = []

    async def one(delay: float) -> str | None:
        await asyncio.sleep(delay)
        proto = StreamProtocol(request, chunks, tracker)
        protocols.append(proto)
        try:
            await loop.create_connection(lambda: proto, host, port)
        except OSError as err:
            return f"connect failed: {err}"
        return await proto.done

    async def sample() -> None:
        while pids:
            await asyncio.sleep(0.02)
            open_now = tracker.open
            if open_now and open_now >= stats.peak_open:
                rss = sum(rss_kb(pid) for pid in pids)
                if open_now > stats.peak_open:
                    stats.peak_open, stats.peak_rss_kb = open_now, rss
                else:
                    stats.peak_rss_kb = max(stats.peak_rss_kb, rss)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    budget = chunks * interval_ms / 1000 + spread + 30
    try:
        async with asyncio.timeout(budget):
            errors = await asyncio.gather(*(one(spread * i / streams) for i in range(streams)))
    except TimeoutError:
        raise ArmFailed(
            f"{streams} paced streams did not end within {budget:.0f} s "
            f"({sum(1 for p in protocols if p.done.done())} ended)"
        ) from None
    finally:
        sampler.cancel()
        for proto in protocols:
            if proto.transport is not None:
                proto.transport.abort()
    stats.seconds += time.monotonic() - started
    interval = interval_ms / 1000
    for proto, error in zip(protocols, errors, strict=False):
        stats.streams += 1
        error = proto.parse(error)
        if error:
            stats.failures.append(error)
            continue
        stats.complete += 1
        stats.first_ms.append((proto.arrived[0] - proto.started) * 1000)
        for i, (sent, arrived) in enumerate(zip(proto.sent, proto.arrived, strict=True)):
            stats.transit_ms.append((arrived - sent) * 1000)
            if i:
                arrival_gap = arrived - proto.arrived[i - 1]
                send_gap = sent - proto.sent[i - 1]
                stats.gaps_ms.append((arrival_gap - interval) * 1000)
                stats.path_gaps_ms.append((arrival_gap - send_gap) * 1000)
                stats.send_gaps_ms.append((send_gap - interval) * 1000)


@dataclass
class Figures:
    """The timing of some rounds."""

    label: str
    complete: int
    attempted: int
    gap_p50_ms: float  # arrival gap - interval
    gap_p99_ms: float
    gap_max_ms: float
    path_gap_p50_ms: float  # arrival gap - the upstream's send gap: what the path added
    path_gap_p99_ms: float
    send_gap_p99_ms: float  # the upstream's own lateness (send gap - interval)
    transit_p50_ms: float
    transit_p99_ms: float
    first_p50_ms: float
    first_p99_ms: float
    server_cpu: float  # the server's CPU seconds per second over these rounds
    cpu_us_per_chunk: float  # the server's CPU time over these rounds / chunks relayed
    peak_open: int  # the most streams open at once (in an RSS sample; 0: not sampled)


def figures(label: str, stats: PacedStats, cpu: float, chunks: int) -> Figures:
    if not stats.gaps_ms:
        raise ArmFailed(f"no paced stream completed: {stats.failures[:3]}")
    return Figures(
        label=label,
        complete=stats.complete,
        attempted=stats.streams,
        gap_p50_ms=percentile(stats.gaps_ms, 50),
        gap_p99_ms=percentile(stats.gaps_ms, 99),
        gap_max_ms=max(stats.gaps_ms),
        path_gap_p50_ms=percentile(stats.path_gaps_ms, 50),
        path_gap_p99_ms=percentile(stats.path_gaps_ms, 99),
        send_gap_p99_ms=percentile(stats.send_gaps_ms, 99),
        transit_p50_ms=percentile(stats.transit_ms, 50),
        transit_p99_ms=percentile(stats.transit_ms, 99),
        first_p50_ms=percentile(stats.first_ms, 50),
        first_p99_ms=percentile(stats.first_ms, 99),
        server_cpu=cpu / stats.seconds if stats.seconds else 0.0,
        cpu_us_per_chunk=cpu / (stats.complete * chunks) * 1e6 if stats.complete else 0.0,
        peak_open=stats.peak_open,
    )


@dataclass
class PacedResult:
    streams: int  # per round
    rounds: int
    cold: Figures  # the first round: every stream opens a new upstream connection
    warm: Figures | None  # the later rounds: the upstream connections are pooled
    failures: list[str]
    idle_rss_mb: float  # per worker, before the first round
    open_rss_mb: float  # with the most streams of the first round open (all, normally)
    after_rss_mb: float  # after the last round
    peak_open: int  # how many streams were open in that sample
    per_stream_kb: float  # (open - idle) / peak_open, first round

    @property
    def complete(self) -> int:
        return self.cold.complete + (self.warm.complete if self.warm else 0)

    @property
    def attempted(self) -> int:
        return self.cold.attempted + (self.warm.attempted if self.warm else 0)

    @property
    def steady(self) -> Figures:
        """The figures the target is checked on: warm rounds when there are some."""
        return self.warm or self.cold


def run_paced(run: Run, server: Server, path: str, body: dict[str, Any]) -> PacedResult:
    import uvloop

    s = run.settings
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    pids = worker_pids(server.proc, server.workers) if server.proc else []
    spread = min(0.5, s.paced_streams / 1000)

    async def one_round(stats: PacedStats) -> None:
        await paced_round(
            host,
            int(port),
            path,
            body,
            s.paced_streams,
            s.paced_chunks,
            s.paced_interval_ms,
            pids,
            stats,
            spread,
        )

    async def main() -> PacedResult:
        warm_up = PacedStats()
        # Warm the code paths (and a few upstream connections) with a few streams first.
        await paced_round(
            host, int(port), path, body, 16, s.paced_chunks, s.paced_interval_ms, [], warm_up, 0.05
        )
        if warm_up.failures:
            raise ArmFailed(f"warm-up streams failed: {warm_up.failures[0]}")
        await asyncio.sleep(0.5)
        idle = sum(rss_kb(pid) for pid in pids)
        cold = PacedStats()
        ticks = group_ticks(server.proc)
        await one_round(cold)
        cold_cpu = (group_ticks(server.proc) - ticks) / CLK_TCK
        await asyncio.sleep(0.3)
        warm = PacedStats()
        ticks = group_ticks(server.proc)
        for _ in range(s.paced_rounds - 1):
            await one_round(warm)
            await asyncio.sleep(0.3)
        warm_cpu = (group_ticks(server.proc) - ticks) / CLK_TCK
        after = sum(rss_kb(pid) for pid in pids)
        workers = max(1, len(pids))
        rounds = s.paced_rounds
        return PacedResult(
            streams=s.paced_streams,
            rounds=rounds,
            cold=figures("round 1 (cold)", cold, cold_cpu, s.paced_chunks),
            warm=figures(
                f"round{'s' if rounds > 2 else ''} 2{f'-{rounds}' if rounds > 2 else ''} (warm)",
                warm,
                warm_cpu,
                s.paced_chunks,
            )
            if rounds > 1
            else None,
            failures=(cold.failures + warm.failures)[:5],
            idle_rss_mb=idle * 1024 / 1e6 / workers,
            open_rss_mb=cold.peak_rss_kb * 1024 / 1e6 / workers,
            after_rss_mb=after * 1024 / 1e6 / workers,
            peak_open=cold.peak_open,
            per_stream_kb=(cold.peak_rss_kb - idle) * 1024 / 1e3 / cold.peak_open
            if cold.peak_open
            else 0,
        )

    gc.disable()  # no collection pauses among the 32,768 pieces a round keeps
    try:
        return uvloop.run(main())
    finally:
        gc.enable()
        gc.collect()


# --- the arms ------------------------------------------------------------------------------------


def start_paced_direct(stack: Stack, run: Run) -> Server:
    """The client straight to the paced upstream: the floor (its timers and the client's)."""
    return Server(f"http://127.0.0.1:{run.paced_port}", None)


PACED_PATH = CHAT_PATH
PACED_BODY = {
    "model": "bench-paced",
    "messages": [{"role": "user", "content": "Say hello"}],
    "max_tokens": 64,
    "stream": True,
}


def paced_arms() -> list[Arm]:
    return [
        Arm(
            "paced-direct", "direct (client → paced upstream)", 1, start_paced_direct, kind="paced"
        ),
        Arm(
            "paced-passthrough",
            "aiohttp pass-through, 1 worker",
            1,
            start_passthrough(1, upstream="paced"),
            kind="paced",
        ),
        Arm(
            "paced-gateway",
            "gateway, 1 worker (memory)",
            1,
            start_gateway(1, name="gateway-1w-paced"),
            kind="paced",
        ),
    ]
