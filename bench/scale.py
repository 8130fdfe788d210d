"""The scale bench (issue 23): what Redis keeps and what an admission costs as requests and keys
grow, what each unit of state costs in Redis (the sizing formula of docs/operations.md, checked
here against the runs), one owner's admissions per second on one Redis node, and the RSS of a
gateway that has served 100,000 keys.

``.venv/bin/python bench/scale.py [--quick] [--no-gateway] [--big N]``; bench/README.md ("The
scale bench") says what each part does. Every process is the bench's own, on loopback, stopped at
the end: one ``redis-server`` per part, the gateway and its mock worker. The store is driven the
way a gateway process drives it: ``Limiter.admit`` (one EVALSHA per request on the Redis lane)
and ``Limiter.settle`` (queued, written by the limiter's writer in batches of up to 256, 32
settlements per EVALSHA). Time is a ``FakeClock`` passed to ``RedisStore`` (its ``time()`` goes to
the scripts), advanced a fixed step per request, so a million requests span an hour or more of
windows in minutes; TTLs (real time) never fire during a run, so what is measured is what the
scripts themselves keep. A dated section is added to bench/RESULTS.md (before its History, plus
one History line); the rest of the file is left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis
from common import GATEWAY, RESULTS, WORK, percentile
from procs import Proc, Stack, free_port, rss_kb, wait_listening

from gateway.auth import keys as keymod
from gateway.auth.service import CACHE_MAX, NEGATIVE_TTL, POSITIVE_TTL
from gateway.clock import FakeClock, SystemClock
from gateway.config.load import parse_text
from gateway.config.schema import Config
from gateway.errors import TooManyRequests
from gateway.limits.limiter import PLAN_TTL, Limiter
from gateway.records import Admission, KeyRecord, Settlement
from gateway.store.redis import RedisStore
from gateway.store.redis_codec import script

# The fake clock starts ten minutes into a UTC day; every run ends before its midnight, so a
# run's usage stays in one day (a new day is a new usage row per key and model: counted apart).
START = dt.datetime(2027, 1, 15, 0, 10, tzinfo=dt.UTC).timestamp()
MODEL, OTHER_MODEL = "bench-model", "bench-model-2"
RESERVE, PROMPT, COMPLETION = 120, 9, 16  # tokens: reserved (prompt estimate + max_tokens), used
RESERVE_COST, COST = 300, 41  # micro-dollars
HIGH = 10**12  # a limit never reached
LOOSE_RPM = 1_000_000  # an rpm limit never reached: a log holds what came in the last minute
LOAD_CONCURRENCY = 64  # requests in flight while loading (one gateway process at saturation)
INSERT_CONCURRENCY = 64
TIMEOUT_MS = 5000
PLANS = """
store: {timeout_ms: 5000}
plans:
  free: {rpm: null, monthly_tokens: null, max_keys: null}
  metered: {rpm: 100000000, monthly_tokens: 1000000000000000, max_keys: null}
"""
# Key profiles, by key index (mod 4); one owner per key. "rpm+plan": the governed key (its own
# rpm, concurrency and token limits) of an owner on a plan with rpm (the owner's rpm log too).
PROFILES = ("rpm+plan", "tokens", "rpm", "tpm")
LIMITS: dict[str, dict[str, int]] = {
    "rpm+plan": {
        "rpm_limit": LOOSE_RPM,
        "max_concurrency": 1000,
        "daily_limit": HIGH,
        "monthly_limit": HIGH,
    },
    "tokens": {"daily_limit": HIGH, "monthly_limit": HIGH},
    "rpm": {"rpm_limit": LOOSE_RPM},
    "tpm": {"tpm_limit": HIGH, "daily_limit": HIGH},
}
LISTPACK_MAX = 128  # zset/hash-max-listpack-entries: past it a ZSET is a skiplist


def say(text: str) -> None:
    print(text, flush=True)


# --- Redis ---------------------------------------------------------------------------------------


@dataclass
class Stats:
    calls: dict[str, int]
    cpu: float  # redis-server's user + sys seconds


class Redis:
    """A ``redis-server`` of the bench's own (no persistence) and a client to read it."""

    def __init__(self, stack: Stack, workdir: Path, name: str) -> None:
        self.port = free_port()
        cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--save", "", "--appendonly", "no"]
        self.proc = stack.start(Proc(name, cmd, workdir / f"{name}.log"))
        wait_listening(self.proc, self.port)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.r = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=120)
        for name_ in ("admit", "settle", "renew", "hit", "insert_key"):
            self.r.script_load(script(name_))

    def used(self) -> int:
        """``used_memory`` less the clients' buffers (a pipelined burst leaves a query buffer
        that Redis shrinks later): what the data and Redis's own structures hold."""
        return held(self.r.info("memory"))

    def stats(self) -> Stats:
        calls = {
            k.removeprefix("cmdstat_"): int(v["calls"])
            for k, v in self.r.info("commandstats").items()
            if isinstance(v, dict)
        }
        cpu = self.r.info("cpu")
        return Stats(calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))


def held(memory: dict[str, Any]) -> int:
    return int(memory["used_memory"]) - int(memory.get("mem_clients_normal", 0))


def per_request(before: Stats, after: Stats, requests: int) -> dict[str, float]:
    """Commands per request between two readings (scripts' inner calls included; the bench's own
    INFO calls left out)."""
    n = max(1, requests)
    out = {
        name: (count - before.calls.get(name, 0)) / n
        for name, count in after.calls.items()
        if name not in ("info", "script|load", "script")
    }
    return {k: v for k, v in sorted(out.items(), key=lambda i: -i[1]) if v > 0}


# --- keys ----------------------------------------------------------------------------------------


def make_record(index: int, owner: str, profile: str, prefix: str) -> tuple[KeyRecord, str]:
    """An issued key (its full text, for the gateway) and its record as the key API makes it:
    the rights of its profile, its ceiling the same rights."""
    key_id = f"k{index:07x}"
    full = keymod.issue(prefix, key_id, os.urandom)
    record = KeyRecord(
        id=key_id,
        owner=owner,
        key_hash=keymod.sha256_hex(full),
        key_prefix=keymod.display_prefix(prefix, key_id),
        name=f"service key {index}",
        created_at=START - 86400,
        updated_at=START - 86400,
        **LIMITS[profile],
    )
    return record.evolve(ceiling=record.rights()), full


