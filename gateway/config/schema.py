"""The configuration as frozen dataclasses: what the rest of the gateway sees of the YAML.

Dicts die in the loader (``config.load``); everything here is parsed already: CIDRs are networks,
URLs are split, durations are seconds as floats. This module is pure.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Permission = Literal["chat", "embeddings", "audio", "images", "vision"]
PERMISSIONS: frozenset[str] = frozenset({"chat", "embeddings", "audio", "images", "vision"})
# The APIs a model may serve (``models.<name>.apis``), in the order they are listed.
APIS: tuple[str, ...] = (
    "chat",
    "responses",
    "completions",
    "embeddings",
    "rerank",
    "audio",
    "images",
)
DEFAULT_APIS: tuple[str, ...] = ("chat", "responses", "completions")


@dataclass(frozen=True, slots=True)
class Tls:
    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    tls: Tls | None = None
    drain_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Admin:
    host: str = "127.0.0.1"
    port: int = 9090
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Store:
    url: str = "memory://"
    on_error: Literal["closed", "open"] = "closed"
    timeout_ms: int = 250
    buffer_max: int = 100_000

    @property
    def is_memory(self) -> bool:
        return self.url.startswith("memory://")


@dataclass(frozen=True, slots=True)
class Network:
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_body_bytes: int = 52_428_800
    header_timeout: float = 10.0
    body_timeout: float = 60.0  # seconds a whole request body may take to arrive
    security_headers: bool = True
    hsts: bool = True


@dataclass(frozen=True, slots=True)
class StaticKey:
    id: str
    owner: str
    sha256: str = field(repr=False)
    name: str = ""
    permissions: frozenset[str] = frozenset({"chat"})
    models: frozenset[str] | None = None
    ip_whitelist: tuple[IPNetwork, ...] = ()
    rpm_limit: int | None = None
    max_concurrency: int | None = None
    daily_limit: int | None = None
    monthly_limit: int | None = None
    expires_at: float | None = None  # epoch seconds, UTC
    tpm_limit: int | None = None
    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "sk_gw"
    static: tuple[StaticKey, ...] = ()
    demo: bool = False  # memory:// only: issue a key for owner "demo" at start and print it


Overage = Literal["block", "allow"]


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    max_keys: int | None = None
    monthly_tokens: int | None = None
    rpm: int | None = None
    tpm: int | None = None  # tokens in any rolling minute, across the owner's keys
    monthly_budget_usd: float | None = None  # dollars a month, across the owner's keys
    overage: Overage = "block"  # past monthly_tokens: refuse, or serve and report it apart
    share: float = 1.0  # weight in the queue for full models (fair queuing by owner)
    priority: int = 0  # a higher class is served first from that queue
    max_queued: int | None = None  # the owner's requests waiting at once; None: only max_queue


@dataclass(frozen=True, slots=True)
class Auth:
    max_failures_per_minute: int = 20


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``first_byte`` bounds the wait for the answer's head and its first chunk;
    ``idle`` the wait between two chunks. There is no total cap: streams may last hours."""

    connect: float = 5.0
    first_byte: float = 300.0
    idle: float = 120.0


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    url: str  # base URL without a trailing slash, e.g. http://127.0.0.1:8000
    api_key: str | None = field(default=None, repr=False)
    region: str | None = None
    weight: float = 1.0
    max_concurrency: int | None = None  # requests at once, all gateway processes; None: no cap
    timeouts: Timeouts = Timeouts()
    health_path: str | None = None  # None: try /health, then /v1/models
    metrics_path: str | None = None  # a Prometheus page of worker signals (queue, KV cache)
    discover: Literal["dns"] | None = None  # "dns": one upstream per address of the URL's host
    discover_interval: float = 10.0


@dataclass(frozen=True, slots=True)
class Pricing:
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    per_image: float = 0.0  # each image an images request made
    per_audio_second: float = 0.0  # each second of audio, when the worker reports them
    per_request: float = 0.0  # each request, whatever it counted


DEFAULT_MAX_TOKENS = 4096

Policy = Literal["least_loaded", "round_robin", "random", "affinity"]
RETRY_KINDS = ("connect", "5xx", "429", "timeout", "context_length")


@dataclass(frozen=True, slots=True)
class ModelRouting:
    """How a model's upstream is chosen (``gateway.routing.balancer``)."""

    policy: Policy = "least_loaded"
    affinity_prefix_tokens: int = 256
    load_factor: float = 1.25


@dataclass(frozen=True, slots=True)
class Retry:
    """What a request that failed before its first byte reached the client tries next."""

    attempts: int = 2  # upstreams tried per model of the chain, the first included
    on: frozenset[str] = frozenset({"connect", "5xx", "429", "timeout"})
    budget_percent: float = 20.0  # retries in flight, as a share of requests in flight
    timeout: float | None = None  # an attempt's longest wait for its first byte


