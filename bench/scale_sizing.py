"""The scale bench's sizing: the bytes of Redis memory per unit of state (a key
record, an owner, a request in flight, a log entry...), each measured as Redis's growth when
the store's own scripts make many of them, and the formula that predicts a census from them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial

import orjson
from scale_base import (
    COMPLETION,
    COST,
    HIGH,
    LISTPACK_MAX,
    MODEL,
    OTHER_MODEL,
    PROMPT,
    RESERVE,
    START,
    Redis,
    bounded,
    make_record,
)
from scale_census import Census

from gateway.clock import FakeClock
from gateway.records import Admission, KeyRecord, Settlement
from gateway.store.redis import RedisStore


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