def fleet(count: int, prefix: str = "sk_gw") -> tuple[list[KeyRecord], list[str], list[str]]:
    """``count`` keys, one owner each, profiles in turn; (records, full keys, metered owners)."""
    records, fulls, metered = [], [], []
    for i in range(count):
        profile = PROFILES[i % len(PROFILES)]
        owner = f"tenant-{i:06d}"
        record, full = make_record(i, owner, profile, prefix)
        records.append(record)
        fulls.append(full)
        if profile == "rpm+plan":
            metered.append(owner)
    return records, fulls, metered


async def bounded(jobs: Iterable[Callable[[], Awaitable[object]]], limit: int) -> None:
    """Run the jobs, ``limit`` at a time."""
    it = iter(jobs)

    async def worker() -> None:
        for job in it:
            await job()

    await asyncio.gather(*(worker() for _ in range(limit)))


async def insert(url: str, records: list[KeyRecord], metered: list[str]) -> float:
    """Insert the records (and the metered owners' plans) through the store; seconds taken."""
    store = RedisStore(url, 30_000)
    started = time.monotonic()
    try:
        await store.ping()
        await bounded(
            [partial(store.insert_key, r, None) for r in records]
            + [partial(store.set_plan, o, "metered") for o in metered],
            INSERT_CONCURRENCY,
        )
    finally:
        await store.close()
    return time.monotonic() - started


# --- driving the store as a gateway process does -------------------------------------------------


class Driver:
    """One gateway process's limiter over a ``RedisStore`` whose scripts read a fake clock,
    advanced ``step`` seconds per request."""

    def __init__(self, url: str, config: Config, step: float, records: list[KeyRecord]) -> None:
        self.clock = FakeClock(START)
        self.store = RedisStore(url, TIMEOUT_MS, self.clock)
        self.limiter = Limiter(self.store, config, self.clock)
        self.step = step
        self.records = records
        self.sent = 0  # every request, the probes' too
        self.loaded = 0  # the load's requests (the checkpoints count these)
        self.refused = 0
        self._next = 0
        self._ids = "req_" + os.urandom(6).hex()

    async def start(self) -> None:
        await self.store.ping()
        await self.limiter.start()

    async def one(self, records: list[KeyRecord], times: list[float] | None = None) -> None:
        record = records[self._next % len(records)]
        self._next += 1
        self.sent += 1
        self.clock.advance(self.step)
        started = time.perf_counter()
        try:
            ticket = await self.limiter.admit(
                f"{self._ids}{self.sent:08x}", record, RESERVE, False, MODEL, RESERVE_COST
            )
        except TooManyRequests:
            self.refused += 1
            return
        if times is not None:
            times.append(time.perf_counter() - started)
        self.limiter.settle(ticket, MODEL, PROMPT, COMPLETION, False, False, cost=COST)

    async def load(self, count: int, concurrency: int = LOAD_CONCURRENCY) -> float:
        """``count`` requests, ``concurrency`` at a time, every settlement written; seconds."""
        started = time.monotonic()
        left = count
        self.loaded += count

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await self.one(self.records)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await self.flush()
        return time.monotonic() - started

    async def probe(self, count: int, records: list[KeyRecord] | None = None) -> list[float]:
        """Admission latencies (seconds) of ``count`` requests one at a time (concurrency 1).
        The bench's own heap (records, census) is frozen first, as a gateway freezes what it
        made at start: a full collection of it would land in the p99."""
        gc.collect()
        gc.freeze()
        times: list[float] = []
        for _ in range(count):
            await self.one(records or self.records, times)
        await self.flush()
        return times

    async def flush(self) -> None:
        await drained(self.limiter)

    async def close(self) -> None:
        await self.limiter.stop()
        await self.store.close()


async def drained(limiter: Limiter, seconds: float = 60.0) -> None:
    """Wait until the limiter's writer has written every settlement."""
    deadline = time.monotonic() + seconds
    while limiter.buffer.pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"settlements were not written within {seconds:g} s")
        await asyncio.sleep(0.005)


# --- what Redis holds ----------------------------------------------------------------------------

ZSETS = {"held", "rpm:k", "rpm:o", "tpm:k", "tpm:o", "usedays"}
HASHES = {"tok:k", "tok:o", "lastused", "tpmv:k", "tpmv:o", "use", "hit"}
CLASS_ORDER = (
    "kh",
    "kid",
    "keys",
    "plan",
    "tok:k",
    "tok:o",
    "lastused",
    "held",
    "rpm:k",
    "rpm:o",
    "tpm:k",
    "tpmv:k",
    "tpm:o",
    "tpmv:o",
    "use",
    "usedays",
    "done",
    "hit",
    "other",
)


def classify(name: str) -> str:
    """A Redis key's class in the layout of gateway/store/redis_codec.py."""
    if name.startswith("gw:kh:"):
        return "kh"
    if name.startswith("gw:kid:"):
        return "kid"
    if name.startswith("gw:hit:"):
        return "hit"
    if name.startswith("gw:{"):
        rest = name[name.find("}:") + 2 :]
        head, _, tail = rest.partition(":")
        if head in ("keys", "plan", "lastused", "held", "use", "usedays", "done"):
            return head
        if head == "tok":
            return "tok:o" if tail == "o" else "tok:k"
        if head in ("rpmr", "rpmu"):  # the rpm logs (rpmr: newest first; rpmu:, rpm: before)
            return f"rpm:{tail[:1]}"
        if head in ("tpmr", "tpmrv"):  # the token minutes (newest first; tpm:, tpmv: before)
            return f"{head.replace('r', '', 1)}:{tail[:1]}"
        if head in ("rpm", "tpm", "tpmv"):
            return f"{head}:{tail[:1]}"
    return "other"


@dataclass
class ClassCount:
    keys: int = 0
    members: int = 0  # elements of ZSETs, fields of HASHes, members of SETs
    sizes: list[int] = field(default_factory=list)  # members per key (ZSETs only)
    sampled: list[int] = field(default_factory=list)  # MEMORY USAGE of a sample

    @property
    def mean_bytes(self) -> float:
        return sum(self.sampled) / len(self.sampled) if self.sampled else 0.0


