"""The scale bench's runs over 1, 1,000 and 100,000 keys: loads up to each
checkpoint, what Redis holds and costs there, and the alternated admission latencies of two
runs' servers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common import percentile
from procs import Stack
from scale_base import START, Redis, fleet, insert, make_record, mb, per_request, plural, say
from scale_census import Census, census
from scale_driver import Driver
from scale_sizing import Sizing

from gateway.config.schema import Config
from gateway.records import KeyRecord


@dataclass(frozen=True)
class Spec:
    keys: int
    step: float  # fake seconds between requests
    checkpoints: tuple[int, ...]  # requests at which Redis is read


@dataclass
class Checkpoint:
    requests: int
    refused: int
    span: float  # fake seconds since the first request
    rate: float  # requests per (real) second of the load
    calls: dict[str, float]  # commands per request during the load
    redis_us: float  # redis-server CPU per request, µs
    probe: list[float]  # admission latencies at concurrency 1, seconds
    census: Census
    predicted: dict[str, float]

    @property
    def formula(self) -> float:
        return sum(self.predicted.values())


@dataclass
class RunResult:
    spec: Spec
    baseline: int
    insert_seconds: float
    checkpoints: list[Checkpoint]
    driver: Driver
    redis: Redis


async def scale_run(
    stack: Stack, workdir: Path, spec: Spec, sizes: Sizing, config: Config, probes: int
) -> RunResult:
    r = Redis(stack, workdir, f"scale-{spec.keys}-keys")
    baseline = r.used()
    records, _, metered = fleet(spec.keys)
    inserted = await insert(r.url, records, metered)
    say(f"   {plural(spec.keys, 'key')} inserted in {inserted:.1f} s")
    driver = Driver(r.url, config, spec.step, records)
    await driver.start()
    result = RunResult(spec, baseline, inserted, [], driver, r)
    for target in spec.checkpoints:
        before, sent = r.stats(), driver.sent
        seconds = await driver.load(target - driver.loaded)
        after = r.stats()
        n = driver.sent - sent
        span = driver.clock.time() - START
        found = census(r.r)
        times = await driver.probe(probes)
        point = Checkpoint(
            requests=driver.loaded,
            refused=driver.refused,
            span=span,
            rate=n / seconds,
            calls=per_request(before, after, n),
            redis_us=(after.cpu - before.cpu) / n * 1e6,
            probe=times,
            census=found,
            predicted=sizes.predict(found),
        )
        result.checkpoints.append(point)
        say(
            f"   {point.requests:,} requests ({point.span:,.0f} s of windows, {point.rate:,.0f} "
            f"req/s): used_memory {mb(found.used)} MB (clients {mb(found.clients)}, formula "
            f"{mb(point.formula)}), {found.total_keys:,} Redis keys, "
            f"{sum(point.calls.values()):.1f} commands/req, admission p99 "
            f"{percentile(times, 99) * 1e3:.3f} ms (census {found.seconds:.1f} s)"
        )
    return result


@dataclass
class Side:
    """One side of the alternated probe: the client's admission latencies (seconds), and
    Redis's own view of its EVALSHAs meanwhile (the admissions and their settlements, one each
    at concurrency 1): percentiles from ``INFO latencystats`` and the mean, in µs."""

    times: list[float]
    server_p50: float = 0.0
    server_p99: float = 0.0
    server_mean: float = 0.0


async def paired(
    a: tuple[Driver, Redis], b: tuple[Driver, Redis], blocks: int, block: int, probe_keys: bool
) -> tuple[Side, Side]:
    """Admission latencies at concurrency 1 on two stores, in alternated blocks (A B, B A, ...)
    so the machine's drift falls on both alike. ``probe_keys``: on one new key of the governed
    profile in each (the same work, only the number of other keys differs); else on each run's
    own keys, in turn."""
    sides = (a, b)
    records: list[list[KeyRecord] | None] = [None, None]
    if probe_keys:
        records = [[make_record(0xFFFFFFF, "probe-owner", "rpm+plan", "sk_gw")[0]]] * 2
    for _, server in sides:
        server.r.config_resetstat()
    times: list[list[float]] = [[], []]
    for i in range(blocks):
        for j in (0, 1) if i % 2 == 0 else (1, 0):
            times[j].extend(await sides[j][0].probe(block, records[j]))
    out = []
    for (_, server), got in zip(sides, times, strict=True):
        side = Side(got)
        found = server.r.info("latencystats").get("latency_percentiles_usec_evalsha")
        if isinstance(found, dict):
            side.server_p50, side.server_p99 = float(found["p50"]), float(found["p99"])
        stat = server.r.info("commandstats").get("cmdstat_evalsha")
        if isinstance(stat, dict):
            side.server_mean = float(stat["usec_per_call"])
        out.append(side)
    return out[0], out[1]
