"""How the Redis store reaches Redis: one ``RedisTransport`` Protocol, and its two
implementations, chosen by ``transport_for``.

- ``LaneTransport``: one Redis (``redis://``) over ``store.redis_lane``, a pipelined connection
  far cheaper per call than redis-py. A report's reads get a lane of their own (``bulk``).
- ``ClientTransport``: a Cluster (and ``rediss://``) over redis-py's clients.

Both give one reply shape (what hiredis parses: bytes, ints, lists; a hash as its flat list of
fields and values), one failure policy (any error, error reply or timeout is ``StoreError``,
raised by the call that met it alone: a call that times out never fails its neighbours), and
``scripts_run`` handles NOSCRIPT once for every caller (loads the script and sends again the
calls that met it: a NOSCRIPT ran nothing, the others ran and are not sent twice).
``send_now`` is the hot path's admission: the script's reply as a future, sent before it
returns, not bounded in time (the caller bounds its wait), or None when it cannot be sent now
(then ``evalsha``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store import resp
from gateway.store.base import StoreError
from gateway.store.redis_conn import ERRORS, POOL, Client, Target, client
from gateway.store.redis_lane import Arg, Lane, LaneError, supported

T = TypeVar("T")
C = TypeVar("C")
Command = tuple[Arg, ...]
Call = tuple[Sequence[str], Sequence[str]]  # a script call's KEYS and ARGV (lists, or runs)


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str = ""  # its SHA-1, computed once (hashing the source per call cost ~10 µs a request)

    def __post_init__(self) -> None:
        if not self.sha:
            object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


class RedisTransport(Protocol):
    spans_slots: bool  # a Cluster: one script call may not touch two owners' keys

    async def call(self, *args: Arg) -> Any: ...

    async def pipeline(
        self, commands: Sequence[Command], bulk: bool = False, raising: bool = True
    ) -> list[Any]:
        """The replies in order; ``bulk``: a report's reads (a connection and a time budget
        of their own); ``raising=False``: a command's error is its reply (an exception), the
        others' replies kept (the pipeline as a whole still raises ``StoreError``)."""
        ...

    async def evalsha(self, script: Script, calls: list[Call]) -> list[Any]: ...

    def send_now(self, script: Script, call: Call) -> asyncio.Future[Any] | None: ...

    async def close(self) -> None: ...


def why(exc: BaseException | None) -> str:
    """An error's text for a ``StoreError`` (a timeout's own text is empty)."""
    if exc is None:
        return "cancelled"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def may_have_run(exc: BaseException) -> bool:
    """Whether a failed redis-py call may have run all the same: its connection broke or its
    time ran out, perhaps after the command went out (an error reply ran nothing)."""
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    return isinstance(cause, RedisConnectionError | RedisTimeoutError | TimeoutError | OSError)


_FAILURES = (*ERRORS, LaneError)


def _failed(exc: BaseException) -> StoreError:
    return StoreError(f"redis: {why(exc)}")


def _raising(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, Exception):  # a LaneError, or redis-py's error
            raise StoreError(f"redis: {why(reply)}")
    return replies


def evalsha_commands(script: Script, calls: Sequence[Call]) -> list[Command]:
    return [("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls]


def evalsha_packed(script: Script, calls: Sequence[Call]) -> list[bytes]:
    """The calls packed for the lane (``resp.evalsha``: a call's runs joined whole)."""
    return [resp.evalsha(script.sha, keys, args) for keys, args in calls]


async def scripts_run(
    send: Callable[[list[C]], Awaitable[list[Any]]],
    load: Callable[[], Awaitable[object]],
    script: Script,
    calls: list[Call],
    commands: Callable[[Script, Sequence[Call]], list[C]],
    first: Sequence[C] = (),
) -> tuple[list[Any], list[Any]]:
    """The commands ``first``, then the script's calls (as ``commands`` makes them), in one
    pipeline (``send``): their replies, apart, an error being a reply. Calls that met an
    unloaded script (they ran nothing) are sent again, alone, once ``load`` has loaded it."""
    replies = await send([*first, *commands(script, calls)])
    head, replies = replies[: len(first)], replies[len(first) :]
    missing = [i for i, reply in enumerate(replies) if noscript(reply)]
    if missing:
        await load()
        again = await send(commands(script, [calls[i] for i in missing]))
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    return head, replies


def noscript(reply: object) -> bool:
    """Redis did not know the script (a restart or SCRIPT FLUSH): it ran nothing."""
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, LaneError) and str(reply).startswith("NOSCRIPT")
    )