@dataclass
class Census:
    used: int  # used_memory
    clients: int  # of which the clients' buffers (mem_clients_normal)
    total_keys: int
    classes: dict[str, ClassCount]
    model_days: float  # models per usage-day hash, summed (sampled)
    seconds: float

    def count(self, name: str) -> int:
        c = self.classes.get(name)
        return c.keys if c else 0

    @property
    def held(self) -> int:
        """What the formula predicts: used_memory less the clients' buffers."""
        return self.used - self.clients


def census(r: redis.Redis, sample: int = 60) -> Census:
    """Every key by class (SCAN), members of every ZSET and SET (pipelined ZCARD/SCARD), MEMORY
    USAGE and HLEN of a sample of each class, and ``used_memory``."""
    started = time.monotonic()
    by_class: dict[str, list[str]] = {}
    for raw in r.scan_iter(count=5000):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        by_class.setdefault(classify(name), []).append(name)
    classes: dict[str, ClassCount] = {}
    rng = random.Random(7)
    for name, found in by_class.items():
        c = classes[name] = ClassCount(keys=len(found))
        picked = rng.sample(found, min(sample, len(found)))
        if name in ZSETS or name == "keys":
            op = "ZCARD" if name in ZSETS else "SCARD"
            for start in range(0, len(found), 5000):
                pipe = r.pipeline(transaction=False)
                for key in found[start : start + 5000]:
                    pipe.execute_command(op, key)
                sizes = [int(x) for x in pipe.execute()]
                c.members += sum(sizes)
                c.sizes.extend(sizes)
        elif name in HASHES:
            pipe = r.pipeline(transaction=False)
            for key in picked:
                pipe.hlen(key)
            lengths = [int(x) for x in pipe.execute()]
            c.members = round(sum(lengths) / len(lengths) * len(found))
        else:
            c.members = len(found)
        pipe = r.pipeline(transaction=False)
        for key in picked:
            pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
        c.sampled = [int(x or 0) for x in pipe.execute()]
    uses = by_class.get("use", [])
    model_days = 0.0
    if uses:
        pipe = r.pipeline(transaction=False)
        for key in rng.sample(uses, min(sample, len(uses))):
            pipe.hkeys(key)
        models = [sum(1 for f in got if f.startswith(b"r:")) for got in pipe.execute()]
        model_days = sum(models) / len(models) * len(uses)
    memory = r.info("memory")
    clients = int(memory["used_memory"]) - held(memory)
    total = int(r.dbsize())
    return Census(
        int(memory["used_memory"]), clients, total, classes, model_days, time.monotonic() - started
    )


# --- sizing: bytes per unit of state --------------------------------------------------------------


@dataclass
class Sizing:
    """Bytes of ``used_memory`` per unit of state, each measured as the growth of Redis when
    ``n`` such units are made through the store's own scripts."""

    n: int
    empty: int = 0
    record_json: int = 0  # bytes of one stored key record (orjson)
    units: dict[str, float] = field(default_factory=dict)
    left_after_settling: int = 0  # used_memory after every lease was settled, minus before

    def zset(self, name: str, members: int) -> float:
        """One rolling log or lease set of ``members`` members."""
        if members <= 0:
            return 0.0
        per = self.units[f"{name}_member_lp" if members <= LISTPACK_MAX else f"{name}_member_sl"]
        return self.units[f"{name}_first"] + (members - 1) * per

    def predict(self, c: Census) -> dict[str, float]:
        """Redis memory the formula gives for what the census found, by part."""
        u = self.units
        owners = c.count("keys")
        parts = {
            "baseline (a Redis that has run the scripts, empty)": float(self.empty),
            "key records": c.count("kid") * u["key"],
            "owners (key set)": owners * u["owner"],
            "owners' plans": c.count("plan") * u["plan"],
            "owners in use (counters, last use)": c.count("tok:o") * u["owner_active"],
            "keys in use (counters, last use)": c.count("tok:k") * u["key_active"],
            "usage (per key, model and day)": c.count("use") * u["usage_day"]
            + max(0.0, c.model_days - c.count("use")) * u["usage_model"],
        }
        leases = c.classes.get("held")
        parts["leases (requests in flight)"] = sum(
            self.zset("lease", m) for m in (leases.sizes if leases else [])
        )
        logs = [*_sizes(c, "rpm:k"), *_sizes(c, "rpm:o")]
        parts["rpm logs"] = sum(self.zset("rpm", m) for m in logs)
        minutes = [*_sizes(c, "tpm:k"), *_sizes(c, "tpm:o")]
        parts["tpm minutes"] = sum(self.zset("tpm", m) for m in minutes)
        parts["settled markers (done)"] = c.count("done") * u["done"]
        return parts


def _sizes(c: Census, name: str) -> list[int]:
    found = c.classes.get(name)
    return found.sizes if found else []


