"""The per-process runtime: the objects every request needs, built in ``app.create_app`` and
swapped whole on reload (the config, and what is compiled from it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.auth.lifecycle import KeyLifecycle
from gateway.auth.service import KeyService
from gateway.clock import Clock
from gateway.config.reload import Outcome
from gateway.config.schema import Config
from gateway.limits.limiter import Limiter
from gateway.metrics import Metrics
from gateway.proxy.upstream import UpstreamClient
from gateway.routing.balancer import Balancer
from gateway.routing.capacity import Capacity
from gateway.routing.router import Router
from gateway.store.base import Store
from gateway.store.responses_store import ResponsesStore
from gateway.tracing import NO_TRACER, Tracer
from gateway.web.observe import RecentRefusals

if TYPE_CHECKING:
    from gateway.alerts.service import AlertService


@dataclass(slots=True)
class Runtime:
    config: Config
    router: Router
    balancer: Balancer
    client: UpstreamClient
    clock: Clock
    store: Store
    keys: KeyService
    lifecycle: KeyLifecycle
    limiter: Limiter
    metrics: Metrics
    responses: ResponsesStore  # stored Responses (``/v1/responses``), apart from ``store``
    draining: bool = False
    usage_dropped_seen: int = 0
    streams: set[asyncio.Task[Any]] = field(default_factory=set)  # relaying, for the drain
    reload: Callable[[str], Awaitable[Outcome]] | None = None
    tracer: Tracer = NO_TRACER  # read at start: a reload does not change it
    refusals: RecentRefusals = field(default_factory=RecentRefusals)  # the console's, per process
    capacity: Capacity | None = None  # upstream slots and the queue of full models
    alerts: AlertService | None = None  # set by ``app.create_app``; the admin API reads it

    def apply(self, config: Config) -> None:
        """Swap in a new config whole; requests in flight keep the objects they hold."""
        self.router = Router(config, created=int(self.clock.time()))
        self.keys.configure(config)
        self.limiter.configure(config)
        if self.capacity is not None:
            self.capacity.configure(config)
        self.config = config
