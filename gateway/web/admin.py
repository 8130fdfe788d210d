"""The admin listener: liveness, readiness and metrics (open), and the admin API (token).

Never mounted on the public listener.
"""

from __future__ import annotations

from aiohttp import web

from gateway.runtime import Runtime
from gateway.web.respond import json_response


def add_routes(app: web.Application, runtime: Runtime) -> None:
    async def healthz(request: web.Request) -> web.StreamResponse:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.StreamResponse:
        problems = readiness_problems(runtime)
        if problems:
            return json_response({"status": "unready", "problems": problems}, status=503)
        return json_response({"status": "ready"})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def readiness_problems(runtime: Runtime) -> list[str]:
    problems = []
    if runtime.draining:
        problems.append("draining: the process is shutting down")
    for route in runtime.router.models():
        if not any(runtime.balancer.healthy(u) for u in route.upstreams):
            problems.append(f"model {route.name}: no healthy upstream")
    return problems
