"""The admin listener: liveness, readiness and metrics (open), and the admin API (token).

Never mounted on the public listener.
"""

from __future__ import annotations

from aiohttp import web

from gateway.metrics import CONTENT_TYPE
from gateway.runtime import Runtime
from gateway.store.base import StoreError
from gateway.web.respond import json_response


def add_routes(app: web.Application, runtime: Runtime) -> None:
    async def healthz(request: web.Request) -> web.StreamResponse:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.StreamResponse:
        problems = readiness_problems(runtime)
        try:
            await runtime.store.ping()
        except StoreError:
            runtime.keys.on_store_error("ping")
            problems.append("store: unreachable")
        if problems:
            return json_response({"status": "unready", "problems": problems}, status=503)
        return json_response({"status": "ready"})

    async def metrics(request: web.Request) -> web.StreamResponse:
        refresh_gauges(runtime)
        return web.Response(body=runtime.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


def refresh_gauges(runtime: Runtime) -> None:
    """Gauges read from live state at scrape time, not bumped on the hot path."""
    m, limiter = runtime.metrics, runtime.limiter
    m.usage_buffered.set(limiter.buffer.pending)
    m.usage_buffer_limit.set(limiter.buffer.limit)
    dropped = limiter.buffer.dropped - runtime.usage_dropped_seen
    if dropped > 0:
        m.usage_dropped.inc(dropped)
        runtime.usage_dropped_seen = limiter.buffer.dropped
    for upstream in runtime.config.upstreams.values():
        state = runtime.balancer.state(upstream.name)
        m.upstream_in_flight.labels(upstream.name).set(state.in_flight)
        m.upstream_healthy.labels(upstream.name).set(1 if runtime.balancer.healthy(upstream) else 0)


def readiness_problems(runtime: Runtime) -> list[str]:
    problems = []
    if runtime.draining:
        problems.append("draining: the process is shutting down")
    for route in runtime.router.models():
        if not any(runtime.balancer.healthy(u) for u in route.upstreams):
            problems.append(f"model {route.name}: no healthy upstream")
    return problems
