"""The only wiring: configuration in, aiohttp applications out.

``create_app`` builds the public application and ``create_admin_app`` the admin one around one
``Runtime``; nothing else constructs services, so tests and the CLI get the same gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.alerts.service import AlertService
from gateway.auth.lifecycle import KeyLifecycle
from gateway.auth.service import KeyService
from gateway.clock import Clock, SystemClock
from gateway.config.schema import Config, Upstream
from gateway.limits.limiter import Limiter
from gateway.logs import AccessLog
from gateway.metrics import Metrics
from gateway.netaddr import combine, forwarded_proto
from gateway.periodic import Periodic
from gateway.proxy.exchange import EXCHANGE
from gateway.proxy.upstream import UpstreamClient, probe, scrape
from gateway.routing.balancer import Balancer
from gateway.routing.capacity import Capacity
from gateway.routing.discovery import Discovery
from gateway.routing.health import HealthChecker
from gateway.routing.loads import KEEP
from gateway.routing.router import Router
from gateway.routing.signals import SignalScraper
from gateway.runtime import Runtime
from gateway.store.base import Store
from gateway.store.capacity_factory import create_lease_store
from gateway.store.events_factory import create_event_store
from gateway.store.factory import create_store
from gateway.store.responses_store import create_responses_store
from gateway.tally import Tally
from gateway.tracing import Tracer, build_tracer
from gateway.web import admin, admin_alerts, admin_api, admin_owners, console, public
from gateway.web.middlewares import EDGE, STAMP, RequestIds, edge_middleware, stamper
from gateway.web.observe import Observer

RUNTIME = web.AppKey("runtime", Runtime)
ALERTS = web.AppKey("alerts", AlertService)


def build_runtime(
    config: Config, clock: Clock | None = None, store: Store | None = None
) -> Runtime:
    clock = clock or SystemClock()
    store = store or create_store(config.store, clock)
    keys = KeyService(store, config, clock)
    metrics = Metrics()
    limiter = Limiter(store, config, clock)
    keys.on_failure = lambda reason: metrics.auth_failures.labels(reason).inc()
    limiter.on_store_error = keys.on_store_error = lambda op: metrics.store_errors.labels(op).inc()
    balancer = Balancer(clock)
    capacity = Capacity(
        balancer, clock, metrics, config.scheduling, create_lease_store(config.store)
    )
    capacity.configure(config)
    return Runtime(
        config=config,
        router=Router(config, created=int(clock.time())),
        balancer=balancer,
        client=UpstreamClient(),
        clock=clock,
        store=store,
        keys=keys,
        lifecycle=KeyLifecycle(keys),
        limiter=limiter,
        metrics=metrics,
        tracer=build_tracer(config.tracing),
        responses=create_responses_store(config.store, clock),
        capacity=capacity,
    )


def build_alerts(runtime: Runtime) -> AlertService:
    """The alert service (it runs only when ``alerts.webhooks`` is set at start): its queue in
    the store, upstream health as this process's balancer sees it."""
    return AlertService(
        lambda: runtime.config.alerts,
        runtime.store,
        create_event_store(runtime.config.store, runtime.clock),
        runtime.clock,
        runtime.metrics,
        static_keys=lambda: runtime.keys.static.values(),
        health=lambda: [
            (u.name, _answering(runtime.balancer, u)) for u in runtime.config.upstreams.values()
        ],
    )


def _answering(balancer: Balancer, upstream: Upstream) -> bool:
    """Whether the upstream (or one of its discovered addresses) has answered since its last
    failure, to a request or a health probe; a cool-down that merely ran out does not count.
    What ``upstream.down``/``upstream.up`` alerts watch."""
    return any(balancer.state(m.name).failures == 0 for m in balancer.expand([upstream]))


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Start the store subscription, the limiter's writer and the alerts; on the way out, flush
    usage and queued alerts."""
    runtime, alerts = app[RUNTIME], app[ALERTS]

    def broadcast(message: str) -> None:
        if runtime.balancer.placements.receive(message):
            return  # where another process's affinity moved a conversation
        if runtime.balancer.loads.receive(message):
            return  # another process's requests in flight per upstream
        runtime.keys.invalidate(message)
        runtime.limiter.invalidate(message)
        alerts.key_changed(message)  # a revoked key, or one with an expiry to watch

    await runtime.store.subscribe(broadcast)
    if not runtime.config.store.is_memory:  # a shared store: tell the other processes
        runtime.balancer.placements.share(runtime.store.publish)
        runtime.balancer.loads.share(runtime.store.publish)
    loads = Periodic(KEEP, runtime.balancer.loads.beat).start()
    await runtime.limiter.start()
    await alerts.start()

    # Every process keeps its own gauges current: with several workers a scrape reaches one of
    # them, and the shared multiprocess view sums (or mins) what all of them have written.
    gauges = Periodic(1.0, lambda: admin.refresh_gauges(runtime)).start()
    watch = admin.StoreWatch(runtime)
    await watch.check()  # an unreachable store is said at start, then on every change
    store_checks = Periodic(1.0, watch.check).start()
    yield
    await loads.stop()
    await store_checks.stop()
    await gauges.stop()
    await alerts.stop()
    await runtime.limiter.stop()
    await runtime.store.close()
    await runtime.responses.close()
    if runtime.capacity is not None:
        await runtime.capacity.close()


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    """The upstream client, and what watches the upstreams: health checks, DNS discovery (the
    first addresses found before serving) and the workers' signals."""
    runtime = app[RUNTIME]
    client, balancer = runtime.client, runtime.balancer
    await client.start()

    def upstreams() -> list[Upstream]:  # a discovered entry stands for its addresses
        return balancer.expand(runtime.config.upstreams.values())

    checker = HealthChecker(balancer, upstreams, lambda u, path: probe(client, u, path))
    discovery = Discovery(
        balancer, lambda: runtime.config.upstreams.values(), checker.check, runtime.clock
    )
    await discovery.sweep()
    scraper = SignalScraper(
        balancer,
        upstreams,
        lambda u, path, seconds: scrape(client, u, path, seconds),
        lambda: runtime.config.routing.signals_interval,
        runtime.clock,
        runtime.metrics,
    )
    for job in (checker, discovery, scraper):
        job.start()
    yield
    for job in (scraper, discovery, checker):
        await job.stop()
    await client.close()