async def sizing(r: Redis, n: int) -> Sizing:
    """Each unit's bytes: ``used_memory`` before and after making ``n`` of them (fewer for the
    big logs), through ``RedisStore`` and its scripts, on an emptied server."""
    r.r.flushall()
    clock = FakeClock(START)
    store = RedisStore(r.url, 30_000, clock)
    await store.ping()
    out = Sizing(n=n)
    u = out.units
    ids = iter(range(10**9))
    a_keys = [make_record(i, f"tenant-{i:06d}", "tokens", "sk_gw")[0] for i in range(n)]
    b_keys = [make_record(n + i, k.owner, "tokens", "sk_gw")[0] for i, k in enumerate(a_keys)]
    out.record_json = len(orjson.dumps(a_keys[0].to_store()))

    def admission(record: KeyRecord, **limits: int) -> Admission:
        return Admission(
            f"req_5ca1ebe45ca1{next(ids):08x}", record.id, record.owner, reserve=RESERVE, **limits
        )

    async def admit(admissions: list[Admission], model: str = MODEL) -> list[Settlement]:
        settlements = []
        for part in range(0, len(admissions), 256):
            chunk = admissions[part : part + 256]
            for a, v in zip(chunk, await asyncio.gather(*map(store.admit, chunk)), strict=True):
                assert v.admitted, v
                settlements.append(
                    Settlement(
                        a,
                        v.day,
                        v.month,
                        model,
                        PROMPT,
                        COMPLETION,
                        12.0,
                        finished_at=clock.time(),
                        cost=COST,
                    )
                )
        return settlements

    async def settle(settlements: list[Settlement]) -> None:
        for part in range(0, len(settlements), 256):
            await store.settle_many(settlements[part : part + 256])

    async def served(admissions: list[Admission], model: str = MODEL) -> None:
        await settle(await admit(admissions, model))

    async def grow(work: Awaitable[object], units: int) -> float:
        before = r.used()
        await work
        return (r.used() - before) / units

    try:
        # One-off allocations (the expires table, the scripts' first runs) before measuring:
        # a few requests of every kind on other owners, their keys then deleted.
        warm = [make_record(10**6 + i, f"warm-{i}", "tokens", "sk_gw")[0] for i in range(64)]
        await bounded([partial(store.insert_key, k, None) for k in warm], 64)
        await bounded([partial(store.set_plan, k.owner, "metered") for k in warm], 64)
        await served([admission(k, rpm=1000, tpm=HIGH, concurrency=100) for k in warm * 3])
        r.r.flushall()
        out.empty = r.used()
        inserted = bounded([partial(store.insert_key, k, None) for k in a_keys], 64)
        first = await grow(inserted, n)
        u["key"] = await grow(bounded([partial(store.insert_key, k, None) for k in b_keys], 64), n)
        u["owner"] = first - u["key"]
        plans = [partial(store.set_plan, k.owner, "metered") for k in a_keys]
        u["plan"] = await grow(bounded(plans, 64), n)
        first_use = await grow(served([admission(k) for k in a_keys]), n)
        second_use = await grow(served([admission(k) for k in b_keys]), n)
        clock.advance(86400)  # a new UTC day: a usage row per key (and model), counters reset
        both = a_keys + b_keys
        u["usage_day"] = await grow(served([admission(k) for k in both]), 2 * n)
        u["usage_model"] = await grow(served([admission(k) for k in both], OTHER_MODEL), 2 * n)
        u["key_active"] = second_use - u["usage_day"]
        u["owner_active"] = first_use - second_use

        # leases: one in flight on every key, then 49 more on a tenth of them, 999 on one key
        before_leases = r.used()
        held: list[Settlement] = []
        held_first = admit([admission(k) for k in both])
        u["lease_first"] = await grow(_extend(held, held_first), 2 * n)
        tenth = a_keys[: max(1, n // 10)]
        more = admit([admission(k) for k in tenth for _ in range(49)])
        u["lease_member_lp"] = await grow(_extend(held, more), 49 * len(tenth))
        many = admit([admission(b_keys[0]) for _ in range(999)])
        u["lease_member_sl"] = await grow(_extend(held, many), 999)
        await settle(held)
        out.left_after_settling = r.used() - before_leases

        # rolling minutes at their size: the rpm log (ZSET; limit = size), tpm (ZSET + HASH)
        half, m = n // 2, max(1, n // 20)
        for name, keys_ in (("rpm", a_keys), ("tpm", b_keys)):
            limit = {name: 1 if name == "rpm" else HIGH}
            u[f"{name}_first"] = await grow(
                served([admission(k, **limit) for k in keys_[:half]]), half
            )
            hundred = {name: 100 if name == "rpm" else HIGH}
            group = keys_[half : half + m]
            whole = await grow(
                served([admission(k, **hundred) for k in group for _ in range(100)]), m
            )
            u[f"{name}_member_lp"] = (whole - u[f"{name}_first"]) / 99
            thousand = {name: 1000 if name == "rpm" else HIGH}
            group = keys_[n - 3 :]
            whole = await grow(
                served([admission(k, **thousand) for k in group for _ in range(1000)]), 3
            )
            u[f"{name}_member_sl"] = (whole - u[f"{name}_first"]) / 999
        # a request admitted while the store was down is settled with a marker kept an hour
        outage = [
            Settlement(
                admission(k), 0, 0, MODEL, PROMPT, COMPLETION, 12.0, finished_at=clock.time()
            )
            for k in a_keys
        ]
        u["done"] = await grow(settle(outage), n)
    finally:
        await store.close()
    r.r.flushall()
    return out


async def _extend(held: list[Settlement], admitted: Awaitable[list[Settlement]]) -> None:
    held.extend(await admitted)


# --- runs: 1, 1,000 and 100,000 keys --------------------------------------------------------------


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


# --- one owner on one node -----------------------------------------------------------------------


@dataclass
class Tenant:
    keys: int
    seconds: float
    requests: int
    rate: float
    redis_us: float  # redis-server CPU per request (admission + its share of settlement)
    busy: float  # share of one CPU redis-server used
    calls: dict[str, float]

    @property
    def ceiling(self) -> float:
        """Requests per second when redis-server is the only limit (one core, 100 % busy)."""
        return 1e6 / self.redis_us if self.redis_us else 0.0


async def hot_tenant(stack: Stack, workdir: Path, config: Config, seconds: float) -> Tenant:
    """One owner (10 governed keys, plan with rpm) admitting and settling as fast as one
    process can, on Redis ``TIME`` (no fake clock): every one of its keys is in one slot."""
    r = Redis(stack, workdir, "scale-tenant")
    records = [make_record(i, "hot-tenant", "rpm+plan", "sk_gw")[0] for i in range(10)]
    await insert(r.url, records, ["hot-tenant"])
    store = RedisStore(r.url, TIMEOUT_MS)
    limiter = Limiter(store, config, SystemClock())
    await store.ping()
    await limiter.start()
    ids, sent, stop = "req_" + os.urandom(6).hex(), 0, 0.0

    async def worker() -> None:
        nonlocal sent
        while time.monotonic() < stop:
            sent += 1
            ticket = await limiter.admit(
                f"{ids}{sent:08x}", records[sent % 10], RESERVE, False, MODEL, RESERVE_COST
            )
            limiter.settle(ticket, MODEL, PROMPT, COMPLETION, False, False, cost=COST)

    try:
        stop = time.monotonic() + 1.0  # warm-up
        await asyncio.gather(*(worker() for _ in range(LOAD_CONCURRENCY)))
        before, first = r.stats(), sent
        started = time.monotonic()
        stop = started + seconds
        await asyncio.gather(*(worker() for _ in range(LOAD_CONCURRENCY)))
        await drained(limiter)
        wall = time.monotonic() - started
        after = r.stats()
    finally:
        await limiter.stop()
        await store.close()
    n = sent - first
    return Tenant(
        keys=len(records),
        seconds=wall,
        requests=n,
        rate=n / wall,
        redis_us=(after.cpu - before.cpu) / n * 1e6,
        busy=(after.cpu - before.cpu) / wall,
        calls=per_request(before, after, n),
    )


# --- a gateway that has served every key ---------------------------------------------------------

BODY = orjson.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
)


@dataclass
class GatewayRss:
    keys: int
    idle_mb: float
    after_mb: float
    peak_mb: float
    seconds: float
    statuses: dict[int, int]
    gets_per_request: float  # GETs (key records, plans) during the pass, per request
    recent_gets: int = -1  # GETs when 1,000 recent keys come again (cached: ~0)
    after_clear_gets: int = -1  # the same after one more key (the cache dropped at its bound)
    census: Census | None = None
    predicted: dict[str, float] = field(default_factory=dict)
    baseline: int = 0


async def gateway_rss(
    stack: Stack, workdir: Path, count: int, sizes: Sizing, concurrency: int = 32
) -> GatewayRss:
    """A real gateway (one process, ``gateway run``) on its own Redis holding ``count`` issued
    keys (one owner each, rpm 60, a daily limit), the bundled mock worker as its upstream; one
    chat request per key, ``concurrency`` at a time; its RSS before, during and after."""
    r = Redis(stack, workdir, "scale-gateway-redis")
    baseline = r.used()
    records, fulls = [], []
    for i in range(count):
        record, full = make_record(i, f"tenant-{i:06d}", "tokens", "sk_gw")
        records.append(record.evolve(rpm_limit=60, monthly_limit=None, daily_limit=100_000))
        fulls.append(full)
    extra_record, extra_full = make_record(count, "tenant-extra", "tokens", "sk_gw")
    await insert(r.url, records, [])
    mock_port, port, admin = free_port(), free_port(), free_port()
    mock = stack.start(
        Proc(
            "scale-mock",
            [str(GATEWAY), "mock-worker", "--port", str(mock_port)],
            workdir / "scale-mock.log",
        )
    )
    wait_listening(mock, mock_port)
    config = workdir / "scale-gateway.yaml"
    config.write_text(
        "# Generated by bench/scale.py.\n"
        f"listen: {{host: 127.0.0.1, port: {port}, workers: 1}}\n"
        f"admin: {{host: 127.0.0.1, port: {admin}}}\n"
        f'store: {{url: "{r.url}", timeout_ms: 1000}}\n'
        f'upstreams: {{mock: {{url: "http://127.0.0.1:{mock_port}", max_concurrency: 4096}}}}\n'
        f"models: {{{MODEL}: {{upstreams: [mock]}}}}\n"
        "plans: {free: {rpm: null, monthly_tokens: null, max_keys: null}}\n"
        "default_plan: free\n"
        "log: {level: warning, access: false}\n"
    )
    gw = stack.start(
        Proc(
            "scale-gateway",
            [str(GATEWAY), "run", "--config", str(config)],
            workdir / "scale-gateway.log",
        )
    )
    wait_listening(gw, port)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    statuses: dict[int, int] = {}
    peak = 0

    async def send(session: aiohttp.ClientSession, key: str) -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        async with session.post(url, data=BODY, headers=headers) as resp:
            await resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kb(gw.pid))
            await asyncio.sleep(0.5)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await send(session, fulls[0])
        if statuses != {200: 1}:
            raise RuntimeError(f"the gateway's first answer was {statuses}:\n{gw.tail()}")
        statuses.clear()
        await asyncio.sleep(1.0)
        idle = rss_kb(gw.pid)
        sampler = asyncio.create_task(sample())
        before, started = r.stats(), time.monotonic()
        last = 0.0
        for part in range(0, count, 5000):
            await bounded(
                [partial(send, session, k) for k in fulls[part : part + 5000]], concurrency
            )
            if time.monotonic() - last > 10:
                last = time.monotonic()
                say(f"   {part + 5000:,} keys served, RSS {rss_kb(gw.pid) / 1024:.0f} MB")
        seconds = time.monotonic() - started
        after_stats = r.stats()
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        result = GatewayRss(
            keys=count,
            idle_mb=idle / 1024,
            after_mb=rss_kb(gw.pid) / 1024,
            peak_mb=max(peak, rss_kb(gw.pid)) / 1024,
            seconds=seconds,
            statuses=dict(statuses),
            gets_per_request=per_request(before, after_stats, count).get("get", 0.0),
            baseline=baseline,
        )
        recent = fulls[-1000:]
        if count >= CACHE_MAX:
            # The cache holds CACHE_MAX records: the last 1,000 keys come back without a GET,
            # until one more key is looked up and the whole cache is dropped.
            s0 = r.stats()
            await bounded([partial(send, session, k) for k in recent], concurrency)
            result.recent_gets = r.stats().calls.get("get", 0) - s0.calls.get("get", 0)
            await insert(r.url, [extra_record], [])
            await send(session, extra_full)
            s1 = r.stats()
            await bounded([partial(send, session, k) for k in recent], concurrency)
            result.after_clear_gets = r.stats().calls.get("get", 0) - s1.calls.get("get", 0)
    await asyncio.sleep(1.5)  # the limiter's writer: every settlement in Redis
    result.census = census(r.r)
    result.predicted = sizes.predict(result.census)
    return result


