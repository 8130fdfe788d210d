"""Active health checks: an ejected upstream is probed in the background (``GET /health``, else
``GET /v1/models``, or its ``health_path``) and brought back as soon as it answers 2xx; passive
ejection (connect errors, 5xx, timeouts on real traffic) is the balancer's.

The probe itself is a callable given by the HTTP layer, so this module does no I/O of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from gateway.config.schema import Upstream
from gateway.periodic import Periodic
from gateway.routing.balancer import Balancer

log = logging.getLogger("gateway.health")

Probe = Callable[[Upstream, str], Awaitable[bool]]  # (upstream, path) → answered 2xx


def probe_paths(upstream: Upstream) -> tuple[str, ...]:
    """Paths under the upstream's URL; a ``/v1`` base URL probes ``/v1/health`` first (vLLM
    serves ``/health`` at the root, which ``/v1``-based URLs cannot reach, hence the models
    fallback)."""
    if upstream.health_path:
        return (upstream.health_path,)
    if upstream.url.endswith("/v1"):
        return ("/health", "/models")
    return ("/health", "/v1/models")


class HealthChecker:
    def __init__(
        self,
        balancer: Balancer,
        upstreams: Callable[[], Iterable[Upstream]],
        probe: Probe,
        interval: float = 1.0,
    ) -> None:
        self.balancer = balancer
        self.upstreams = upstreams
        self.probe = probe
        self.interval = interval
        self._periodic: Periodic | None = None

    async def check(self, upstream: Upstream) -> bool:
        for path in probe_paths(upstream):
            if await self.probe(upstream, path):
                return True
        return False

    async def sweep(self) -> None:
        """Probe every ejected upstream once; restore those that answer."""
        ejected = [u for u in self.upstreams() if not self.balancer.healthy(u)]
        results = await asyncio.gather(*(self.check(u) for u in ejected))
        for upstream, ok in zip(ejected, results, strict=True):
            if ok:
                log.info("upstream back", extra={"upstream": upstream.name})
                self.balancer.succeeded(upstream)

    def start(self) -> None:
        self._periodic = Periodic(self.interval, self.sweep).start()

    async def stop(self) -> None:
        if self._periodic is not None:
            await self._periodic.stop()