ResponsesMode = Literal["translate", "native"]


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    upstreams: tuple[str, ...]
    upstream_model: str
    aliases: tuple[str, ...] = ()
    owned_by: str = "gateway"
    pricing: Pricing = Pricing()
    # Completion tokens reserved for a request that names no max_tokens, so that what such
    # requests can overshoot a token limit by is bounded too.
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    apis: tuple[str, ...] = DEFAULT_APIS  # what the model serves, in the order of APIS
    routing: ModelRouting = ModelRouting()
    fallbacks: tuple[str, ...] = ()  # other models, tried in order when this one fails
    retry: Retry = Retry()
    # The most completion tokens the worker generates for one request: a larger max_tokens
    # (Claude Code asks 32,000) is lowered to it instead of failing at the worker. None: no cap.
    max_output_tokens: int | None = None
    responses: ResponsesMode = "translate"  # Responses requests: as chat, or the worker's own


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str
    upstream: str
    auth: Literal["none", "key", "optional"] = "key"
    ip_rpm: int | None = None
    max_body_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Log:
    level: Literal["debug", "info", "warning", "error"] = "info"
    access: bool = True


@dataclass(frozen=True, slots=True)
class MockWorker:
    """The bundled fake worker, started beside the gateway (the embedded default uses it)."""

    host: str = "127.0.0.1"
    port: int = 8001
    token_delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Routing:
    """Routing settings of the whole gateway (a model's own are ``ModelRouting``)."""

    expose_headers: bool = False  # x-gateway-upstream and x-gateway-model on every answer
    signals_interval: float = 1.0  # seconds between scrapes of each upstream's metrics_path


# The events an alert webhook may ask for (``alerts.webhooks[].events``).
EVENTS: tuple[str, ...] = (
    "usage.threshold",
    "key.expiring",
    "key.revoked",
    "upstream.down",
    "upstream.up",
)


@dataclass(frozen=True, slots=True)
class Webhook:
    """A receiver of alert events: each event of ``events`` is POSTed to ``url`` (``json``: the
    event itself; ``slack``: ``{"text": ...}``), signed with ``secret``."""

    url: str = field(repr=False)  # Slack-style URLs carry a token in their path
    secret: str = field(repr=False)
    events: tuple[str, ...] = EVENTS
    format: Literal["json", "slack"] = "json"


@dataclass(frozen=True, slots=True)
class Alerts:
    """Alert webhooks and their delivery: ``timeout`` per POST, ``give_up_after`` seconds of
    failed retries, ``down_after`` seconds an upstream stays ejected before it is reported."""

    webhooks: tuple[Webhook, ...] = ()
    timeout: float = 10.0
    give_up_after: float = 86_400.0
    down_after: float = 10.0


@dataclass(frozen=True, slots=True)
class Scheduling:
    """The queue in front of models whose upstreams are all at their ``max_concurrency``."""

    max_wait: float = 30.0  # seconds a request may wait for a slot; then 503 queue_timeout
    max_queue: int = 10_000  # requests waiting at once, all models; past it 429 queue_full


@dataclass(frozen=True, slots=True)
class Responses:
    """The Responses API's stored responses and the tools translate mode cannot give a worker."""

    ttl_days: int = 30  # how long a stored response is kept
    hosted_tools: Literal["drop", "reject"] = "drop"  # web_search, file_search, ...
    max_stored_bytes: int = 1_048_576  # a larger response (with its input) is not stored


@dataclass(frozen=True, slots=True)
class Tracing:
    """OpenTelemetry traces over OTLP/HTTP (the ``tracing`` extra); off while ``otlp_endpoint``
    is None."""

    otlp_endpoint: str | None = None  # the collector's base URL; spans go to <it>/v1/traces
    sample_ratio: float = 1.0  # of new traces; a client's traceparent decides its own
    service_name: str = "gateway"
    max_queue: int = 2048  # spans waiting for export; beyond, new ones are dropped (counted)


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, validated configuration. ``source`` is the file it came from."""

    listen: Listen = Listen()
    admin: Admin = Admin()
    store: Store = Store()
    network: Network = Network()
    keys: Keys = Keys()
    plans: dict[str, Plan] = field(default_factory=dict)
    default_plan: str = "free"
    auth: Auth = Auth()
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    models: dict[str, Model] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    log: Log = Log()
    mock_worker: MockWorker | None = None
    source: str = "<defaults>"
    tracing: Tracing = Tracing()
    routing: Routing = Routing()  # given by name: other sections are added after ``source`` too
    alerts: Alerts = Alerts()
    responses: Responses = Responses()
    scheduling: Scheduling = Scheduling()
