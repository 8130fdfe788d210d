"""What Redis holds, for the scale bench: every key by class (the layout of
gateway/store/redis_codec.py), the members of each ZSET and SET, HASH fields and ``MEMORY
USAGE`` from a sample, and ``used_memory``."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import redis
from scale_base import held

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