# --- the report ----------------------------------------------------------------------------------

UNITS = (
    (
        "key",
        "key record: `gw:kh:<sha256>` (its JSON), `gw:kid:<id>`, its member of the owner's set",
    ),
    ("owner", "owner: its key set `gw:{o}:keys` (each key's member is counted with the key)"),
    ("plan", "owner's plan name `gw:{o}:plan`, when one is set"),
    ("owner_active", "owner in use: its month counters `tok:o` and last-use hash `lastused`"),
    ("key_active", "key in use: its counters `tok:<k>`, its last-use field, its days index"),
    ("usage_day", "usage row: one key, one model, one UTC day (`use:<k>:<day>`, kept 100 days)"),
    ("usage_model", "each further model (or API) of the same key and day"),
    ("lease_first", "request in flight: the first of its key (the lease set `held:<k>`)"),
    ("lease_member_lp", "each further request in flight on the key (up to 128)"),
    ("lease_member_sl", "each further request in flight on the key (past 128: a skiplist)"),
    ("rpm_first", "rpm log with one entry (`rpm:k:<k>`; the plan's `rpm:o` is the same)"),
    ("rpm_member_lp", "each further admission in the log's minute (up to 128)"),
    ("rpm_member_sl", "each further admission in the log's minute (past 128)"),
    ("tpm_first", "tpm minute with one request (`tpmr:k:<k>` + `tpmrv:k:<k>`; the plan's alike)"),
    ("tpm_member_lp", "each further request in the minute (up to 128)"),
    ("tpm_member_sl", "each further request in the minute (past 128)"),
    ("done", "settlement of a request admitted while the store was down (`done:<id>`, 1 hour)"),
)


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def mb(value: float) -> str:
    return f"{value / 1e6:,.2f}"


