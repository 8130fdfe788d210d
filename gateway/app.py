"""The only wiring: configuration in, aiohttp applications out.

``create_app`` builds the public application and ``create_admin_app`` the admin one around one
``Runtime``; nothing else constructs services, so tests and the CLI get the same gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.auth.lifecycle import KeyLifecycle
from gateway.auth.service import KeyService
from gateway.clock import Clock, SystemClock
from gateway.config.schema import Config
from gateway.limits.limiter import Limiter
from gateway.netaddr import peer_is_trusted
from gateway.proxy.upstream import UpstreamClient
from gateway.routing.balancer import Balancer
from gateway.routing.router import Router
from gateway.runtime import Runtime
from gateway.store.base import Store
from gateway.store.factory import create_store
from gateway.web import admin, admin_api, public
from gateway.web.middlewares import RequestIds, edge_middleware, on_prepare

RUNTIME = web.AppKey("runtime", Runtime)


def build_runtime(
    config: Config, clock: Clock | None = None, store: Store | None = None
) -> Runtime:
    clock = clock or SystemClock()
    store = store or create_store(config.store, clock)
    keys = KeyService(store, config, clock)
    return Runtime(
        config=config,
        router=Router(config, created=int(clock.time())),
        balancer=Balancer(clock),
        client=UpstreamClient(),
        clock=clock,
        store=store,
        keys=keys,
        lifecycle=KeyLifecycle(keys),
        limiter=Limiter(store, config, clock),
    )


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Start the store subscription and the limiter's writer; on the way out, flush usage."""
    runtime = app[RUNTIME]

    def broadcast(message: str) -> None:
        runtime.keys.invalidate(message)
        runtime.limiter.invalidate(message)

    await runtime.store.subscribe(broadcast)
    await runtime.limiter.start()
    yield
    await runtime.limiter.stop()
    await runtime.store.close()


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
    app.cleanup_ctx.append(_services)
    public.add_routes(app, runtime)
    return app


def create_admin_app(runtime: Runtime) -> web.Application:
    """The admin listener's application (health, readiness, metrics, admin API)."""
    app = web.Application(middlewares=admin_api.middlewares(runtime))
    app[RUNTIME] = runtime
    admin.add_routes(app, runtime)
    admin_api.add_routes(app, runtime)
    return app
