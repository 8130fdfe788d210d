"""The Redis store's key layout, script sources and reply decoding (no I/O).

Every key an admission touches carries the owner's hash tag, so each script runs on one Cluster
slot; so does every key of a settlement but the usage rows, which live in the key's usage
stripe (one of ``STRIPES`` slots, chosen by the key id: a tenant's keys spread over shards)::

    gw:{<owner>}:rpmr:k:<keyId>     ZSET request id -> minus the admission time in whole
                                    microseconds, newest first: a listpack's ZADD stops at its
                                    head (the key's rpm log; rpmu:k:<keyId> before, by the time
                                    itself, a new name as for held: below; rpm:k:<keyId> before
                                    that, in seconds)
    gw:{<owner>}:rpmr:o             the same for the plan rpm log (rpmu:o, rpm:o before)
    gw:{<owner>}:held:<keyId>       ZSET request id -> -(lease end x 10^6 + the microsecond it
                                    was taken in), new leases first (calendar.lua lease_score;
                                    every admitted request holds one until settled: the
                                    settle-once marker). lease:<keyId> before, scored by the
                                    lease's end: a new name, so that during an upgrade neither
                                    version misreads the other's scores (each counts its own
                                    leases; the old sets expire by their TTL)
    gw:{<owner>}:tok:<keyId>        HASH d (day id), dt (day tokens), dc (day micro-dollars),
                                    m (month id), mt, mc,
                                    x (when the key's log and lease TTLs were last renewed)
    gw:{<owner>}:tok:o              HASH m (month id), mt (plan month tokens), x (as above,
                                    for the plan rpm log), mc (the month's micro-dollars)
    gw:{<owner>}:tpmr:k:<keyId>     ZSET request id -> minus the admission time, newest first
                                    (the key's rolling minute of tokens; only with a tpmLimit)
    gw:{<owner>}:tpmrv:k:<keyId>    HASH request id -> tokens, s (their sum)
    gw:{<owner>}:tpmr:o, tpmrv:o    the same for the plan's tpm (tpm:k:<keyId>, tpmv:k:<keyId>,
                                    tpm:o, tpmv:o before, by the time itself: new names for
                                    both, as the sum holds what its log has not yet dropped)
    gw:{<owner>}:done:<requestId>   settled marker of a request admitted without the store
                                    (on_error: open; EX 1 hour): settle runs once
    gw:{use:<s>}:use:<owner>:<keyId>:<day>  HASH <stat>:<model> (r p c e l b<i>; e absent: 0
                                    errors); EXPIRE USAGE_DAYS. s: the key's stripe
    gw:{use:<s>}:usedays:<owner>:<keyId>  ZSET of the days with usage (range reads)
    gw:{use:<s>}:floor:<process>    a gateway process's floor in the stripe, '+' when
                                    numbers are listed above it (a Cluster's usage.lua: exactly
                                    once; EX MARK_TTL)
    gw:{use:<s>}:above:<process>    HASH number -> 1: its rows written at or above the floor
    gw:{<owner>}:pending            HASH request id -> row (JSON): a Cluster's counted rows not
                                    yet written in their stripes (settle.lua; EX ROWS_TTL)
    gw:{<owner>}:pending:at         ZSET request id -> when counted, or last adopted
    gw:{<owner>}:use:<keyId>:<day>, gw:{<owner>}:usedays:<keyId>
                                    the same before the stripes (still read, until they expire)
    gw:{<owner>}:lastused           HASH keyId -> last use
    gw:{<owner>}:keys               SET of the owner's key ids (max_keys is checked on it)
    gw:{<owner>}:plan               the owner's plan name
    gw:{<owner>}:budget             the owner's own monthly budget (micro-dollars), over its plan's
    gw:kh:<sha256>                  the key record (orjson of ``KeyRecord.to_store()``)
    gw:kid:<keyId>                  the record's sha256
    gw:hit:<counter>                HASH s (window start), c (events): ``hit`` counters

Owners and key ids are escaped (``%``, ``{``, ``}``, ``:`` as ``%XX``; the empty owner as ``%``)
so no owner can break its tag or collide with another's keys (nor take a stripe's: ``use:<s>``
holds a colon).
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import cast

import orjson

from gateway.limits import windows
from gateway.records import (
    LATENCY_BOUNDS_MS,
    Admission,
    Refusal,
    Settlement,
    Spent,
    UsageDay,
    Verdict,
    latency_bucket,
)
from gateway.store.base import LEASE_SECONDS, SETTLED_TTL, USAGE_DAYS
from gateway.store.resp import Run

CHANNEL = "gw:invalidate"
COUNTER_TTL = 35 * 86400  # a month's counter outlives its month
_SETTLED_TTL, _USAGE_DAYS = str(int(SETTLED_TTL)), str(USAGE_DAYS)
HIT_WINDOW = 60.0  # the fixed window of ``hit`` counters (auth failures, route rates)
# Usage stripes: a key's usage rows live in stripe crc32(key id) mod STRIPES. Fixed: a key's rows
# are found by it (changing it would hide the rows already written).
STRIPES = 64
MARK_TTL = 86400  # seconds a process's floor in a stripe outlives its last write
# seconds the rows kept in an idle owner's slot live (settle.lua's ROWS_TTL): under MARK_TTL, so
# a row adopted from there always finds its process's floor in the stripe
ROWS_TTL = MARK_TTL // 2
REFUSALS: tuple[Refusal | None, ...] = (
    None,
    "rpm",
    "concurrency",
    "daily",
    "monthly",
    "tpm",
    "daily_budget",
    "monthly_budget",
    "plan_rpm",
    "plan_monthly",
    "plan_tpm",
    "plan_budget",
)
_UNSAFE = re.compile(r"[%{}:]")
_BUCKETS = len(LATENCY_BOUNDS_MS) + 1


def script(name: str) -> str:
    """A script's source; the calendar helpers are prepended to those that need time."""
    text = resources.files("gateway.store").joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if name == "insert_key":
        return text
    parts = ["calendar", "usage_rows"] if name in ("settle", "usage") else ["calendar"]
    shared = [
        resources.files("gateway.store").joinpath(f"{p}.lua").read_text("utf-8") for p in parts
    ]
    return "\n".join([*shared, text])


