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

from gateway.records import Settlement, UsageDay
from gateway.store import redis_codec as codec
from gateway.store.transport import Command, RedisTransport, Script

log = logging.getLogger("gateway.store")

# Settlements per settle.lua call (of one owner on a Cluster, of any on one Redis): a script
# call's own cost (~10 µs of Redis CPU) is shared by 32, and each call's run (a script blocks
# Redis meanwhile) stays about a millisecond.
SETTLE_CHUNK = 32
USAGE_CHUNK = 256  # rows per usage.lua call
WAITING_MAX = 65_536  # rows waiting for their stripes, at most (past it the oldest are dropped)
REPORT_PART = 500  # usage days read (and decoded) per round trip of a report

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
        by_owner: dict[str, list[Settlement]] = {}
        for s in settlements:
            by_owner.setdefault(s.admission.owner, []).append(s)
        results = await asyncio.gather(
            *(self._owner(group, now) for group in by_owner.values()), return_exceptions=True
        )
        await self.write()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _owner(self, settlements: list[Settlement], now: str) -> None:
        """One owner's settlements, a chunk after the other (in their order), their counted
        usage queued for the stripes."""
        for i in range(0, len(settlements), SETTLE_CHUNK):
            chunk = settlements[i : i + SETTLE_CHUNK]
            calls = [codec.settle_call(s, now, cluster=True) for s in chunk]
            keys = [k for ks, _ in calls for k in ks]
            args = [a for _, a_s in calls for a in a_s]
            [reply] = await self._io.evalsha(self._settle, [(keys, args)])
            self.counted(chunk, reply)

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
        """Every waiting row to its stripe; raises ``StoreError`` if some are still waiting."""
        async with self._writing:
            while self.waiting:  # (a stripe is in it only with rows)
                stripes = list(self.waiting)
                results = await asyncio.gather(
                    *(self._stripe(n) for n in stripes), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result

    async def _stripe(self, number: int) -> None:
        rows = self.waiting.get(number, [])[:USAGE_CHUNK]
        if not rows:  # dropped meanwhile
            return
        tag = codec.stripe_tag(number)
        keys, args = [f"{tag}seq:{self.process}"], [str(codec.MARK_TTL)]
        for row in rows:
            a = row.settlement.admission
            keys += codec.usage_keys(a.owner, a.key_id)
            args += codec.usage_args(row.number, row.settlement, row.finished)
        await self._io.evalsha(self._usage, [(keys, args)])
        last = rows[-1].number  # confirmed up to it: written now, or before
        left = [r for r in self.waiting.get(number, ()) if r.number > last]
        if left:
            self.waiting[number] = left
        else:
            self.waiting.pop(number, None)


# -- reports ----------------------------------------------------------------------------------
async def usage_rows(
    pipe: Pipe, owner: str, key_ids: list[str], first_day: int, last_day: int
) -> list[UsageDay]:
    """The rows of these keys of ``owner`` for days first..last, by key, day and model: each
    (key, day) the sum of its row in the key's stripe and its row in the owner's slot (written
    before the stripes), whichever exist."""
    wanted = sorted(set(key_ids))
    places = [
        layout(owner, k) for k in wanted for layout in (codec.usage_keys, codec.legacy_usage_keys)
    ]
    days = await pipe([("ZRANGEBYSCORE", index, first_day, last_day) for _, index in places], True)
    cells: dict[tuple[str, int], list[str]] = {}  # (key, day) -> its hashes
    for n, ((prefix, _), found) in enumerate(zip(places, days, strict=True)):
        for day in found:
            cells.setdefault((wanted[n // 2], int(day)), []).append(f"{prefix}{int(day)}")
    ordered = sorted(cells.items())
    rows: list[UsageDay] = []
    # In parts, each read and decoded before the next is asked for: a report of thousands of
    # days must not hold this process's loop (the requests' admissions wait on it).
    for start in range(0, len(ordered), REPORT_PART):
        part = ordered[start : start + REPORT_PART]
        names = [name for _, hashes in part for name in hashes]
        read = iter(await pipe([("HGETALL", name) for name in names], True))
        merged = [(cell, [next(read) for _ in hashes]) for cell, hashes in part]
        rows.extend(await asyncio.to_thread(_decode, merged))
    return rows


def _decode(cells: list[tuple[tuple[str, int], list[list[bytes]]]]) -> list[UsageDay]:
    rows: list[UsageDay] = []
    for (key_id, day), hashes in cells:
        rows.extend(codec.usage_rows(key_id, day, _sum(hashes)))
    return rows


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
