"""The Redis store: every semantic of ``store.base`` on one Redis or a Redis Cluster, shared by
all processes. ``MemoryStore`` is the reference; the contract suite runs against both.

- Limits run as Lua scripts (``store/*.lua``, loaded once, then EVALSHA): ``admit`` and
  ``settle`` are one round trip each, atomic, and take time from Redis ``TIME`` inside the
  script, so processes with skewed clocks agree. Key layout: ``store.redis_codec``.
- ``clock`` is a test hook only: when given, its ``time()`` is passed to the scripts instead of
  ``TIME`` (rollovers and windows under a ``FakeClock``). Production passes none.
- On one Redis (``redis://``) every command goes over ``store.redis_lane``: one
  pipelined connection, far cheaper per call than redis-py, and it notices a server that went
  away while idle (so a restarted Redis costs no failed call). A Cluster (and ``rediss://``)
  uses redis-py's clients. The subscription always has a redis-py connection of its own.
- Connections are made lazily, by the first call (no ``connect()`` step); the subscriber's
  connection by ``subscribe``. ``close()`` closes them all.
- Every call is bounded by ``timeout_ms`` (socket timeouts and ``asyncio.timeout``); any Redis
  error or timeout becomes ``StoreError`` here, at this one boundary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from gateway.clock import Clock
from gateway.records import Admission, KeyRecord, Settlement, UsageDay, Verdict
from gateway.store import redis_codec as codec
from gateway.store.base import LEASE_SECONDS, KeyExists, StoreError
from gateway.store.redis_codec import esc, num, tag
from gateway.store.redis_conn import ERRORS, POOL, Subscriber, client, parse
from gateway.store.redis_lane import Arg, Lane, LaneError, supported

T = TypeVar("T")
SCRIPTS = ("admit", "settle", "renew", "hit", "insert_key")
# Settlements per EVALSHA on one Redis: a script call's own cost (~10 µs of Redis CPU) is shared
# by 32, and each call's run (a script blocks Redis meanwhile) stays about a millisecond.
SETTLE_CHUNK = 32
BULK_TIMEOUT = 10.0  # seconds a report's reads may take (never less than timeout_ms)
REPORT_PART = 500  # usage days read (and decoded) per round trip of a report


def _kh(key_hash: str) -> str:
    return f"gw:kh:{key_hash}"


def _kid(key_id: str) -> str:
    return f"gw:kid:{esc(key_id)}"


def _raising(replies: list[Any]) -> list[Any]:
    """The replies of a pipeline, unless one is an error reply: then that is raised."""
    for reply in replies:
        if isinstance(reply, LaneError):
            raise reply
    return replies


def _chain(source: asyncio.Future[Verdict], target: asyncio.Future[Verdict]) -> None:
    if target.done():
        return
    if source.cancelled():
        _fail(target, StoreError("redis: cancelled"))
    elif (exc := source.exception()) is not None:
        _fail(target, exc)
    else:
        target.set_result(source.result())


def _fail(future: asyncio.Future[Verdict], exc: BaseException) -> None:
    """Fail ``future``, marking its exception retrieved: a caller that left must not log it."""
    future.set_exception(exc)
    future.exception()


def _why(exc: BaseException | None) -> str:
    """An error's text for a ``StoreError`` (a timeout's own text is empty)."""
    if exc is None:
        return "cancelled"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def _usage_rows(cells: list[tuple[str, int]], hashes: list[Any]) -> list[UsageDay]:
    rows: list[UsageDay] = []
    for (key_id, day), fields in zip(cells, hashes, strict=True):
        if isinstance(fields, list):  # the lane's raw reply: field, value, field, ...
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        rows.extend(codec.usage_rows(key_id, day, fields))
    return rows


def _records(raws: list[bytes | None]) -> list[KeyRecord]:
    return [KeyRecord.from_store(orjson.loads(r)) for r in raws if r is not None]


async def _lane_pipe(lane: Lane, commands: list[tuple[Arg, ...]]) -> list[Any]:
    return _raising(await lane.call_many(commands))


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class RedisStore:
    """``RedisStore(url, timeout_ms)``; ``clock`` only in tests (see the module docstring)."""

    def __init__(self, url: str, timeout_ms: int, clock: Clock | None = None) -> None:
        self._target = parse(url)
        self._timeout = timeout_ms / 1000.0
        self._clock = clock
        self._client = client(self._target, self._timeout)
        self._scripts = {name: self._client.register_script(codec.script(name)) for name in SCRIPTS}
        self._subscriber = Subscriber(self._target, self._client, self._timeout)
        self._unmapped = self._target.cluster
        self._map_lock = asyncio.Lock()
        self._gate = asyncio.Semaphore(POOL) if self._target.cluster else None
        # Every command goes over the lean lane where it can serve the URL (see the docstring).
        lean = not self._target.cluster and supported(url)
        self._lane = Lane(url, self._timeout) if lean else None
        # Reports (usage, key lists) read many keys: on a connection and a time budget of their
        # own, so a large one neither delays nor times out the requests' admissions.
        self._bulk_timeout = max(BULK_TIMEOUT, self._timeout)
        self._bulk = Lane(url, self._bulk_timeout) if lean else None

    def _now(self) -> str:
        """The scripts' clock override: '' (use Redis TIME) unless a test clock was given."""
        return "" if self._clock is None else repr(self._clock.time())

    async def _run(self, call: Awaitable[T], budget: float | None = None) -> T:
        try:
            async with asyncio.timeout(budget or self._timeout):
                if self._gate is None:
                    return await call
                async with self._gate:
                    if self._unmapped:
                        await self._map_cluster()
                    return await call
        except BaseException as exc:
            if isinstance(call, Coroutine):
                call.close()  # never started when the mapping failed
            if isinstance(exc, ERRORS):
                # A Cluster client that lost a node remaps lazily; make that happen here, once.
                self._unmapped = self._gate is not None
                raise StoreError(f"redis: {_why(exc)}") from exc
            raise

    async def _map_cluster(self) -> None:
        """Map a Cluster's slots (once, or again after an error; a no-op when the client needs
        no remapping) under a lock, before commands: redis-py's lazy mapping, when many first
        commands race into it, recycles connections under in-flight commands."""
        async with self._map_lock:
            if self._unmapped:
                await cast(RedisCluster, self._client).initialize()
                self._unmapped = False

    async def _on_lane(self, call: Coroutine[Any, Any, T], budget: float | None = None) -> T:
        """``_run`` for a call over a lane. A call that times out fails alone: its reply,
        still owed, is read and dropped when it comes, and its neighbours on the connection
        are untouched (a lane drops a connection only when the server stops answering)."""
        try:
            async with asyncio.timeout(budget or self._timeout):
                return await call
        except (*ERRORS, LaneError) as exc:
            raise StoreError(f"redis: {_why(exc)}") from exc

    async def _script(self, name: str, keys: list[str], args: list[str]) -> Any:
        if self._lane is None:
            return await self._run(self._scripts[name](keys, args))
        return (await self._on_lane(self._evalsha(name, [(keys, args)])))[0]

    async def _evalsha(self, name: str, calls: list[tuple[list[str], list[str]]]) -> list[Any]:
        """EVALSHA of one script per call, pipelined on the lane; loads the script once when
        Redis does not know it (every script here may run again: a NOSCRIPT ran nothing)."""
        assert self._lane is not None
        script = self._scripts[name]
        commands: list[tuple[Arg, ...]] = [
            ("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls
        ]
        replies = await self._lane.call_many(commands)
        if any(isinstance(r, LaneError) and r.noscript for r in replies):
            await self._lane.call("SCRIPT", "LOAD", cast(str, script.script))
            replies = await self._lane.call_many(commands)
        return _raising(replies)

    async def _cmd(self, *args: Arg) -> Any:
        """One command: on the lane when there is one, else on redis-py."""
        if self._lane is not None:
            return await self._on_lane(self._lane.call(*args))
        return await self._run(self._client.execute_command(*args))

    async def _pipe(self, commands: list[tuple[Arg, ...]], bulk: bool = False) -> list[Any]:
        """Commands in one pipeline (not a transaction; a Cluster splits it by node). ``bulk``:
        a report's reads, on their own connection and time budget."""
        if not commands:
            return []
        lane = self._bulk if bulk else self._lane
        timeout = self._bulk_timeout if bulk else None
        if lane is not None:
            return await self._on_lane(_lane_pipe(lane, commands), timeout)

        async def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())

        return await self._run(run(), timeout)

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
        keys, args = codec.admit_call(admission, self._now())
        return codec.verdict(admission, await self._script("admit", keys, args))

    def admit_now(self, admission: Admission) -> asyncio.Future[Verdict]:
        """The hot path's ``admit``: on the lane, the EVALSHA is on its way when this returns and
        the verdict arrives as a future (no task, no timer here: the caller bounds its wait, and
        the future still completes when the reply comes late, so what it admitted can be given
        back). A reply other than a verdict (NOSCRIPT after a SCRIPT FLUSH, say) takes
        ``admit``'s path; so does a lane not yet connected, and a Cluster."""
        lane = self._lane
        reply = None
        if lane is not None:
            keys, args = codec.admit_call(admission, self._now())
            reply = lane.send_now("EVALSHA", self._scripts["admit"].sha, len(keys), *keys, *args)
        if reply is None:
            return asyncio.ensure_future(self.admit(admission))
        verdict: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()

        def done(reply: asyncio.Future[Any]) -> None:
            exc = None if reply.cancelled() else reply.exception()
            if isinstance(exc, LaneError) and exc.noscript:
                slow = asyncio.ensure_future(self.admit(admission))
                slow.add_done_callback(lambda f: _chain(f, verdict))
            elif exc is not None or reply.cancelled():
                _fail(verdict, StoreError(f"redis: {_why(exc)}"))
            else:
                try:
                    verdict.set_result(codec.verdict(admission, reply.result()))
                except Exception as err:  # a reply of the wrong shape
                    _fail(verdict, StoreError(f"redis: unexpected admit reply ({err})"))

        reply.add_done_callback(done)
        return verdict

    async def settle(self, settlement: Settlement) -> None:
        keys, args = codec.settle_call(settlement, self._now())
        await self._script("settle", keys, args)

    async def settle_many(self, settlements: list[Settlement]) -> None:
        """On one Redis, up to ``SETTLE_CHUNK`` settlements per EVALSHA (the script takes
        several), the chunks pipelined; on a Cluster, one EVALSHA per settlement (each on its
        owner's slot) in one pipeline. Settling is idempotent, so a batch that met an unloaded
        script is simply sent again after loading it."""
        if not settlements:
            return
        script = self._scripts["settle"]
        now = self._now()
        calls = [codec.settle_call(s, now) for s in settlements]
        if self._lane is not None:
            chunks = [
                (
                    [k for keys, _ in calls[i : i + SETTLE_CHUNK] for k in keys],
                    [a for _, args in calls[i : i + SETTLE_CHUNK] for a in args],
                )
                for i in range(0, len(calls), SETTLE_CHUNK)
            ]
            await self._on_lane(self._evalsha("settle", chunks))
            return

        async def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))

        results = await self._run(run())
        if any(isinstance(r, NoScriptError) for r in results):
            script.sha = await self._run(self._client.script_load(script.script))
            results = await self._run(run())
        for result in results:
            if isinstance(result, Exception):
                raise StoreError(f"redis: {result}") from result

    async def renew_leases(self, admissions: list[Admission]) -> None:
        by_owner: dict[str, list[Admission]] = {}
        for a in admissions:
            by_owner.setdefault(a.owner, []).append(a)
        now, lease = self._now(), repr(LEASE_SECONDS)
        await asyncio.gather(
            *(
                self._script(
                    "renew",
                    [f"{tag(owner)}lease:{esc(a.key_id)}" for a in group],
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
        self, owner: str, key_ids: list[str], first_day: int, last_day: int
    ) -> list[UsageDay]:
        t, wanted = tag(owner), sorted(set(key_ids))
        days = await self._pipe(
            [("ZRANGEBYSCORE", f"{t}usedays:{esc(k)}", first_day, last_day) for k in wanted],
            bulk=True,
        )
        cells = [(k, int(d)) for k, ds in zip(wanted, days, strict=True) for d in ds]
        rows: list[UsageDay] = []
        # In parts, each read and decoded before the next is asked for: a report of thousands
        # of days must not hold this process's loop (the requests' admissions wait on it).
        for start in range(0, len(cells), REPORT_PART):
            part = cells[start : start + REPORT_PART]
            hashes = await self._pipe(
                [("HGETALL", f"{t}use:{esc(k)}:{d}") for k, d in part], bulk=True
            )
            rows.extend(await asyncio.to_thread(_usage_rows, part, hashes))
        return rows

    # -- lifecycle --------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._cmd("PING")

    async def close(self) -> None:
        await self._subscriber.close()
        for lane in (self._lane, self._bulk):
            if lane is not None:
                await lane.close()
        try:
            await self._client.aclose()
        except ERRORS:
            pass
