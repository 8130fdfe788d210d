"""Worker signals: each upstream's Prometheus ``metrics_path`` read every
``routing.signals_interval`` seconds, its queue, running requests and KV-cache use kept in the
balancer's state (and shown as gauges), so that every policy sees what the worker holds from
every gateway process, not only this one's requests.

The names read (labels, if any, summed over; a cache share is the largest, a share not being
additive):

===============================  =========  =====================================
metric                           server     read as
===============================  =========  =====================================
``vllm:num_requests_waiting``    vLLM       waiting (its queue)
``vllm:num_requests_running``    vLLM       running
``vllm:kv_cache_usage_perc``     vLLM       cache (0 to 1; ``gpu_cache_usage_perc`` before v1)
``tgi_queue_size``               TGI        waiting
``llamacpp:requests_deferred``   llama.cpp  waiting
``llamacpp:requests_processing`` llama.cpp  running
``llamacpp:kv_cache_usage_ratio`` llama.cpp cache
===============================  =========  =====================================

Signals are believed for ``STALE_AFTER`` intervals after a good read; a worker that stops
answering its metrics falls back to the in-flight counts. The page itself is fetched by a
callable the HTTP layer gives (``proxy.upstream.scrape``): this module does no I/O of its own.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.config.schema import Upstream
from gateway.metrics import Metrics
from gateway.periodic import Periodic
from gateway.routing.balancer import Balancer

STALE_AFTER = 3.0  # intervals without a good read before the signals are not believed

SIGNALS = {
    "vllm:num_requests_waiting": "waiting",
    "vllm:num_requests_running": "running",
    "vllm:kv_cache_usage_perc": "cache",
    "vllm:gpu_cache_usage_perc": "cache",
    "tgi_queue_size": "waiting",
    "llamacpp:requests_deferred": "waiting",
    "llamacpp:requests_processing": "running",
    "llamacpp:kv_cache_usage_ratio": "cache",
}
_PREFIXES = tuple(SIGNALS)

Fetch = Callable[[Upstream, str, float], Awaitable[str | None]]  # (upstream, path, timeout)


@dataclass(frozen=True, slots=True)
class Signals:
    waiting: float = 0.0
    running: float = 0.0
    cache: float = 0.0


def parse(text: str) -> Signals | None:
    """The signals of a Prometheus text page, or None when it has none of the names."""
    totals = {"waiting": 0.0, "running": 0.0, "cache": 0.0}
    found = False
    for line in text.splitlines():
        if not line.startswith(_PREFIXES):
            continue
        sample = _sample(line)
        if sample is None or sample[0] not in SIGNALS:
            continue
        kind, value = SIGNALS[sample[0]], sample[1]
        found = True
        totals[kind] = max(totals[kind], value) if kind == "cache" else totals[kind] + value
    if not found:
        return None
    return Signals(totals["waiting"], totals["running"], min(1.0, totals["cache"]))


def _sample(line: str) -> tuple[str, float] | None:
    """``name{labels} value [timestamp]`` → (name, value); None for what does not parse or
    is not a finite number ≥ 0. Label values may hold spaces, braces and escaped quotes."""
    brace = line.find("{")
    space = line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        name, end = line[:brace], _labels_end(line, brace)
        if end == -1:
            return None
        rest = line[end + 1 :]
    else:
        if space == -1:
            return None
        name, rest = line[:space], line[space:]
    fields = rest.split()
    if not fields:
        return None
    try:
        value = float(fields[0])
    except ValueError:
        return None
    return (name, value) if math.isfinite(value) and value >= 0 else None


def _labels_end(line: str, start: int) -> int:
    """The index of the ``}`` closing the labels opened at ``start``, or -1."""
    quoted = escaped = False
    for i in range(start + 1, len(line)):
        char = line[i]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "}" and not quoted:
            return i
    return -1


class SignalScraper:
    """Reads every upstream with a ``metrics_path`` (discovered ones each), every interval."""

    def __init__(
        self,
        balancer: Balancer,
        upstreams: Callable[[], Iterable[Upstream]],
        fetch: Fetch,
        interval: Callable[[], float],
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        self.balancer = balancer
        self.upstreams = upstreams
        self.fetch = fetch
        self.interval = interval
        self.clock = clock
        self.metrics = metrics
        self._read_at: dict[str, float] = {}  # last good read, monotonic
        self._periodic: Periodic | None = None

    async def sweep(self) -> None:
        """Read every upstream's signals once, at the same time."""
        interval = self.interval()
        targets = [u for u in self.balancer.expand(self.upstreams()) if u.metrics_path]
        await asyncio.gather(*(self.scrape(u, interval) for u in targets))
        self._forget({u.name for u in targets})
        if self._periodic is not None:
            self._periodic.seconds = interval  # a reload may change it

    async def scrape(self, upstream: Upstream, interval: float) -> Signals | None:
        assert upstream.metrics_path is not None
        text = await self.fetch(upstream, upstream.metrics_path, max(interval, 0.25))
        signals = parse(text) if text is not None else None
        now = self.clock.monotonic()
        if signals is not None:
            self._read_at[upstream.name] = now
            self.balancer.observe(
                upstream.name,
                signals.waiting,
                signals.running,
                signals.cache,
                now + STALE_AFTER * interval,
            )
        self._show(upstream.name, signals, now)
        return signals

    def _show(self, name: str, signals: Signals | None, now: float) -> None:
        m = self.metrics
        if m is None:
            return
        if signals is not None:
            m.upstream_queue.labels(name).set(signals.waiting)
            m.upstream_running.labels(name).set(signals.running)
            m.upstream_kv_cache.labels(name).set(signals.cache)
        read_at = self._read_at.get(name)
        if read_at is not None:
            m.upstream_signals_age.labels(name).set(now - read_at)

    def _forget(self, names: set[str]) -> None:
        """Upstreams no longer read (removed by a reload, or vanished from DNS) leave no
        series behind."""
        for name in [n for n in self._read_at if n not in names]:
            del self._read_at[name]
            if self.metrics is not None:
                for gauge in (
                    self.metrics.upstream_queue,
                    self.metrics.upstream_running,
                    self.metrics.upstream_kv_cache,
                    self.metrics.upstream_signals_age,
                ):
                    try:
                        gauge.remove(name)
                    except KeyError:
                        pass

    def start(self) -> None:
        self._periodic = Periodic(self.interval(), self.sweep).start()

    async def stop(self) -> None:
        if self._periodic is not None:
            await self._periodic.stop()
