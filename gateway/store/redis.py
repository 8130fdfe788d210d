"""The Redis store: every semantic of ``store.base`` on one Redis or a Redis Cluster, shared by
all processes. ``MemoryStore`` is the reference; the contract suite runs against both.

- Limits run as Lua scripts (``store/*.lua``, loaded once, then EVALSHA): ``admit`` and
  ``settle`` are one round trip each, atomic, and take time from Redis ``TIME`` inside the
  script, so processes with skewed clocks agree. Key layout: ``store.redis_codec``.
- ``clock`` is a test hook only: when given, its ``time()`` is passed to the scripts instead of
  ``TIME`` (rollovers and windows under a ``FakeClock``). Production passes none.
- This module holds semantics only (key layout, scripts, the Store methods); how commands reach
  Redis is ``store.transport``: the lane on one Redis, redis-py on a Cluster or TLS, one reply
  shape and one failure policy. The subscription has a redis-py connection of its own.
- Connections are made lazily, by the first call (no ``connect()`` step); the subscriber's
  connection by ``subscribe``. ``close()`` closes them all.
- Every call is bounded by ``timeout_ms`` (reports by their own budget); any Redis error or
  timeout is a ``StoreError``, raised by the transport.
"""

from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from gateway.clock import Clock
from gateway.records import Admission, KeyRecord, RowSink, Settlement, UsageDay, Verdict
from gateway.store import redis_codec as codec
from gateway.store.base import LEASE_SECONDS, KeyExists, StoreError, StoreLost
from gateway.store.redis_codec import esc, num, tag
from gateway.store.redis_conn import Subscriber, parse
from gateway.store.redis_lane import Arg
from gateway.store.redis_usage import SETTLE_CHUNK, ClusterSettlement, usage_rows
from gateway.store.transport import (
    Call,
    ClientTransport,
    Script,
    may_have_run,
    transport_for,
    why,
)

SCRIPTS = ("admit", "settle", "renew", "hit", "insert_key", "usage")
# The most admissions one EVALSHA decides (more in one turn of the loop: another call).
ADMIT_BATCH = 64
BULK_TIMEOUT = 10.0  # seconds a report's reads may take (never less than timeout_ms)


_first = operator.itemgetter(0)  # a batch entry's admission


def _kh(key_hash: str) -> str:
    return f"gw:kh:{key_hash}"


def _kid(key_id: str) -> str:
    return f"gw:kid:{esc(key_id)}"


def _chain(source: asyncio.Future[Verdict], target: asyncio.Future[Verdict]) -> None:
    """An admission's verdict through redis-py passed on; a failure after which Redis may have
    admitted it all the same is ``StoreLost`` (the limiter then gives it back)."""
    if target.done():
        return
    if source.cancelled():
        _fail(target, StoreError("redis: cancelled"))
    elif (exc := source.exception()) is not None:
        _fail(target, StoreLost(str(exc)) if may_have_run(exc) else exc)
    else:
        target.set_result(source.result())


def _fail(future: asyncio.Future[Verdict], exc: BaseException) -> None:
    """Fail ``future``, marking its exception retrieved: a caller that left must not log it."""
    future.set_exception(exc)
    future.exception()


