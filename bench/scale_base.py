"""What every part of the scale bench (``bench/scale.py``) shares: its constants (the
fake clock's start, the model, the tokens and costs of a request, the limits of each key
profile), a ``redis-server`` of its own and its readings, the keys made and inserted through
the store, and how figures are written."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import redis
from common import percentile
from procs import Proc, Stack, free_port, wait_listening

from gateway.auth import keys as keymod
from gateway.records import KeyRecord
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