def esc(text: str) -> str:
    if not text:
        return "%"
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", text)


def tag(owner: str) -> str:
    """The prefix of every key of ``owner``, hash tag included."""
    return f"gw:{{{esc(owner)}}}:"


def num(value: int | None) -> str:
    return "" if value is None else str(value)


# -- admit ----------------------------------------------------------------------------------
# admit.lua's numbers (its header says which), packed little-endian: a set of limits (a flag,
# 1 when it applies, and the limit, per limit), and per admission its key set's and its set of
# limits' places in the call, reserve and reserve cost. Limits and amounts as doubles, what Lua
# holds them as (a whole number of any size packs: as the text's tonumber read it, rounded).
LIMITS = struct.Struct("<" + "Bd" * 11)
ADMISSION = struct.Struct("<HHdd")


def admit_call(admissions: Sequence[Admission], now: str) -> tuple[Run, Run]:
    """One ``admit`` call deciding ``admissions`` in order (on a Cluster: one owner's): its
    KEYS and ARGV as runs; each key's KEYS and each set of limits sent once."""
    key_sets: dict[Run, int] = {}
    limit_sets: dict[bytes, int] = {}
    items, rids = [], []
    for a in admissions:
        k = key_sets.setdefault(_admit_keys(a.owner, a.key_id), len(key_sets))
        lim = limit_sets.setdefault(_limits(a), len(limit_sets))
        items.append(ADMISSION.pack(k, lim, a.reserve, a.reserve_cost))
        rids.append(a.request_id)
    keys = list(key_sets)
    whole = keys[0] if len(keys) == 1 else Run(keys, 9 * len(keys))
    # the two packed parts are bytes (packed as they are: resp.Run takes them, unkept)
    packed = cast(list[str], [b"".join(limit_sets), b"".join(items)])
    return whole, Run([now, _ADMIT_FIXED, *packed, *rids], 6 + len(rids))


_ADMIT_FIXED = Run((repr(LEASE_SECONDS), repr(windows.RPM_WINDOW), str(COUNTER_TTL)))
_LIMITS_KEPT = 1024
_limit_sets: dict[tuple[int | None, ...], bytes] = {}


def _limits(a: Admission) -> bytes:
    """An admission's limits as admit.lua reads a set of them: made once per set (the
    operator's configuration, a few per key: emptied when full), not per request."""
    limits: tuple[int | None, ...] = (a.rpm, a.concurrency, a.daily, a.monthly, a.plan_rpm)
    limits += (a.plan_monthly, a.tpm, a.daily_budget, a.monthly_budget, a.plan_tpm, a.plan_budget)
    packed = _limit_sets.get(limits)
    if packed is None:
        if len(_limit_sets) >= _LIMITS_KEPT:
            _limit_sets.clear()
        pairs = [(0, 0) if v is None else (1, v) for v in limits]
        packed = _limit_sets[limits] = LIMITS.pack(*(x for pair in pairs for x in pair))
    return packed


