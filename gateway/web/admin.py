"""The admin listener: liveness, readiness and metrics (open), and the admin API (token); and
the background watch of the store that says in the log when it becomes unreachable or returns.

Never mounted on the public listener.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from aiohttp import web

from gateway.metrics import CONTENT_TYPE
from gateway.runtime import Runtime
from gateway.store.base import StoreError
from gateway.web.respond import json_response

log = logging.getLogger("gateway.store")


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
        else:
            if not await runtime.limiter.caught_up():
                problems.append("store: usage from its outage not yet written")
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
        m.upstream_fleet_in_flight.labels(upstream.name).set(state.in_flight + state.told)
        m.upstream_healthy.labels(upstream.name).set(1 if runtime.balancer.healthy(upstream) else 0)


def readiness_problems(runtime: Runtime) -> list[str]:
    problems = []
    if runtime.draining:
        problems.append("draining: the process is shutting down")
    for route in runtime.router.models():
        if not any(runtime.balancer.healthy(u) for u in route.upstreams):
            problems.append(f"model {route.name}: no healthy upstream")
    return problems


def store_address(url: str) -> str:
    """The store URL without its credentials, fit for a log line."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class StoreWatch:
    """Pings the store every second, off the request path (``app`` runs it beside the gauge
    refresh), and logs a warning when it is unreachable at start and on every change between
    reachable and unreachable: without it only ``/readyz`` and the 503s would tell."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.reachable: bool | None = None  # None: not checked yet

    async def check(self) -> None:
        store = self.runtime.config.store
        try:
            await self.runtime.store.ping()
        except StoreError as exc:
            if self.reachable is not False:
                self.reachable = False
                closed = store.on_error == "closed"
                effect = (
                    "chat and the key API answer 503 store_unavailable"
                    if closed
                    else "requests are admitted without limits and usage is buffered in memory"
                )
                log.warning(
                    f"store unreachable: {store_address(store.url)} ({exc}); {effect} "
                    f"(store.on_error: {store.on_error}) until it is back",
                    extra={"store": store_address(store.url), "reachable": False},
                )
            return
        if self.reachable is False:
            log.warning(
                f"store reachable again: {store_address(store.url)}",
                extra={"store": store_address(store.url), "reachable": True},
            )
        self.reachable = True