def p(times: list[float], pct: float) -> float:
    return percentile(times, pct) * 1e3 if times else 0.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def calls_text(calls: dict[str, float], top: int = 6) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in list(calls.items())[:top])


@dataclass
class Outcome:
    when: str
    commit: str
    quick: bool
    sizes: Sizing
    runs: list[RunResult]
    pair_own: tuple[Side, Side]
    pair_probe: tuple[Side, Side]
    tenant: Tenant
    gateway: GatewayRss | None
    seconds: float = 0.0
    verdicts: list[tuple[str, str, bool]] = field(default_factory=list)


def judge(o: Outcome) -> None:
    by_keys = {r.spec.keys: r for r in o.runs}
    mid = by_keys[1000]
    small, big = mid.checkpoints[0], mid.checkpoints[-1]
    growth = big.census.used / small.census.used - 1
    o.verdicts.append(
        (
            f"Redis memory, 1,000 keys: after {big.requests:,} requests within 10 % of after "
            f"{small.requests:,}",
            f"{mb(small.census.used)} → {mb(big.census.used)} MB ({growth:+.1%})",
            abs(growth) <= 0.10,
        )
    )
    most = max(by_keys)
    # Judged on the same admission in both (one new governed key): the runs' own keys differ in
    # their mix of limits (1 key: all governed) and in how often the owner's plan is read.
    for label, (one, many) in (("one new governed key in each", o.pair_probe),):
        ratio = p(many.times, 99) / p(one.times, 99)
        o.verdicts.append(
            (
                f"admission p99 at {most:,} keys within 10 % of 1 key ({label}, c1, alternated)",
                f"{p(one.times, 99):.3f} ms vs {p(many.times, 99):.3f} ms: x{ratio:.2f}",
                ratio <= 1.10,
            )
        )
        if one.server_p99 and many.server_p99:
            ratio = many.server_p99 / one.server_p99
            o.verdicts.append(
                (
                    f"Redis-side EVALSHA p99 at {most:,} keys within 10 % of 1 key ({label})",
                    f"{one.server_p99:.0f} µs vs {many.server_p99:.0f} µs: x{ratio:.2f}",
                    ratio <= 1.10,
                )
            )
    for run in o.runs:
        for c in run.checkpoints:
            ratio = c.formula / c.census.held
            o.verdicts.append(
                (
                    f"sizing formula within 20 % of used_memory: {plural(run.spec.keys, 'key')}, "
                    f"{c.requests:,} requests",
                    f"{mb(c.formula)} vs {mb(c.census.held)} MB (x{ratio:.2f})",
                    abs(ratio - 1) <= 0.20,
                )
            )
    g = o.gateway
    if g is not None:
        o.verdicts.append(
            (
                f"gateway RSS ≤ 200 MB per worker after {g.keys:,} keys",
                f"{g.after_mb:.0f} MB after, {g.peak_mb:.0f} MB peak (idle {g.idle_mb:.0f} MB)",
                g.peak_mb <= 200,
            )
        )
        if g.census is not None:
            total = sum(g.predicted.values())
            ratio = total / g.census.held
            o.verdicts.append(
                (
                    f"sizing formula within 20 % of used_memory: the gateway's Redis ({g.keys:,} "
                    "keys, real time)",
                    f"{mb(total)} vs {mb(g.census.held)} MB (x{ratio:.2f})",
                    abs(ratio - 1) <= 0.20,
                )
            )