# admit.lua's reply per admission: 12 whole numbers, then 7 doubles (the script's header says
# which), packed little-endian; one unpack reads them all, the doubles bit for bit.
VERDICT = struct.Struct("<12q7d")


def verdict(a: Admission, reply: bytes) -> Verdict:
    """The script's reply as the Verdict ``MemoryStore`` would give (same arithmetic)."""
    r = VERDICT.unpack(reply)
    return windows.verdict_of(
        a,
        REFUSALS[r[0]],
        r[12],  # retry after
        (r[1], r[13]),  # the headers' log: entries, the oldest's time (0 when none)
        Spent(*r[4:12]),  # in its fields' order (tests/limits/test_records_by_position.py)
        (r[2], r[3], r[14], r[15], r[16]),  # day, month, now, to midnight, to month end
        r[17:19],  # to the minutes' resets
    )


# The KEYS of a call, after the owner's tag ({k}: the key id, escaped)
_ADMIT_KEYS: tuple[str, ...] = ("rpmr:k:{k}", "rpmr:o", "held:{k}", "tok:{k}", "tok:o")
_ADMIT_KEYS += ("tpmr:k:{k}", "tpmrv:k:{k}", "tpmr:o", "tpmrv:o")
# the fourth: the settled marker's prefix (the request id is appended); the sixth and seventh,
# the usage rows in the owner's slot, are the layout before the stripes (``usage_keys``)
_SETTLE_KEYS: tuple[str, ...] = ("held:{k}", "tok:{k}", "tok:o", "done:", "lastused", "use:{k}:")
_SETTLE_KEYS += ("usedays:{k}", "tpmrv:k:{k}", "tpmrv:o")


