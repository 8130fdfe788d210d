"""The per-process runtime: the objects every request needs, built in ``app.create_app`` and
swapped whole on reload (the config, and what is compiled from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.auth.lifecycle import KeyLifecycle
from gateway.auth.service import KeyService
from gateway.clock import Clock
from gateway.config.schema import Config
from gateway.limits.limiter import Limiter
from gateway.metrics import Metrics
from gateway.proxy.upstream import UpstreamClient
from gateway.routing.balancer import Balancer
from gateway.routing.router import Router
from gateway.store.base import Store


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
    draining: bool = False
    usage_dropped_seen: int = 0
    ready_problems: list[str] = field(default_factory=list)
