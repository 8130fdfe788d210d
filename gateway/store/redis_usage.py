"""Usage rows on Redis: a Cluster's settlement in two steps, and the reports' reads.

A key's usage rows live in its usage stripe (``redis_codec.usage_keys``), not in its owner's
slot, so one tenant's rows spread over the Cluster's shards while everything its admissions and
settlements must decide together (leases, windows, counters) stays in the owner's slot.

- One Redis: ``settle.lua`` writes the rows in the stripe itself (one script may touch any
  slot there), so nothing here runs: one call per batch, as before the stripes.
- A Cluster (``ClusterSettlement``): ``settle.lua`` runs in each owner's slot, the settlements
  of one owner together, and says which counted (its lease was held); their rows then go to
  their stripes through ``usage.lua``, one call per stripe. The rows wait here, numbered by
  this process in order, until their stripe confirms them: a call that failed, or whose reply
  was lost, is sent again with every row of the stripe not yet confirmed, oldest first, and the
  stripe's high-water mark for this process skips what it already wrote. The limits are exact
  whatever happens between the steps; the usage misses the rows of a process that dies holding
  them, or of a first step whose reply was lost (docs/operations.md).
- Reports read both layouts: the stripes and the owner-slot rows written before them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.records import RowSink, Settlement, UsageDay
from gateway.store import redis_codec as codec
from gateway.store.base import StoreError
from gateway.store.transport import Call, Command, RedisTransport, Script, noscript, why

log = logging.getLogger("gateway.store")

# Settlements per settle.lua call (of one owner on a Cluster, of any on one Redis): a script
# call's own cost (~10 µs of Redis CPU) is shared by 32, and each call's run (a script blocks
# Redis meanwhile) stays about a millisecond.
SETTLE_CHUNK = 32
USAGE_CHUNK = 256  # rows per usage.lua call
WAITING_MAX = 65_536  # rows waiting for their stripes, at most (past it the oldest are dropped)
REPORT_PART = 250  # usage days read (and decoded) per round trip of a report
REPORT_KEYS = 100  # keys whose days indexes a report reads per round trip

Pipe = Callable[[list[Command], bool], Awaitable[list[Any]]]


@dataclass(slots=True, frozen=True)
class Row:
    """A counted settlement's usage, waiting for its stripe."""

    number: int  # this process's, in the order rows were counted
    settlement: Settlement
    finished: bytes | str  # its end time, as settle.lua gave it


class ClusterSettlement:
    """Settle on a Cluster: the leases and counters in the owners' slots, then the usage rows
    in their stripes, exactly once (see the module docstring)."""

    def __init__(self, io: RedisTransport, settle: Script, usage: Script) -> None:
        self._io, self._settle, self._usage = io, settle, usage
        self.process = secrets.token_hex(6)  # this process's name in the stripes' marks
        self._numbers = itertools.count(1)
        self.waiting: dict[int, list[Row]] = {}  # stripe -> rows, oldest first
        self.dropped = 0
        self._writing = asyncio.Lock()  # one writer at a time keeps each stripe in order

    async def settle_many(self, settlements: Sequence[Settlement], now: str) -> None:
        """The settle script for each owner's settlements (32 a call, in their order), every
        call in one pipeline; then the counted rows to their stripes. Raises ``StoreError``
        when a call failed (the limiter sends the batch again: what was settled is not
        counted twice, the rows waiting here are written once)."""
        by_owner: dict[str, list[Settlement]] = {}
        for s in settlements:
            by_owner.setdefault(s.admission.owner, []).append(s)
        chunks = [
            group[i : i + SETTLE_CHUNK]
            for group in by_owner.values()
            for i in range(0, len(group), SETTLE_CHUNK)
        ]
        calls = [_joined([codec.settle_call(s, now, cluster=True) for s in c]) for c in chunks]
        failed = None
        for chunk, reply in zip(chunks, await self._run(self._settle, calls), strict=True):
            if isinstance(reply, BaseException):
                failed = reply
            else:
                self.counted(chunk, reply)
        await self.write()
        if failed is not None:
            raise StoreError(f"redis: {why(failed)}")

    async def _run(self, script: Script, calls: list[Call]) -> list[Any]:
        """The calls in one pipeline (a Cluster's client splits it by node, each node's in
        order), each call's reply or error apart: one that failed never hides what the others
        did. Calls that met an unloaded script (they ran nothing) are sent again once it is."""
        replies = await self._io.pipeline([_evalsha(script, c) for c in calls], raising=False)
        missing = [i for i, reply in enumerate(replies) if noscript(reply)]
        if missing:
            await self._io.call("SCRIPT", "LOAD", script.source)
            again = [_evalsha(script, calls[i]) for i in missing]
            for i, reply in zip(
                missing, await self._io.pipeline(again, raising=False), strict=True
            ):
                replies[i] = reply
        return replies

    def counted(self, chunk: Sequence[Settlement], reply: Any) -> None:
        """Queue the usage of the settlements settle.lua counted: ``reply`` lists the place
        (1..n) and end time of each (an integer when it recorded none)."""
        if not isinstance(reply, list):
            return
        for place, finished in zip(reply[::2], reply[1::2], strict=True):
            s = chunk[int(place) - 1]
            rows = self.waiting.setdefault(codec.stripe(s.admission.key_id), [])
            rows.append(Row(next(self._numbers), s, finished))
        total = sum(len(rows) for rows in self.waiting.values())
        if total > WAITING_MAX:
            self._drop(total - WAITING_MAX)

    def _drop(self, count: int) -> None:
        """The oldest ``count`` waiting rows given up (their stripes unreachable for long)."""
        oldest = sorted(r.number for rows in self.waiting.values() for r in rows)[count - 1]
        for number, rows in list(self.waiting.items()):
            kept = [r for r in rows if r.number > oldest]
            if kept:
                self.waiting[number] = kept
            else:
                del self.waiting[number]
        self.dropped += count
        log.warning("usage rows dropped: %d waited for an unreachable usage stripe", count)

    async def write(self) -> None:
        """Every waiting row to its stripe, a call per stripe, the calls in one pipeline;
        raises ``StoreError`` if some are still waiting."""
        async with self._writing:
            while self.waiting:  # (a stripe is in it only with rows)
                sent = {n: rows[:USAGE_CHUNK] for n, rows in self.waiting.items()}
                calls = [self._rows_call(n, rows) for n, rows in sent.items()]
                replies = await self._run(self._usage, calls)
                failed = None
                for (number, rows), reply in zip(sent.items(), replies, strict=True):
                    if isinstance(reply, BaseException):
                        failed = reply
                    else:
                        self._confirmed(number, rows[-1].number)
                if failed is not None:
                    raise StoreError(f"redis: {why(failed)}")

    def _rows_call(self, number: int, rows: list[Row]) -> Call:
        keys, args = [f"{codec.stripe_tag(number)}seq:{self.process}"], [str(codec.MARK_TTL)]
        for row in rows:
            a = row.settlement.admission
            keys += codec.usage_keys(a.owner, a.key_id)
            args += codec.usage_args(row.number, row.settlement, row.finished)
        return keys, args

    def _confirmed(self, number: int, last: int) -> None:
        """The stripe's rows up to ``last`` are written (now, or before)."""
        left = [r for r in self.waiting.get(number, ()) if r.number > last]
        if left:
            self.waiting[number] = left
        else:
            self.waiting.pop(number, None)