@functools.lru_cache(maxsize=8192)
def _keys(owner: str, key_id: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """A call's KEYS for one key, built once per key, not per request."""
    t, k = tag(owner), esc(key_id)
    return tuple(t + name.format(k=k) for name in names)


@functools.lru_cache(maxsize=8192)
def _admit_keys(owner: str, key_id: str) -> Run:
    return Run(_keys(owner, key_id, _ADMIT_KEYS))


# -- usage stripes --------------------------------------------------------------------------
def stripe(key_id: str) -> int:
    return zlib.crc32(key_id.encode()) % STRIPES


def stripe_tag(number: int) -> str:
    return f"gw:{{use:{number}}}:"


@functools.lru_cache(maxsize=8192)
def usage_keys(owner: str, key_id: str) -> tuple[str, str]:
    """A key's usage key prefix (the day is appended) and days index, in its stripe."""
    t, o, k = stripe_tag(stripe(key_id)), esc(owner), esc(key_id)
    return f"{t}use:{o}:{k}:", f"{t}usedays:{o}:{k}"


def legacy_usage_keys(owner: str, key_id: str) -> tuple[str, str]:
    """The same in the owner's slot, where rows were written before the stripes."""
    t, k = tag(owner), esc(key_id)
    return f"{t}use:{k}:", f"{t}usedays:{k}"


def row_marks(number: int, process: str) -> tuple[str, str]:
    """A process's floor and numbers written above it in stripe ``number`` (usage.lua)."""
    t = stripe_tag(number)
    return f"{t}floor:{process}", f"{t}above:{process}"


@functools.lru_cache(maxsize=8192)
def _settle_keys(owner: str, key_id: str, striped: bool) -> Run:
    """settle.lua's KEYS for one key: with ``striped`` (one Redis: one script may touch any
    slot) the usage rows in the key's stripe; without (a Cluster: the owner's slot only), the
    owner's rows not yet written in their stripes (usage.lua writes them). The fourth is the
    settled marker's prefix (in the owner's slot: a settlement of an admission the store made
    never reads it)."""
    keys = _keys(owner, key_id, _SETTLE_KEYS)
    if striped:
        return Run((*keys[:5], *usage_keys(owner, key_id), *keys[7:]))
    t = tag(owner)
    return Run((*keys[:5], f"{t}pending", f"{t}pending:at", *keys[7:]))


# -- settle ---------------------------------------------------------------------------------
# settle.lua's fields of a settlement (its header says which), packed little-endian (counts
# and amounts as doubles, as admit.lua's)
SETTLEMENT = struct.Struct("<HHHHBHqqdddBdBdddBB")
_SETTLE_FIXED = Run((_SETTLED_TTL, _USAGE_DAYS))


def settle_calls(
    settlements: Sequence[Settlement], now: str, rows: Sequence[str] | None = None
) -> tuple[Run, Run]:
    """One call settling ``settlements`` in order: its KEYS and ARGV as runs, each key's KEYS
    and each text sent once. Without ``rows`` (one Redis) the usage rows are written in the
    stripes; with (a Cluster: one owner's settlements), ``rows`` names each one's usage row
    there (``<process>:<number>``), written by usage.lua (settle.lua returns it if counted)."""
    key_sets: dict[Run, int] = {}
    keys: list[str | Run] = []
    texts: dict[str, int] = {}
    items, n = [], 0  # n: the key sets
    for i, s in enumerate(settlements):
        a = s.admission
        run = _settle_keys(a.owner, a.key_id, rows is None)
        k = key_sets.get(run)
        if s.day == 0:  # its settled marker is read (admitted without the store): a set apart
            marked = list(run)
            marked[3] += a.request_id
            keys += marked
            k, n = n, n + 1
        elif k is None:
            k = key_sets[run] = n
            keys.append(run)
            n += 1
        row = rows[i] if rows and s.record else None
        items.append(_settlement(s, k, texts, row))
    whole = keys[0] if len(keys) == 1 else Run(keys, 9 * n)
    packed = cast(str, b"".join(items))  # bytes, packed as they are (resp.Run takes them)
    return cast(Run, whole), Run([now, _SETTLE_FIXED, packed, *texts], 4 + len(texts))


def _settlement(s: Settlement, k: int, texts: dict[str, int], row: str | None) -> bytes:
    """One settlement's fields as settle.lua reads them, its texts' places taken in ``texts``
    (those it adds are appended)."""
    a, text = s.admission, texts.setdefault
    mode = 0 if not s.record else 1 if row is None else 2
    return SETTLEMENT.pack(
        k,
        text(a.request_id, len(texts)),
        text(a.key_id, len(texts)),
        text(usage_line(s.model, s.api), len(texts)),
        mode,
        0 if row is None else text(row, len(texts)),
        s.day,
        s.month,
        s.prompt_tokens + s.completion_tokens - a.reserve,
        s.prompt_tokens,
        s.completion_tokens,
        s.error,
        s.latency_ms,
        latency_bucket(s.latency_ms),
        s.finished_at,
        s.cost - a.reserve_cost,
        s.cost,
        a.tpm is not None,
        a.plan_tpm is not None,
    )


@dataclass(slots=True, frozen=True)
class Row:
    """A counted settlement's usage row, as settle.lua keeps it in the owner's slot until it is
    written in its stripe (by usage.lua: ``usage`` is its ARGV but the number)."""

    request_id: str
    process: str  # the gateway process that counted it, and
    number: int  # its number there: the row's name in the stripe
    key_id: str
    usage: tuple[str, ...]  # model line, prompt, completion, error, latency, bucket, finished

    @classmethod
    def decode(cls, raw: bytes | str) -> Row:
        rid, name, key_id, *usage = orjson.loads(raw)
        process, _, number = name.rpartition(":")
        return cls(rid, process, int(number), key_id, tuple(usage))

    def args(self) -> list[str]:
        """usage.lua's ARGV of this row."""
        return [str(self.number), *self.usage, str(USAGE_DAYS)]


API_MARK = "\x1f"  # between a model and its API in a usage field (chat's fields have none)


def usage_line(model: str, api: str) -> str:
    """The name a model's usage through ``api`` is kept under in a day's usage hash."""
    return model if api == "chat" else f"{model}{API_MARK}{api}"


def usage_rows(key_id: str, day: int, fields: dict[bytes, bytes]) -> list[UsageDay]:
    """One usage hash (one key, one day) as rows per model and API, in order."""
    stats: dict[str, dict[str, bytes]] = {}
    for field, value in fields.items():
        stat, _, model = field.decode().partition(":")
        stats.setdefault(model, {})[stat] = value
    rows = []
    for model in sorted(stats):
        got = stats[model]
        buckets = [int(got.get(f"b{i}", b"0")) for i in range(_BUCKETS)]
        name, _, api = model.partition(API_MARK)
        rows.append(
            UsageDay(
                date=windows.day_text(day),
                key_id=key_id,
                model=name,
                api=api or "chat",
                requests=int(got.get("r", b"0")),
                prompt_tokens=int(got.get("p", b"0")),
                completion_tokens=int(got.get("c", b"0")),
                errors=int(got.get("e", b"0")),
                latency_ms_total=float(got.get("l", b"0")),
                latency_buckets=tuple(buckets),
            )
        )
    return rows
