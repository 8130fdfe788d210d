"""Usage rows on Redis: a Cluster's settlement in two steps, and the reports' reads.

A key's usage rows live in its usage stripe (``redis_codec.usage_keys``), not in its owner's
slot, so one tenant's rows spread over the Cluster's shards while everything its admissions and
settlements must decide together (leases, windows, counters) stays in the owner's slot.

- One Redis: ``settle.lua`` writes the rows in the stripe itself (one script may touch any
  slot there), so nothing here runs: one call per batch, as before the stripes.
- A Cluster (``ClusterSettlement``): ``settle.lua`` runs in each owner's slot, the settlements
  of one owner together, each named by this process and a number of its own; it keeps the row
  of each that counted (its lease was held) in the owner's slot and returns it. The rows then
  go to their stripes through ``usage.lua``, one call per stripe, which writes a row once by
  its name (process, number), whatever order and however often it comes; once written, the
  rows are forgotten in the owner's slot (with the next settle calls, in their pipeline).
  Exactly once, whatever happens between the steps:
  - a settle call whose reply was lost: its settlements are sent again (by the limiter, or
    from ``unsure`` here), find their rows kept in the owner's slot and get them back;
  - a duplicate settlement: the same, its row skipped by the stripe (or here) if written;
  - a usage call failed or its reply lost: its rows wait here and are sent again;
  - a process that dies holding rows: they wait in the owner's slot, and a settle call for the
    owner ``ADOPT_AFTER`` seconds later (settle.lua) returns them to its process, which writes
    them under their first names.
  A stripe skips the rows of a process under its floor, which only that process raises, past
  the numbers whose fate it knows (written, or never counted): see usage.lua.
- Reports read both layouts: the stripes and the owner-slot rows written before them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.records import RowSink, Settlement, UsageDay
from gateway.store import redis_codec as codec
from gateway.store.base import StoreError
from gateway.store.redis_codec import Row
from gateway.store.transport import (
    Call,
    Command,
    RedisTransport,
    Script,
    evalsha_commands,
    scripts_run,
    why,
)

log = logging.getLogger("gateway.store")

# Settlements per settle.lua call (of one owner on a Cluster, of any on one Redis): a script
# call's own cost (~10 µs of Redis CPU) is shared by 32, and each call's run (a script blocks
# Redis meanwhile) stays about a millisecond.
SETTLE_CHUNK = 32
USAGE_CHUNK = 256  # rows per usage.lua call
WAITING_MAX = 65_536  # rows waiting for their stripes, at most (past it the oldest are dropped)
UNSURE_MAX = 65_536  # settlements sent whose reply is not yet had, at most (the same)
FORGET_CHUNK = 1024  # request ids per HDEL (and ZREM) forgetting written rows
REPORT_PART = 250  # usage days read (and decoded) per round trip of a report
REPORT_KEYS = 100  # keys whose days indexes a report reads per round trip

Pipe = Callable[[list[Command], bool], Awaitable[list[Any]]]
Waiting = dict[tuple[str, int], tuple[str, Row]]  # (process, number) -> (owner, row)


class ClusterSettlement:
    """Settle on a Cluster: the leases and counters in the owners' slots, then the usage rows
    in their stripes, exactly once (see the module docstring)."""

    def __init__(self, io: RedisTransport, settle: Script, usage: Script) -> None:
        self._io, self._settle, self._usage = io, settle, usage
        self.process = secrets.token_hex(6)  # this process's name in the rows' names
        self._next = 1  # the number the next settlement sent gets
        # request id -> (number, settlement): sent, whether it counted not yet known
        self.unsure: dict[str, tuple[int, Settlement]] = {}
        self.waiting: dict[int, Waiting] = {}  # stripe -> rows counted, not yet written
        self.written: dict[str, set[str]] = {}  # owner -> request ids: rows to forget there
        self.dropped = 0
        self._writing = asyncio.Lock()  # one writer at a time (each stripe's floor in order)

    async def settle_many(self, settlements: Sequence[Settlement], now: str) -> None:
        """The settle script for each owner's settlements (32 a call, in their order, with
        those whose earlier reply was lost), every call in one pipeline with the forgetting of
        the rows written; then the counted rows to their stripes. Raises ``StoreError`` when a
        call failed (the limiter sends the batch again: what was settled is not counted twice,
        its rows are written once)."""
        by_owner: dict[str, list[tuple[int, Settlement]]] = {}
        for number, s in self._numbered(settlements):
            by_owner.setdefault(s.admission.owner, []).append((number, s))
        chunks = [
            (owner, group[i : i + SETTLE_CHUNK])
            for owner, group in by_owner.items()
            for i in range(0, len(group), SETTLE_CHUNK)
        ]
        calls: list[Call] = [
            codec.settle_calls(
                [s for _, s in chunk], now, [f"{self.process}:{n}" for n, _ in chunk]
            )
            for _, chunk in chunks
        ]
        forgotten, forgets = self._forgets()
        try:
            done, replies = await self._run(self._settle, calls, forgets)
        except BaseException:
            self._remember(forgotten)
            raise
        pairs = zip(forgotten, done[::2], done[1::2], strict=True)
        self._remember([f for f, *got in pairs if any(map(_failed, got))])
        failed = None
        for (owner, chunk), reply in zip(chunks, replies, strict=True):
            if _failed(reply):
                failed = reply
            else:
                self.counted(owner, [s for _, s in chunk], reply)
        await self.write()
        if failed is not None:
            raise StoreError(f"redis: {why(failed)}")

    def _numbered(self, settlements: Sequence[Settlement]) -> list[tuple[int, Settlement]]:
        """The settlements to send, each once, with those sent before whose reply was lost
        (found here if the limiter gave them up): each named by a number, kept in ``unsure``
        until a reply says whether it counted."""
        sent: dict[str, tuple[int, Settlement]] = {}
        for s in [*settlements, *(s for _, s in self.unsure.values())]:
            rid = s.admission.request_id
            if rid not in sent:
                number, _ = self.unsure.get(rid) or (self._take_number(), s)
                sent[rid] = self.unsure[rid] = (number, s)
        if len(self.unsure) > UNSURE_MAX:
            for rid in list(self.unsure)[: len(self.unsure) - UNSURE_MAX]:
                del self.unsure[rid]
                self.dropped += 1
            log.warning("usage rows dropped: settlements unsure past %d", UNSURE_MAX)
        return list(sent.values())

    def _take_number(self) -> int:
        self._next += 1
        return self._next - 1

    async def _run(
        self, script: Script, calls: list[Call], first: Sequence[Command] = ()
    ) -> tuple[list[Any], list[Any]]:
        """The commands ``first``, then the calls, in one pipeline (a Cluster's client splits
        it by node, each node's in order): their replies, each call's reply or error apart (one
        that failed never hides what the others did)."""

        def send(commands: list[Command]) -> Awaitable[list[Any]]:
            return self._io.pipeline(commands, raising=False)

        def load() -> Awaitable[object]:
            return self._io.call("SCRIPT", "LOAD", script.source)

        return await scripts_run(send, load, script, calls, evalsha_commands, first)

    def counted(self, owner: str, chunk: Sequence[Settlement], reply: Any) -> None:
        """A settle call's reply: the rows to write (JSON, see settle.lua) of those of
        ``chunk`` that counted, now or before, and of others adopted; the chunk's are no longer
        unsure (counted or not)."""
        for s in chunk:
            self.unsure.pop(s.admission.request_id, None)
        if not isinstance(reply, list):
            return
        written = self.written.get(owner, set())
        for raw in reply:
            row = Row.decode(raw)
            if row.request_id not in written:
                rows = self.waiting.setdefault(codec.stripe(row.key_id), {})
                rows.setdefault((row.process, row.number), (owner, row))
        total = sum(len(rows) for rows in self.waiting.values())
        if total > WAITING_MAX:
            self._drop(total - WAITING_MAX)

    def _drop(self, count: int) -> None:
        """``count`` waiting rows given up, the oldest of each stripe first (their stripes
        unreachable for long): the usage misses them."""
        while count > 0:
            number, rows = max(self.waiting.items(), key=lambda item: len(item[1]))
            del rows[next(iter(rows))]
            if not rows:
                del self.waiting[number]
            count -= 1
            self.dropped += 1
        log.warning("usage rows dropped: waited for an unreachable usage stripe")

    async def write(self) -> None:
        """Every waiting row to its stripe, a call per stripe, the calls in one pipeline;
        raises ``StoreError`` if some are still waiting."""
        async with self._writing:
            while self.waiting:  # (a stripe is in it only with rows)
                sent = {n: list(rows.items())[:USAGE_CHUNK] for n, rows in self.waiting.items()}
                calls = [self._rows_call(n, rows) for n, rows in sent.items()]
                _, replies = await self._run(self._usage, calls)
                failed = None
                for (number, rows), reply in zip(sent.items(), replies, strict=True):
                    if _failed(reply):
                        failed = reply
                    else:
                        self._confirmed(number, rows)
                if failed is not None:
                    raise StoreError(f"redis: {why(failed)}")

    def _rows_call(self, stripe: int, rows: list[tuple[tuple[str, int], tuple[str, Row]]]) -> Call:
        """usage.lua's call writing ``rows`` in ``stripe``: grouped by process, this one's
        raising its floor past them (to the least number whose fate is still open)."""
        groups: dict[str, list[tuple[str, Row]]] = {self.process: []}
        for (process, _), item in rows:
            groups.setdefault(process, []).append(item)
        keys: list[str] = []
        args = [str(codec.MARK_TTL)]
        for process, group in groups.items():
            if not group:
                continue
            floor = self._floor(stripe, {row.number for _, row in group})
            keys += codec.row_marks(stripe, process)
            args += [str(len(group)), str(floor if process == self.process else 0)]
            for owner, row in group:
                keys += codec.usage_keys(owner, row.key_id)
                args += row.args()
        return keys, args

    def _floor(self, stripe: int, sending: set[int]) -> int:
        """The least number of this process whose row may still come to ``stripe`` once the
        rows numbered ``sending`` are written: of those waiting, of the settlements unsure,
        or the next."""
        waiting = self.waiting.get(stripe, {})
        return min(
            self._next,
            min(
                (n for p, n in waiting if p == self.process and n not in sending),
                default=self._next,
            ),
            min(
                (n for n, s in self.unsure.values() if codec.stripe(s.admission.key_id) == stripe),
                default=self._next,
            ),
        )

    def _confirmed(self, stripe: int, rows: list[tuple[tuple[str, int], tuple[str, Row]]]) -> None:
        """The stripe's ``rows`` are written (now, or before): no longer waiting, to be
        forgotten in their owners' slots."""
        waiting = self.waiting.get(stripe, {})
        for name, (owner, row) in rows:
            waiting.pop(name, None)
            self.written.setdefault(owner, set()).add(row.request_id)
        if not waiting:
            self.waiting.pop(stripe, None)

    def _forgets(self) -> tuple[list[tuple[str, list[str]]], list[Command]]:
        """The rows written, taken to be forgotten in their owners' slots: (owner, request
        ids) per command pair, and the commands (HDEL, ZREM)."""
        taken: list[tuple[str, list[str]]] = []
        for owner, ids in self.written.items():
            listed = sorted(ids)
            taken += [
                (owner, listed[i : i + FORGET_CHUNK]) for i in range(0, len(listed), FORGET_CHUNK)
            ]
        self.written = {}
        commands: list[Command] = []
        for owner, rids in taken:
            t = codec.tag(owner)
            commands += [("HDEL", f"{t}pending", *rids), ("ZREM", f"{t}pending:at", *rids)]
        return taken, commands

    def _remember(self, forgets: Sequence[tuple[str, list[str]]]) -> None:
        """Forgets not done, kept for the next call."""
        for owner, rids in forgets:
            self.written.setdefault(owner, set()).update(rids)

    async def close(self) -> None:
        """The rows written forgotten in their owners' slots (best effort: left there, another
        process adopts them and the stripes skip them)."""
        forgotten, forgets = self._forgets()
        if forgets:
            try:
                await self._io.pipeline(forgets, raising=False)
            except StoreError:
                self._remember(forgotten)


def _failed(reply: Any) -> bool:
    return isinstance(reply, BaseException)


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
