"""Every Prometheus metric of the gateway (docs/operations.md), in one registry built per process.

With several worker processes, ``prometheus_client``'s multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by ``gateway run`` before any worker starts) gives ``/metrics``
one view over all of them. No label carries a key id or an owner: cardinality stays bounded by
the config (routes, models, upstreams), the fixed reason codes and the fixed names of the APIs
(``API_LABELS``; a route serves one API, so ``api`` adds no series beside ``route``).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from gateway.tally import Tally

# Milliseconds to minutes: LLM answers range from a cached 20 ms to a 10-minute stream.
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# The ``api`` label: the API a model route serves (``models.<name>.apis``' words), or empty for
# a route that serves none (the model list, count_tokens, the key API, pass-through routes).
API_LABELS = ("chat", "responses", "completions", "embeddings", "rerank", "audio", "images", "")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The metrics of one process; ``render`` gives the text of every process when several
    share a multiprocess directory."""

    def __init__(self) -> None:
        self.tally = Tally()  # the request path's counts, added in bulk (``gateway.tally``)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route, model, status, dialect and API.",
            ["route", "model", "status", "dialect", "api"],
            registry=r,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to the end of the answer, by route, dialect and API.",
            ["route", "dialect", "api"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gateway_upstream_ttft_seconds",
            "Upstream time to first token (first body bytes).",
            ["model", "upstream"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "Tokens charged, by model, kind (prompt, completion), whether they were estimated, "
            "and API.",
            ["model", "kind", "estimated", "api"],
            registry=r,
        )
        self.refusals = Counter(
            "gateway_refusals",
            "Requests refused before the upstream, by reason (error code).",
            ["reason"],
            registry=r,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures",
            "Failed authentications, by reason.",
            ["reason"],
            registry=r,
        )
        self.upstream_healthy = Gauge(
            "gateway_upstream_healthy",
            "1 while the upstream is not ejected.",
            ["upstream"],
            registry=r,
            multiprocess_mode="min",
        )
        self.upstream_in_flight = Gauge(
            "gateway_upstream_in_flight",
            "Requests in flight to the upstream.",
            ["upstream"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.upstream_failures = Counter(
            "gateway_upstream_failures",
            "Upstream failures (connect, 5xx, timeout).",
            ["upstream"],
            registry=r,
        )
        self.upstream_retries = Counter(
            "gateway_upstream_retries",
            "Attempts on another upstream of the same model, by model and the failure before.",
            ["model", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "gateway_model_fallbacks",
            "Requests moved on to a fallback model, by model, fallback and the failure before.",
            ["model", "fallback", "reason"],
            registry=r,
        )
        self.retry_budget_exhausted = Counter(
            "gateway_retry_budget_exhausted",
            "Retries not made because the retries in flight were at the model's budget.",
            ["model"],
            registry=r,
        )
        # What each worker's metrics_path said last (every process reads it: the max is it).
        self.upstream_queue = Gauge(
            "gateway_upstream_queue",
            "Requests waiting in the worker's queue, as its metrics_path said last.",
            ["upstream"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.upstream_running = Gauge(
            "gateway_upstream_running",
            "Requests the worker is running, as its metrics_path said last.",
            ["upstream"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.upstream_kv_cache = Gauge(
            "gateway_upstream_kv_cache_usage",
            "Share of the worker's KV cache in use (0 to 1), as its metrics_path said last.",
            ["upstream"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.upstream_fleet_in_flight = Gauge(
            "gateway_upstream_fleet_in_flight",
            "Requests in flight to the upstream from every gateway process sharing the store: "
            "this process's own, and the others' as they last told it.",
            ["upstream"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.upstream_signals_age = Gauge(
            "gateway_upstream_signals_age_seconds",
            "Seconds since the worker's metrics_path was last read.",
            ["upstream"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.active_streams = Gauge(
            "gateway_active_streams",
            "Streams being relayed.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.store_errors = Counter(
            "gateway_store_errors",
            "Store calls that failed or timed out, by operation.",
            ["op"],
            registry=r,
        )
        self.usage_buffered = Gauge(
            "gateway_usage_buffered",
            "Usage records waiting for the store.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.usage_buffer_limit = Gauge(
            "gateway_usage_buffer_limit",
            "The bound of the usage buffer (store.buffer_max).",
            registry=r,
            multiprocess_mode="max",
        )
        self.usage_dropped = Counter(
            "gateway_usage_dropped",
            "Usage records lost because the buffer was full.",
            registry=r,
        )
        self.reloads = Counter(
            "gateway_config_reloads",
            "Configuration reloads, by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.alert_deliveries = Counter(
            "gateway_alert_deliveries",
            "Alert deliveries (one event to one webhook), by event type and result: queued, "
            "sent (2xx), failed (an attempt; retried), dropped (given up).",
            ["type", "result"],
            registry=r,
        )
        self.alert_queue = Gauge(
            "gateway_alert_queue",
            "Alert deliveries waiting in the store, as the sending process counts them.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.queue_length = Gauge(
            "gateway_queue_length",
            "Requests waiting for a slot of a full model, by the owner's plan.",
            ["plan"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_wait = Histogram(
            "gateway_queue_wait_seconds",
            "Time requests waited in the queue of a full model (served or not), by plan.",
            ["plan"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_grants = Counter(
            "gateway_queue_grants",
            "Slots handed to waiting requests, by the owner's plan and its share (while several "
            "plans wait, their rates follow their shares).",
            ["plan", "share"],
            registry=r,
        )
        self.queue_refused = Counter(
            "gateway_queue_refused",
            "Requests refused 429 queue_full, by plan and the bound passed (owner, gateway).",
            ["plan", "bound"],
            registry=r,
        )

    def render(self) -> bytes:
        self.tally.flush()
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
