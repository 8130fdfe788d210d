"""The attempts of one request, before any byte of the answer reached the client: its model's
upstreams (up to ``retry.attempts``), then each of its ``fallbacks`` in order (up to as many
upstreams each), while the failure is of a kind in ``retry.on`` and the retry budget allows.

The requested model's ``retry`` governs the whole chain; a fallback's own fallbacks are not
followed. A fallback is tried only if the caller's key may use it. A ``context_length`` failure
skips the rest of its model's upstreams (they share its context) for the next fallback.

The HTTP layer makes the attempts (``proxy.handler``); this decides what comes next.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from gateway.config.schema import Upstream
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.records import KeyRecord
from gateway.routing.affinity import Affinity, affinity
from gateway.routing.balancer import Balancer
from gateway.routing.placing import Placement, placement
from gateway.routing.retry import (
    REFUSALS,
    context_exceeded,
    failure_kind,
    refusal,
    with_model,
)
from gateway.routing.router import ModelRoute, Router

log = logging.getLogger("gateway.routing")

_UNSET = frozenset({"\0unset"})


class Chain:
    """One request's way through its upstreams and fallback models."""

    __slots__ = (
        "_allowed",
        "_fallback",
        "_key",
        "_key_model",
        "_label",
        "_record",
        "_retrying",
        "attempts",
        "balancer",
        "metrics",
        "model",
        "payload",
        "pending",
        "region",
        "route",
        "router",
        "tried",
    )

    def __init__(
        self,
        balancer: Balancer,
        router: Router,
        metrics: Metrics,
        route: ModelRoute,
        payload: bytes,
        region: str | None,
        record: Callable[[], Awaitable[KeyRecord]],
        label: str = "",
    ) -> None:
        self.balancer, self.router, self.metrics = balancer, router, metrics
        self.route = self.model = route  # the model asked for; the one being tried
        self.payload, self.region = payload, region
        self._record = record  # the caller's key, asked for only if a fallback comes up
        self._label = label  # the request's id, in the log line of each failed attempt
        self._allowed: frozenset[str] | None = _UNSET
        self.tried: list[str] = []
        self.attempts = 0  # upstreams tried of ``model``
        self._fallback = 0  # fallbacks of ``route`` looked at
        self._retrying = False  # an attempt after a failure is in flight: it holds the budget
        self._key: Affinity | None = None
        self._key_model: ModelRoute | None = None
        # The store's placement the last pick asked for (``routing.placing``): its upstream is
        # the first candidate until ``routing.capacity`` takes the slot the store chooses.
        self.pending: Placement | None = None

    # What the HTTP layer asks of a failed attempt (``routing.retry``).
    failure = staticmethod(failure_kind)
    context_exceeded = staticmethod(context_exceeded)
    REFUSALS = REFUSALS  # the statuses a context-length refusal comes with

    @staticmethod
    def refused(status: int, raw: bytes) -> GatewayError:
        """A worker's refusal read whole: a context-length failure, or the client's own."""
        return context_exceeded(status, raw) or refusal(status, raw)

    def _pick(self) -> Upstream | None:
        model = self.model
        routing = model.routing
        key = None
        if routing.policy == "affinity":
            if self._key_model is not model:
                self._key = affinity(self.payload, routing.affinity_prefix_tokens)
                self._key_model = model
            key = self._key
        if key is None:
            upstream = self.balancer.pick(
                model.upstreams, self.tried, self.region, routing, None, model.name
            )
        elif self.balancer.placing and model.capped:  # the store places it: its candidates
            found = self.pending = placement(
                self.balancer,
                model.upstreams,
                self.tried,
                self.region,
                routing.load_factor,
                key[0],
                key[1],
            )
            upstream = found[0][0] if found is not None else None
        else:
            upstream = self.balancer.affinity(
                model.upstreams, self.tried, self.region, routing.load_factor, key[0], key[1]
            )
        if upstream is not None:
            self.attempts += 1
            self.tried.append(upstream.name)
        return upstream

    @property
    def peek(self) -> bool:
        """Should a refusal be read for a context-length error? Only if a fallback is left."""
        return "context_length" in self.route.retry.on and self._fallback < len(
            self.route.fallbacks
        )

    def wait(self, upstream: Upstream) -> float:
        """An attempt's longest wait for its first byte."""
        limit, first_byte = self.route.retry.timeout, upstream.timeouts.first_byte
        return first_byte if limit is None or limit > first_byte else limit

    async def after(self, failed: Upstream, kind: str | None) -> Upstream | None:
        """What to try after ``failed`` (still held, so that the budget counts this request)
        failed with ``kind``: another upstream, a fallback's, or None."""
        self.done()
        policy = self.route.retry
        if kind is None or kind not in policy.on:
            return None
        log.info(
            "upstream attempt failed",
            extra={
                "request_id": self._label,
                "model": self.model.name,
                "upstream": failed.name,
                "reason": kind,
            },
        )
        if not self.balancer.budget.allows(policy.budget_percent, self.balancer.in_flight):
            self.metrics.retry_budget_exhausted.labels(self.route.name).inc()
            return None
        upstream = None
        if kind != "context_length" and self.attempts < policy.attempts:
            upstream = self._pick()
            if upstream is not None:
                self.metrics.upstream_retries.labels(self.route.name, kind).inc()
        upstream = upstream or await self.fall_back(kind)
        if upstream is not None:
            self._retrying = True
            self.balancer.budget.retries += 1
        return upstream

    async def fall_back(self, kind: str) -> Upstream | None:
        """The first upstream of the next fallback the caller may use and that has one free.
        (Also when no upstream of the model could be tried at all: kind ``connect``.)"""
        if kind not in self.route.retry.on:
            return None
        fallbacks = self.route.fallbacks
        while self._fallback < len(fallbacks):
            target = self.router.resolve(fallbacks[self._fallback])
            self._fallback += 1
            if target is None or not await self._may_use(target):
                continue
            if target.upstream_model != self.model.upstream_model:
                self.payload = with_model(self.payload, target.upstream_model)
            self.model, self.attempts = target, 0
            upstream = self._pick()
            if upstream is not None:
                self.metrics.fallbacks.labels(self.route.name, target.name, kind).inc()
                return upstream
        return None

    async def _may_use(self, target: ModelRoute) -> bool:
        if self._allowed is _UNSET:
            self._allowed = (await self._record()).models
        return target.allowed_by(self._allowed)

    def done(self) -> None:
        """The attempt in flight is over: a retry gives its place in the budget back."""
        if self._retrying:
            self._retrying = False
            self.balancer.budget.retries -= 1

    first = _pick  # the first upstream of the model asked for (no call of its own)