def _joined(calls: list[Call]) -> Call:
    """Several settlements' KEYS and ARGV as one call's."""
    return [k for keys, _ in calls for k in keys], [a for _, args in calls for a in args]


def _evalsha(script: Script, call: Call) -> Command:
    keys, args = call
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


# -- reports ----------------------------------------------------------------------------------
async def usage_rows(
    pipe: Pipe, owner: str, key_ids: list[str], days: tuple[int, int], sink: RowSink | None
) -> list[UsageDay]:
    """The rows of these keys of ``owner`` for days first..last, by key, day and model: each
    (key, day) the sum of its row in the key's stripe and its row in the owner's slot (written
    before the stripes), whichever exist; with ``sink``, given to it part by part instead.

    In parts (``REPORT_KEYS`` keys' days indexes, then ``REPORT_PART`` days' hashes a round
    trip), each read and decoded on the loop before the next is asked for: between parts the
    loop serves the requests' admissions, so a report of thousands of keys by many days never
    holds it for long. (A thread would not help: it holds the interpreter's lock while it
    decodes, and the loop waits for it at each turn.)"""
    wanted = sorted(set(key_ids))
    rows: list[UsageDay] = []
    for start in range(0, len(wanted), REPORT_KEYS):
        cells = await _cells(pipe, owner, wanted[start : start + REPORT_KEYS], days)
        for at in range(0, len(cells), REPORT_PART):
            part = cells[at : at + REPORT_PART]
            names = [name for _, hashes in part for name in hashes]
            read = iter(await pipe([("HGETALL", name) for name in names], True))
            got = [
                row
                for (key_id, day), hashes in part
                for row in codec.usage_rows(key_id, day, _sum([next(read) for _ in hashes]))
            ]
            if sink is None:
                rows.extend(got)
            else:
                sink(got)
    return rows


async def _cells(
    pipe: Pipe, owner: str, key_ids: list[str], days: tuple[int, int]
) -> list[tuple[tuple[str, int], list[str]]]:
    """(key, day) → the usage hashes holding it (the stripe's, the owner slot's), in key and
    day order, for these keys (in order) and days."""
    places = [
        layout(owner, k) for k in key_ids for layout in (codec.usage_keys, codec.legacy_usage_keys)
    ]
    found = await pipe([("ZRANGEBYSCORE", index, *days) for _, index in places], True)
    cells: list[tuple[tuple[str, int], list[str]]] = []
    for n, key_id in enumerate(key_ids):
        by_day: dict[int, list[str]] = {}
        pair = zip(places[2 * n : 2 * n + 2], found[2 * n : 2 * n + 2], strict=True)
        for (prefix, _), listed in pair:
            for day in map(int, listed):
                by_day.setdefault(day, []).append(f"{prefix}{day}")
        cells.extend(((key_id, day), by_day[day]) for day in sorted(by_day))
    return cells


def _sum(hashes: list[list[bytes]]) -> dict[bytes, bytes]:
    """Usage hashes (flat field, value lists) of one key and day as one: counts added, the
    latency totals (``l:`` fields, doubles) too."""
    if len(hashes) == 1:
        fields = hashes[0]
        return dict(zip(fields[::2], fields[1::2], strict=True))
    total: dict[bytes, bytes] = {}
    for fields in hashes:
        for field, value in zip(fields[::2], fields[1::2], strict=True):
            if field not in total:
                total[field] = value
            elif field.startswith(b"l:"):
                total[field] = repr(float(total[field]) + float(value)).encode()
            else:
                total[field] = str(int(total[field]) + int(value)).encode()
    return total