async def _routing_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``routing.expose_headers``: the upstream and the model that served the answer."""
    ex = request.get(EXCHANGE)
    if ex is not None:
        if ex.upstream is not None:
            response.headers["x-gateway-upstream"] = ex.upstream
        if ex.model is not None:
            response.headers["x-gateway-model"] = ex.model


def _flusher(
    access: AccessLog | None, tally: Tally
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The access log's lines and the request path's metrics, written every second and at
    the end."""

    def flush() -> None:
        tally.flush()
        if access is not None:
            access.flush()

    async def flush_every_second(app: web.Application) -> AsyncIterator[None]:
        flushes = Periodic(1.0, flush).start()
        yield
        await flushes.stop()
        flush()

    return flush_every_second


def _tracing(tracer: Tracer) -> Callable[[web.Application], AsyncIterator[None]]:
    async def export_in_the_background(app: web.Application) -> AsyncIterator[None]:
        await tracer.start()
        yield
        await tracer.stop()  # what is queued goes out first

    return export_in_the_background


def create_app(runtime: Runtime) -> web.Application:
    """The public listener's application, served by ``web.protocol.QuietAppRunner`` (which
    runs its edge and its stamp: another runner would serve it without either)."""
    config = runtime.config
    ids = RequestIds()
    access = AccessLog() if config.log.access else None
    observer = Observer(runtime.metrics, access, runtime.refusals)
    # no aiohttp middleware: the runner that serves the app (``web.protocol.QuietAppRunner``)
    # runs every request through its edge, routing included, and stamps every answer
    app = web.Application(client_max_size=config.network.max_body_bytes)
    app[EDGE] = edge_middleware(ids, runtime.clock.monotonic, observer.done, runtime.metrics.tally)
    app[RUNTIME] = runtime
    app[ALERTS] = runtime.alerts = build_alerts(runtime)
    runtime.limiter.on_admitted = app[ALERTS].observe_verdict  # usage thresholds

    def trusts_proto(request: web.BaseRequest) -> bool:
        """Came over TLS per a trusted proxy (every X-Forwarded-Proto line, read as one list)."""
        if "X-Forwarded-Proto" not in request.headers:
            return False
        lines = combine(request.headers.getall("X-Forwarded-Proto"))
        trusted = runtime.config.network.trusted_proxies
        return forwarded_proto(request.remote, lines, trusted) == "https"

    # (stamped before the response signals below run)
    tls = config.listen.tls is not None  # (the listener is bound at start: no reload changes it)
    app[STAMP] = stamper(lambda: runtime.config.network, ids, trusts_proto, tls=tls)
    if config.routing.expose_headers:  # read at start: nothing per request when it is off
        app.on_response_prepare.append(_routing_headers)
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_flusher(observer.access, runtime.metrics.tally))
    if runtime.tracer.enabled:
        app.cleanup_ctx.append(_tracing(runtime.tracer))
    public.add_routes(app, runtime)
    return app


def create_admin_app(runtime: Runtime) -> web.Application:
    """The admin listener's application (health, readiness, metrics, admin API)."""
    app = web.Application(middlewares=admin_api.middlewares(runtime))
    app[RUNTIME] = runtime
    admin.add_routes(app, runtime)
    admin_api.add_routes(app, runtime)
    admin_owners.add_routes(app, runtime)
    admin_alerts.add_routes(app, runtime)
    console.add_routes(app, runtime)  # /console and its read-only API under /admin/console/
    return app