def report(o: Outcome) -> list[str]:
    s = o.sizes
    mode = "quick (smoke) mode" if o.quick else "full mode"
    lines = [
        f"## Scale: Redis memory and admission cost by keys and requests, {o.when} `{o.commit}`",
        "",
        f"`bench/scale.py`, {mode}, {o.seconds:.0f} s; redis-server "
        f"{_redis_version()}, no persistence, default encodings (listpack up to "
        f"{LISTPACK_MAX} entries). The store is driven by a `Limiter` as a gateway process "
        "drives it (one admission EVALSHA per request, settlements batched by its writer), "
        f"{LOAD_CONCURRENCY} requests in flight; time is a fake clock given to the scripts.",
        "",
        f"### Bytes of Redis memory per unit of state (measured on {s.n:,} of each)",
        "",
        "`used_memory` growth when the store's own scripts make them (key and value, the "
        "main and expires dictionaries' entries, allocator rounding). A key record here is "
        f"{s.record_json} bytes of JSON (it grows with a long name, description, allowlists, "
        "model lists).",
        "",
        "| unit | bytes |",
        "|---|--:|",
        *[f"| {text} | {s.units[name]:,.0f} |" for name, text in UNITS],
        "",
        f"Every lease settled: Redis back within {s.left_after_settling:+,} bytes of before "
        f"the {2 * s.n + 49 * max(1, s.n // 10) + 999:,} leases were taken.",
        "",
        "### Runs",
        "",
        "Keys: one owner each, profiles in turn: governed (own rpm, concurrency and token "
        "limits; owner on a plan with rpm), tokens only, rpm only, tpm (never reached: the "
        "logs hold what the last minute brought). *Windows*: fake time the requests spanned. "
        "*Formula*: the units above times what SCAN found (bench/scale.py `Sizing.predict`), "
        "against used_memory less the clients' buffers. "
        "Commands per request count the scripts' inner commands; admission latency is at "
        "concurrency 1, after the census (the next requests of the round).",
        "",
        "| keys | requests | windows | used_memory MB | of which clients MB | formula MB "
        "| Redis keys | req/s | commands/req | EVALSHA/req | GET/req | Redis CPU µs/req "
        "| admit p50 / p99 ms |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in o.runs:
        for c in run.checkpoints:
            lines.append(
                f"| {run.spec.keys:,} | {c.requests:,} | {c.span:,.0f} s | {mb(c.census.used)} "
                f"| {mb(c.census.clients)} "
                f"| {mb(c.formula)} | {c.census.total_keys:,} | {c.rate:,.0f} "
                f"| {sum(c.calls.values()):.1f} | {c.calls.get('evalsha', 0):.2f} "
                f"| {c.calls.get('get', 0):.2f} | {c.redis_us:.0f} "
                f"| {p(c.probe, 50):.3f} / {p(c.probe, 99):.3f} |"
            )
    lines += ["", "Commands per request by name (the last checkpoint of each run):", ""]
    for run in o.runs:
        c = run.checkpoints[-1]
        lines.append(f"- {plural(run.spec.keys, 'key')}: {calls_text(c.calls, 10)}")
    lines += [
        "",
        "What Redis holds at the last checkpoint of each run, by key class (members: ZSET and "
        "SET members counted, HASH fields from a sample; bytes: `MEMORY USAGE` of a sample):",
        "",
        "| class | "
        + " | ".join(f"{plural(r.spec.keys, 'key')}: keys / members / bytes" for r in o.runs)
        + " |",
        "|---|" + "--:|" * len(o.runs),
    ]
    for name in CLASS_ORDER:
        cells = []
        for run in o.runs:
            found = run.checkpoints[-1].census.classes.get(name)
            cells.append(
                f"{found.keys:,} / {found.members:,} / {found.mean_bytes:,.0f}" if found else "-"
            )
        if any(cell != "-" for cell in cells):
            lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", "Formula by part at the last checkpoint (MB):", ""]
    parts = list(o.runs[0].checkpoints[-1].predicted)
    lines += [
        "| part | " + " | ".join(f"{plural(r.spec.keys, 'key')}" for r in o.runs) + " |",
        "|---|" + "--:|" * len(o.runs),
    ]
    for part in parts:
        cells = [mb(r.checkpoints[-1].predicted[part]) for r in o.runs]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    own, probe = o.pair_own, o.pair_probe
    most = max(r.spec.keys for r in o.runs)
    lines += [
        "",
        f"### Admission latency: 1 key against {most:,} keys",
        "",
        "At concurrency 1, in alternated blocks on the two runs' Redis servers (both loaded, "
        "both alive), so the machine's drift falls on both alike. Time is `Limiter.admit`: "
        "with each run's own keys in turn it includes the owner's plan read (a GET) whenever "
        f"the limiter has not read it for {PLAN_TTL:g} s (of fake time; "
        f"{o.runs[-1].checkpoints[-1].calls.get('get', 0):.2f} GET per request at "
        f"{plural(most, 'key')}, {o.runs[0].checkpoints[-1].calls.get('get', 0):.2f} at 1); "
        "one new key in each is the same admission on both, only the number of other keys "
        "differs. Beside, Redis's own time per EVALSHA meanwhile (`INFO latencystats` after "
        "`CONFIG RESETSTAT`: the admissions and their settlements, one each), which the "
        "client's scheduling on a shared machine does not reach:",
        "",
        "| probe | 1 key p50 / p99 ms | " + f"{most:,} keys p50 / p99 ms | p99 ratio "
        "| Redis EVALSHA p50 / p99 / mean µs, 1 key | " + f"{most:,} keys |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for label, (a, b) in (
        (f"each run's own keys, in turn ({len(own[0].times):,} each)", own),
        (f"one new governed key in each ({len(probe[0].times):,} each)", probe),
    ):
        lines.append(
            f"| {label} | {p(a.times, 50):.3f} / {p(a.times, 99):.3f} | {p(b.times, 50):.3f} / "
            f"{p(b.times, 99):.3f} | {p(b.times, 99) / p(a.times, 99):.2f} "
            f"| {a.server_p50:.0f} / {a.server_p99:.0f} / {a.server_mean:.0f} "
            f"| {b.server_p50:.0f} / {b.server_p99:.0f} / {b.server_mean:.0f} |"
        )
    lines += [
        "",
        "The targets judge the second row (the same admission on both). The first differs "
        "in more than the number of keys: the 1-key run's key is governed, the others' keys "
        "cycle through four profiles (tpm among them), and their owners' plans are read again.",
    ]
    t = o.tenant
    lines += [
        "",
        "### One owner on one Redis node",
        "",
        f"One owner, {t.keys} governed keys (plan with rpm), admitted and settled by one "
        f"process ({LOAD_CONCURRENCY} in flight) for {t.seconds:.1f} s on Redis `TIME`: "
        f"**{t.rate:,.0f} requests/s**, redis-server {t.redis_us:.0f} µs of CPU per request "
        f"({t.busy:.0%} of one core busy); one core fully busy would take "
        f"**{t.ceiling:,.0f} requests/s**. Every key of an owner is in its slot, so on a "
        "Cluster this is one owner's ceiling whatever the number of shards. Commands per "
        f"request: {calls_text(t.calls, 10)}.",
    ]
    g = o.gateway
    if g is not None:
        lines += [
            "",
            f"### A gateway that has served {g.keys:,} keys",
            "",
            f"`gateway run` (1 worker) on its own Redis holding {g.keys:,} issued keys (one "
            "owner each, rpm 60, a daily limit), the bundled mock worker upstream; one chat "
            f"request per key, 32 at a time, in {g.seconds:.0f} s ({g.keys / g.seconds:,.0f} "
            f"req/s); answers {g.statuses}. RSS: idle {g.idle_mb:.0f} MB, after "
            f"{g.after_mb:.0f} MB, peak {g.peak_mb:.0f} MB. GETs per request during the pass: "
            f"{g.gets_per_request:.2f} (the key record on its first use, and the owner's plan).",
            "",
            f"The key cache (gateway/auth/service.py) keeps at most {CACHE_MAX:,} records (found "
            f"keys, {POSITIVE_TTL:g} s) and apart {CACHE_MAX:,} hashes not found "
            f"({NEGATIVE_TTL:g} s); it is not LRU: an entry past its time stays until "
            "overwritten, and the first new key past the bound drops the whole table.",
        ]
        if g.recent_gets >= 0:
            lines.append(
                f"Measured: the last 1,000 keys asked again: {g.recent_gets} GETs (cached); "
                f"after one more key was looked up: {g.after_clear_gets} GETs for the same "
                "1,000 (the table was dropped)."
            )
        if g.census is not None:
            total = sum(g.predicted.values())
            lines.append(
                f"Its Redis after the pass: used_memory {mb(g.census.used)} MB (clients "
                f"{mb(g.census.clients)} MB), formula "
                f"{mb(total)} MB, {g.census.total_keys:,} Redis keys."
            )
    lines += ["", "### Against the targets", "", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {name} | {got} | {verdict(ok)} |" for name, got, ok in o.verdicts]
    return lines


def summary_line(o: Outcome) -> str:
    parts = [
        f"{name.split(':')[0]}: {got} {verdict(ok)}"
        for name, got, ok in o.verdicts
        if not name.startswith("sizing")
    ]
    sizing = [ok for name, _, ok in o.verdicts if name.startswith("sizing")]
    parts.append(f"sizing formula {sum(sizing)}/{len(sizing)} within 20 %")
    return f"- {o.when} `{o.commit}`: scale ({'quick' if o.quick else 'full'}): " + "; ".join(parts)


def _redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        return out.stdout.split("v=")[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=WORK.parent
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def add_to_results(lines: list[str], summary: str) -> None:
    """The section goes before RESULTS.md's History and the summary at its end; nothing else
    of the file changes."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = "\n".join(lines).rstrip("\n") + "\n"
    head, found, tail = text.partition("\n## History\n")
    if found:
        text = head.rstrip("\n") + "\n\n" + section + "\n## History\n" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n## History\n\n"
    RESULTS.write_text(text.rstrip("\n") + "\n" + summary + "\n")


# --- main ----------------------------------------------------------------------------------------


async def bench(stack: Stack, workdir: Path, args: argparse.Namespace) -> Outcome:
    started = time.monotonic()
    config = parse_text(PLANS, "bench/scale.py", {})
    quick = bool(args.quick)
    if quick:
        specs = [
            Spec(1, 0.04, (3_000, 20_000)),
            Spec(1000, 0.04, (3_000, 20_000)),
            Spec(10_000, 0.003, (3_000, 20_000)),
        ]
        n, probes, blocks, block, tenant_s, gateway_keys = 200, 300, 6, 50, 3.0, 3_000
    else:
        specs = [
            Spec(1, 0.012, (10_000, 100_000)),
            Spec(1000, 0.012, (10_000, 1_000_000)),
            Spec(100_000, 0.0003, (10_000, 200_000)),
        ]
        n, probes, blocks, block, tenant_s, gateway_keys = 2000, 2000, 20, 100, 10.0, 100_000
    if args.big:
        specs[1] = Spec(1000, specs[1].step, (specs[1].checkpoints[0], args.big))
    say(f"== sizing: bytes per unit of state ({n:,} of each)")
    sizer = Redis(stack, workdir, "scale-sizing")
    sizes = await sizing(sizer, n)
    for name, _ in UNITS:
        say(f"   {name:18} {sizes.units[name]:8,.0f} B")
    runs = []
    for spec in specs:
        say(f"== {plural(spec.keys, 'key')}, {spec.step * 1e3:g} ms of windows per request")
        runs.append(await scale_run(stack, workdir, spec, sizes, config, probes))
    one, many = (runs[0].driver, runs[0].redis), (runs[-1].driver, runs[-1].redis)
    say(f"== admission latency, 1 key against {specs[-1].keys:,} keys (alternated blocks)")
    pair_own = await paired(one, many, blocks, block, probe_keys=False)
    pair_probe = await paired(one, many, blocks, block, probe_keys=True)
    for label, (a, b) in (("own keys", pair_own), ("new key", pair_probe)):
        say(
            f"   {label}: p99 {p(a.times, 99):.3f} ms vs {p(b.times, 99):.3f} ms; Redis "
            f"EVALSHA p99 {a.server_p99:.0f} µs vs {b.server_p99:.0f} µs"
        )
    for run in runs:
        await run.driver.close()
    say("== one owner on one node")
    tenant = await hot_tenant(stack, workdir, config, tenant_s)
    say(f"   {tenant.rate:,.0f} req/s, redis {tenant.redis_us:.0f} µs/req ({tenant.busy:.0%})")
    gateway = None
    if not args.no_gateway:
        say(f"== a gateway serving {gateway_keys:,} keys")
        gateway = await gateway_rss(stack, workdir, gateway_keys, sizes)
        say(
            f"   RSS idle {gateway.idle_mb:.0f} MB, after {gateway.after_mb:.0f} MB, "
            f"peak {gateway.peak_mb:.0f} MB; answers {gateway.statuses}"
        )
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    outcome = Outcome(when, _commit(), quick, sizes, runs, pair_own, pair_probe, tenant, gateway)
    outcome.seconds = time.monotonic() - started
    judge(outcome)
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument("--no-gateway", action="store_true", help="leave out the gateway's RSS")
    parser.add_argument("--big", type=int, default=0, help="the 1,000-key run's last checkpoint")
    parser.add_argument(
        "--no-results",
        action="store_true",
        help="leave bench/RESULTS.md alone (quick never writes it)",
    )
    args = parser.parse_args()
    workdir = WORK / "scale"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        import uvloop

        runner: Callable[[Awaitable[Outcome]], Outcome] = uvloop.run  # type: ignore[assignment]
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    with Stack() as stack:
        outcome = runner(bench(stack, workdir, args))
    lines = report(outcome)
    (workdir / "scale.md").write_text("\n".join(lines) + "\n")
    say("")
    for name, got, ok in outcome.verdicts:
        say(f"{verdict(ok)}  {name}: {got}")
    say(f"report: {workdir / 'scale.md'}")
    if not outcome.quick and not args.no_results:
        add_to_results(lines, summary_line(outcome))
        say(f"added to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