def _records(raws: list[bytes | None]) -> list[KeyRecord]:
    return [KeyRecord.from_store(orjson.loads(r)) for r in raws if r is not None]


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class RedisStore:
    """``RedisStore(url, timeout_ms)``; ``clock`` only in tests (see the module docstring)."""

    def __init__(self, url: str, timeout_ms: int, clock: Clock | None = None) -> None:
        target = parse(url)
        self._timeout = timeout_ms / 1000.0
        self._clock = clock
        self._scripts = {name: Script(name, codec.script(name)) for name in SCRIPTS}
        # Reports (usage, key lists) read many keys: on a connection and a time budget of their
        # own, so a large one neither delays nor times out the requests' admissions.
        self._io = transport_for(target, self._timeout, max(BULK_TIMEOUT, self._timeout))
        main = self._io.client if isinstance(self._io, ClientTransport) else None
        self._subscriber = Subscriber(target, main, self._timeout)
        # A Cluster settles in two steps: the owners' slots, then the usage stripes.
        self._cluster = (
            ClusterSettlement(self._io, self._scripts["settle"], self._scripts["usage"])
            if self._io.spans_slots
            else None
        )
        # The admissions asked for in this turn of the loop, sent together at its end.
        self._admitting: list[tuple[Admission, asyncio.Future[Verdict]]] = []
        self._resending: set[asyncio.Future[None]] = set()

    def _now(self) -> str:
        """The scripts' clock override: '' (use Redis TIME) unless a test clock was given."""
        return "" if self._clock is None else repr(self._clock.time())

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        return (await self._io.evalsha(self._scripts[name], [(keys, args)]))[0]

    async def _cmd(self, *args: Arg) -> Any:
        return await self._io.call(*args)

    async def _pipe(self, commands: list[tuple[Arg, ...]], bulk: bool = False) -> list[Any]:
        """Commands in one pipeline (not a transaction; a Cluster splits it by node)."""
        return await self._io.pipeline(commands, bulk)

    # -- keys -------------------------------------------------------------------------------
    async def _with_use(self, records: list[KeyRecord], bulk: bool = False) -> list[KeyRecord]:
        """Merge ``last_used_at`` from the owners' last-use hashes."""
        used = await self._pipe(
            [("HGET", f"{tag(r.owner)}lastused", r.id) for r in records], bulk=bulk
        )
        return [
            r if at is None else r.evolve(last_used_at=float(at))
            for r, at in zip(records, used, strict=True)
        ]

    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        raw = await self._cmd("GET", _kh(key_hash))
        if raw is None:
            return None
        return (await self._with_use([KeyRecord.from_store(orjson.loads(raw))]))[0]

    async def get_key(self, key_id: str) -> KeyRecord | None:
        key_hash = _text(await self._cmd("GET", _kid(key_id)))
        record = await self.get_key_by_hash(key_hash) if key_hash else None
        return record if record is not None and record.id == key_id else None

    async def list_keys(self, owner: str) -> list[KeyRecord]:
        """The owner's keys, oldest first (by ``created_at``, then id)."""
        members = await self._cmd("SMEMBERS", f"{tag(owner)}keys")
        ids = sorted(str(_text(m)) for m in members)
        hashes = await self._pipe([("GET", _kid(i)) for i in ids], bulk=True)
        raws = await self._pipe(
            [("GET", _kh(h.decode())) for h in hashes if h is not None], bulk=True
        )
        records = await asyncio.to_thread(_records, raws)  # thousands: decoded off the loop
        mine = [r for r in records if r.owner == owner]
        return sorted(await self._with_use(mine, bulk=True), key=lambda r: (r.created_at, r.id))

    async def insert_key(self, record: KeyRecord, max_keys: int | None) -> bool:
        kid, kh, owned = _kid(record.id), _kh(record.key_hash), f"{tag(record.owner)}keys"
        if any(await self._pipe([("EXISTS", kid), ("EXISTS", kh)])):
            raise KeyExists(record.id)
        added = await self._script("insert_key", [owned], [record.id, num(max_keys)])
        if added == -1:
            raise KeyExists(record.id)
        if added == 0:
            return False
        # The owner's slot is taken; now claim the id and the hash (another owner may race).
        if not await self._cmd("SET", kid, record.key_hash, "NX"):
            await self._pipe([("SREM", owned, record.id)])
            raise KeyExists(record.id)
        if not await self._cmd("SET", kh, orjson.dumps(record.to_store()), "NX"):
            await self._pipe([("DEL", kid), ("SREM", owned, record.id)])
            raise KeyExists(record.id)
        return True

    async def replace_key(self, record: KeyRecord, old_hash: str | None = None) -> None:
        kid = _kid(record.id)
        current = _text(await self._cmd("GET", kid))
        previous = None
        if current is not None:
            raw = await self._cmd("GET", _kh(current))
            previous = KeyRecord.from_store(orjson.loads(raw)) if raw is not None else None
        commands: list[tuple[Arg, ...]] = [
            ("SET", _kh(record.key_hash), orjson.dumps(record.to_store())),
            ("SET", kid, record.key_hash),
            ("SADD", f"{tag(record.owner)}keys", record.id),
        ]
        if previous is not None and previous.owner != record.owner:
            commands.append(("SREM", f"{tag(previous.owner)}keys", record.id))
        # The old hash (and any stale one) stops finding the key before this returns.
        for stale in {old_hash, current} - {None, record.key_hash}:
            commands.append(("DEL", _kh(str(stale))))
        await self._pipe(commands)

    async def delete_key(self, record: KeyRecord) -> None:
        kid = _kid(record.id)
        current = _text(await self._cmd("GET", kid))
        hashes = {record.key_hash, current} - {None}
        await self._pipe(
            [
                *(("DEL", _kh(str(h))) for h in hashes),
                ("DEL", kid),
                ("SREM", f"{tag(record.owner)}keys", record.id),
            ]
        )

    async def get_plan(self, owner: str) -> str | None:
        return _text(await self._cmd("GET", f"{tag(owner)}plan"))

    async def set_plan(self, owner: str, plan: str) -> None:
        await self._cmd("SET", f"{tag(owner)}plan", plan)

    async def get_owner_budget(self, owner: str) -> int | None:
        stored = _text(await self._cmd("GET", f"{tag(owner)}budget"))
        return int(stored) if stored is not None and stored.isdigit() else None

    async def set_owner_budget(self, owner: str, micros: int | None) -> None:
        if micros is None:
            await self._cmd("DEL", f"{tag(owner)}budget")
        else:
            await self._cmd("SET", f"{tag(owner)}budget", str(micros))

    # -- broadcast --------------------------------------------------------------------------
    async def publish(self, message: str) -> None:
        await self._cmd("PUBLISH", codec.CHANNEL, message)

    async def subscribe(self, callback: Callable[[str], None]) -> None:
        """Add ``callback`` and start the subscriber (once); waits up to the timeout for the
        subscription, without failing: while the store is down the subscriber keeps trying,
        and tells ``"*"`` once it is subscribed."""
        self._subscriber.callbacks.append(callback)
        self._subscriber.start()
        try:
            async with asyncio.timeout(self._timeout):
                await self._subscriber.ready.wait()
        except TimeoutError:
            pass

    # -- limits -----------------------------------------------------------------------------
    async def admit(self, admission: Admission) -> Verdict:
        keys, args = codec.admit_call([admission], self._now())
        return codec.verdict(admission, (await self._script("admit", keys, args))[0])

    def admit_now(self, admission: Admission) -> asyncio.Future[Verdict]:
        """The hot path's ``admit``: the admissions asked for in one turn of the loop go to
        Redis as one EVALSHA at its end (the script decides them one after the other, each as
        a call of its own would), and each verdict arrives as a future: no task, no timer here
        (the caller bounds its wait, and a future still completes when the reply comes late,
        so what it admitted can be given back)."""
        verdict: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        pending = self._admitting
        pending.append((admission, verdict))
        if len(pending) == 1:
            asyncio.get_running_loop().call_soon(self._send_admissions)
        elif len(pending) >= ADMIT_BATCH:
            self._send_admissions()
        return verdict

    def _send_admissions(self) -> None:
        """The gathered admissions in one EVALSHA on the lane. A lane not yet connected, or a
        Cluster (whose calls hold one slot each), sends each through ``admit``; so does a reply
        other than verdicts (NOSCRIPT after a SCRIPT FLUSH, say)."""
        batch, self._admitting = self._admitting, []
        if not batch:
            return
        call = codec.admit_call(list(map(_first, batch)), self._now())
        reply = self._io.send_now(self._scripts["admit"], call)
        if reply is None:
            self._resend(batch)
        else:
            reply.add_done_callback(functools.partial(self._admitted, batch))

    def _resend(self, batch: list[tuple[Admission, asyncio.Future[Verdict]]]) -> None:
        """A batch the lane could not take at once (not connected yet, or the script unknown
        after a restart): through redis-py (a Cluster, TLS) each admission through ``admit``;
        on the lane the script loaded (bounded: a failure there ran nothing), then the batch
        sent again without a bound of its own, so that a verdict that comes late still reaches
        its future (and a caller that stopped waiting gives back what it admitted, instead of
        a lease lost)."""
        if isinstance(self._io, ClientTransport):  # no send_now: never a batch of its own
            for admission, verdict in batch:
                slow = asyncio.ensure_future(self.admit(admission))
                slow.add_done_callback(functools.partial(_chain, target=verdict))
            return
        task = asyncio.ensure_future(self._load_and_send(batch))
        self._resending.add(task)  # held until done (the loop keeps only weak references)
        task.add_done_callback(self._resending.discard)

    async def _load_and_send(self, batch: list[tuple[Admission, asyncio.Future[Verdict]]]) -> None:
        script = self._scripts["admit"]
        try:
            await self._io.call("SCRIPT", "LOAD", script.source)
        except StoreError as exc:
            for _, verdict in batch:
                if not verdict.done():
                    _fail(verdict, exc)
            return
        call = codec.admit_call(list(map(_first, batch)), self._now())
        reply = self._io.send_now(script, call)
        if reply is None:  # the connection dropped again meanwhile: nothing was sent
            for _, verdict in batch:
                if not verdict.done():
                    _fail(verdict, StoreError("redis: connection lost"))
            return
        reply.add_done_callback(functools.partial(self._admitted, batch, again=False))

    def _admitted(
        self,
        batch: list[tuple[Admission, asyncio.Future[Verdict]]],
        reply: asyncio.Future[Any],
        again: bool = True,
    ) -> None:
        exc = None if reply.cancelled() else reply.exception()
        if again and exc is not None and str(exc).startswith("NOSCRIPT"):
            self._resend(batch)
            return
        if exc is not None or reply.cancelled():
            # sent, and the connection lost before the reply: Redis may have admitted them
            kind = StoreLost if isinstance(exc, ConnectionError) else StoreError
            for _, verdict in batch:
                if not verdict.done():
                    _fail(verdict, kind(f"redis: {why(exc)}"))
            return
        try:
            replies = reply.result()
            if len(replies) != len(batch):
                raise ValueError(f"{len(replies)} verdicts for {len(batch)} admissions")
            verdicts = list(map(codec.verdict, map(_first, batch), replies))
        except Exception as err:  # a reply of the wrong shape
            for _, verdict in batch:
                if not verdict.done():
                    _fail(verdict, StoreError(f"redis: unexpected admit reply ({err})"))
            return
        for (_, future), decided in zip(batch, verdicts, strict=True):
            if not future.done():
                future.set_result(decided)

    async def settle(self, settlement: Settlement) -> None:
        await self.settle_many([settlement])

    async def settle_many(self, settlements: list[Settlement]) -> None:
        """On one Redis, up to ``SETTLE_CHUNK`` settlements per EVALSHA (the script takes
        several, of any owners, and writes their usage rows in the stripes too), the chunks
        pipelined; on a Cluster, two steps (``redis_usage.ClusterSettlement``). Settling is
        idempotent, so a batch that met an unloaded script is simply sent again after loading
        it."""
        if not settlements:
            return
        now = self._now()
        if self._cluster is not None:
            await self._cluster.settle_many(settlements, now)
            return
        chunks: list[Call] = [
            codec.settle_calls(settlements[i : i + SETTLE_CHUNK], now)
            for i in range(0, len(settlements), SETTLE_CHUNK)
        ]
        await self._io.evalsha(self._scripts["settle"], chunks)

    async def renew_leases(self, admissions: list[Admission]) -> None:
        by_owner: dict[str, list[Admission]] = {}
        for a in admissions:
            by_owner.setdefault(a.owner, []).append(a)
        now, lease = self._now(), repr(LEASE_SECONDS)
        await asyncio.gather(
            *(
                self._script(
                    "renew",
                    [f"{tag(owner)}held:{esc(a.key_id)}" for a in group],
                    [now, lease, *(a.request_id for a in group)],
                )
                for owner, group in by_owner.items()
            )
        )

    async def hit(self, counter: str) -> tuple[int, float]:
        keys, args = [f"gw:hit:{esc(counter)}"], [self._now(), repr(codec.HIT_WINDOW)]
        count, reset = await self._script("hit", keys, args)
        return int(count), float(reset)

    async def auth_failure(self, client: str) -> tuple[int, float]:
        return await self.hit(f"authfail:{client}")

    # -- usage ------------------------------------------------------------------------------
    async def usage(
        self,
        owner: str,
        key_ids: list[str],
        first_day: int,
        last_day: int,
        sink: RowSink | None = None,
    ) -> list[UsageDay]:
        return await usage_rows(self._pipe, owner, key_ids, (first_day, last_day), sink)

    # -- lifecycle --------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._cmd("PING")

    async def close(self) -> None:
        if self._cluster is not None:
            await self._cluster.close()  # the rows written forgotten in the owners' slots
        await self._subscriber.close()
        await self._io.close()
