"""The only wiring: configuration in, aiohttp applications out.

``create_app`` builds the public application and ``create_admin_app`` the admin one around one
``Runtime``; nothing else constructs services, so tests and the CLI get the same gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.clock import Clock, SystemClock
from gateway.config.schema import Config
from gateway.netaddr import peer_is_trusted
from gateway.proxy.upstream import UpstreamClient
from gateway.routing.balancer import Balancer
from gateway.routing.router import Router
from gateway.runtime import Runtime
from gateway.web import admin, public
from gateway.web.middlewares import RequestIds, edge_middleware, on_prepare

RUNTIME = web.AppKey("runtime", Runtime)


def build_runtime(config: Config, clock: Clock | None = None) -> Runtime:
    clock = clock or SystemClock()
    return Runtime(
        config=config,
        router=Router(config, created=int(clock.time())),
        balancer=Balancer(clock),
        client=UpstreamClient(),
        clock=clock,
    )


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    client = app[RUNTIME].client
    await client.start()
    yield
    await client.close()


def create_app(runtime: Runtime) -> web.Application:
    """The public listener's application."""
    config = runtime.config
    ids = RequestIds()
    app = web.Application(
        middlewares=[edge_middleware(ids, runtime.clock.monotonic)],
        client_max_size=config.network.max_body_bytes,
    )
    app[RUNTIME] = runtime
    trusted = config.network.trusted_proxies

    def trusts_proto(request: web.Request) -> bool:
        return request.headers.get("X-Forwarded-Proto", "").lower() == "https" and (
            peer_is_trusted(request.remote, trusted)
        )

    app.on_response_prepare.append(on_prepare(config.network, ids, trusts_proto))
    app.cleanup_ctx.append(_upstream_session)
    public.add_routes(app, runtime)
    return app


def create_admin_app(runtime: Runtime) -> web.Application:
    """The admin listener's application (health, readiness, metrics, admin API)."""
    app = web.Application()
    app[RUNTIME] = runtime
    admin.add_routes(app, runtime)
    return app