class LaneTransport:
    """One Redis over two lanes: the requests' and the reports'."""

    spans_slots = False

    def __init__(self, url: str, timeout: float, bulk_timeout: float) -> None:
        self._timeout, self._bulk_timeout = timeout, bulk_timeout
        self._lane = Lane(url, timeout)
        self._bulk = Lane(url, bulk_timeout)

    @staticmethod
    def _deadline(budget: float) -> float:
        """When a call given ``budget`` seconds now fails (the lanes' loop time)."""
        return asyncio.get_running_loop().time() + budget

    # Each call awaits its lane directly (a coroutine level costs ~2k instructions a call); a
    # failure is a ``StoreError``.
    async def call(self, *args: Arg) -> Any:
        try:
            return await self._lane.call(*args, deadline=self._deadline(self._timeout))
        except _FAILURES as exc:
            raise _failed(exc) from exc

    async def pipeline(
        self, commands: Sequence[Command], bulk: bool = False, raising: bool = True
    ) -> list[Any]:
        if not commands:
            return []
        lane, budget = (self._bulk, self._bulk_timeout) if bulk else (self._lane, self._timeout)
        try:
            replies = await lane.call_many(commands, self._deadline(budget))
        except _FAILURES as exc:
            raise _failed(exc) from exc
        return _raising(replies) if raising else replies

    async def evalsha(self, script: Script, calls: list[Call]) -> list[Any]:
        deadline = self._deadline(self._timeout)

        def send(commands: list[bytes]) -> Awaitable[list[Any]]:
            return self._lane.call_packed(commands, deadline)

        def load() -> Awaitable[object]:
            return self._lane.call("SCRIPT", "LOAD", script.source, deadline=deadline)

        try:
            _, replies = await scripts_run(send, load, script, calls, evalsha_packed)
        except _FAILURES as exc:
            raise _failed(exc) from exc
        return _raising(replies)

    def send_now(self, script: Script, call: Call) -> asyncio.Future[Any] | None:
        return self._lane.send_packed(resp.evalsha(script.sha, *call))

    async def close(self) -> None:
        await self._lane.close()
        await self._bulk.close()


class ClientTransport:
    """A Cluster (or TLS) over redis-py: a bounded number of calls at once per node, the
    slots mapped under a lock before the first command and again after an error."""

    def __init__(self, target: Target, timeout: float, bulk_timeout: float) -> None:
        self._timeout, self._bulk_timeout = timeout, bulk_timeout
        self.client: Client = client(target, timeout)
        self.spans_slots = target.cluster
        self._unmapped = target.cluster
        self._map_lock = asyncio.Lock()
        self._gate = asyncio.Semaphore(POOL) if target.cluster else None

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
                raise StoreError(f"redis: {why(exc)}") from exc
            raise

    async def _map_cluster(self) -> None:
        """redis-py's lazy mapping, when many first commands race into it, recycles
        connections under in-flight commands: map once, under a lock, before commands."""
        async with self._map_lock:
            if self._unmapped:
                await cast(RedisCluster, self.client).initialize()
                self._unmapped = False

    async def call(self, *args: Arg) -> Any:
        return _flat(await self._run(self.client.execute_command(*args)))

    async def pipeline(
        self, commands: Sequence[Command], bulk: bool = False, raising: bool = True
    ) -> list[Any]:
        if not commands:
            return []
        budget = self._bulk_timeout if bulk else None
        replies = await self._run(self._piped(commands), budget)
        return _raising(replies) if raising else replies

    async def _piped(self, commands: Sequence[Command]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return [_flat(r) for r in await pipe.execute(raise_on_error=False)]

    async def evalsha(self, script: Script, calls: list[Call]) -> list[Any]:
        def send(commands: list[Command]) -> Awaitable[list[Any]]:
            return self._run(self._piped(commands))

        def load() -> Awaitable[object]:
            return self._run(self.client.script_load(script.source))

        _, replies = await scripts_run(send, load, script, calls, evalsha_commands)
        return _raising(replies)

    def send_now(self, script: Script, call: Call) -> asyncio.Future[Any] | None:
        return None  # redis-py cannot send before its task runs: evalsha is the way

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except ERRORS:
            pass


def _flat(reply: Any) -> Any:
    """redis-py's reply in the lane's shape: a hash (a dict) as its flat list of fields and
    values."""
    if isinstance(reply, dict):
        return [item for pair in reply.items() for item in pair]
    return reply


def transport_for(target: Target, timeout: float, bulk_timeout: float) -> RedisTransport:
    """The lane for one Redis it can serve (``redis://``), redis-py for the rest."""
    if not target.cluster and supported(target.url):
        return LaneTransport(target.url, timeout, bulk_timeout)
    return ClientTransport(target, timeout, bulk_timeout)
