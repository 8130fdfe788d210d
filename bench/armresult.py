"""What the measurement of one arm holds (``ArmResult``): its wrk runs, streams, CPU, RSS,
Redis figures, checks and failure."""

from __future__ import annotations

from dataclasses import dataclass, field

import redisstats
from arms import Arm
from clients import StreamResult, WrkResult
from streams import PacedResult


@dataclass
class ArmResult:
    arm: Arm
    pinning: str = ""
    saturation: WrkResult | None = None
    latency: WrkResult | None = None
    half: WrkResult | None = None  # paced to about half of the saturation rate
    stream: StreamResult | None = None
    paced: PacedResult | None = None
    body_bytes: int = 0
    other_pct: float = 0.0
    cpu_busy: float = 0.0  # the server's CPU seconds per second during saturation
    cpu_us_per_request: float = 0.0  # the server's CPU time per request during saturation
    # The whole machine's busy CPU (every process and the kernel) during saturation, per request
    # and in CPUs: what bounds an arm whose processes share the machine's CPUs with the load.
    machine_us_per_request: float = 0.0
    machine_busy: float = 0.0
    rss_idle_mb: float = 0.0  # per worker, after the probe, before any load
    rss_loaded_mb: float = 0.0  # per worker, after every measurement
    other_top: str = ""
    redis: redisstats.RedisCost | None = None
    leaked_leases: int | None = None  # leases held once the load stopped and all settled
    samples: list[redisstats.MonitorSample] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # what the governed arm verified
    problems: list[str] = field(default_factory=list)  # failed checks (the run fails)
    profile: list[str] = field(default_factory=list)
    error: str = ""
