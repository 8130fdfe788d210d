"""The hot path's lease calls on Redis, for ``RedisLeaseStore``.

Acquisitions (``acquire_now``) asked for in one turn of the loop go to Redis as one EVALSHA of
``capacity_acquire.lua``, which decides them in order exactly as calls of their own would be,
and each answer arrives through a future. No task and no timer per request: one timer per
batch bounds the wait (its futures then fail with ``StoreError``), and a task only where the
batch cannot be sent at once (the lane not connected, the script unknown after a restart, a
Cluster, which redis-py serves). The leases given back in the same turn (``release_now``)
ride the same call, first (their slots go to the waiting before any newcomer); not awaited.

A lease Redis took for a caller that no longer waits for it is given back at once, not held for
its lease time: a reply that comes after the batch's time ran out or after its caller left, and
a batch whose reply was lost with the connection (Redis may have run it: every lease it may
have taken is released, a no-op where it took none; its futures fail with ``StoreLost``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from gateway.store.base import StoreError, StoreLost
from gateway.store.capacity import ROOMY
from gateway.store.redis_lane import LaneError
from gateway.store.transport import Call, LaneTransport, RedisTransport, Script, why

log = logging.getLogger("gateway.store")
# Pauses (s) before each try to give leases back: at once, then twice more, all within a
# lease's 4 s (later they would have expired anyway).
GIVE_BACK = (0.0, 0.25, 1.0)

BATCH = 64  # the most acquisitions one EVALSHA decides (more in one turn: another call)

# One acquisition: its KEYS and ARGV in the script's layout, its upstreams' names (in KEYS
# order), its lease id, the future of the index of the upstream it got (-1: none), and whether
# that index tells room to spare (``store.capacity.ROOMY`` added) or not.
Ask = tuple[list[str], list[str], list[str], str, asyncio.Future[int], bool]
Pairs = list[tuple[str, str]]  # (upstream, lease)


def script_call(batch: Sequence[Ask], freed: Pairs, prefix: str, lease_ms: str) -> Call:
    """``capacity_acquire.lua``'s KEYS and ARGV: the leases given back, then the requests."""
    keys = [prefix + name for name, _ in freed]
    args = [lease_ms, str(len(freed)), *(lease for _, lease in freed)]
    for ask_keys, ask_args, _, _, _, _ in batch:
        keys += ask_keys
        args += ask_args
    return keys, args


def _fail(future: asyncio.Future[int], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        future.exception()  # retrieved: a caller that left must not log it


def _stop(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


def _expire(batch: Sequence[Ask]) -> None:
    for ask in batch:
        _fail(ask[4], StoreError("redis: no answer in time"))


class Acquirer:
    """``ask`` and ``release_now`` gather; the end of the loop's turn sends them in one call.
    ``release`` (awaited, its own call) gives back what may have been taken for nobody."""

    def __init__(
        self,
        script: Script,
        transport: Callable[[], RedisTransport],
        prefix: str,
        lease_ms: str,
        timeout: float,
        release: Callable[[Pairs], Awaitable[None]],
    ) -> None:
        self._script, self._transport, self._prefix = script, transport, prefix
        self._lease_ms, self._timeout, self._release = lease_ms, timeout, release
        self._asking: list[Ask] = []
        self._freeing: Pairs = []  # leases given back in this turn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._closed = False

    def ask(
        self, keys: list[str], args: list[str], names: list[str], lease: str, room: bool = False
    ) -> asyncio.Future[int]:
        pending, loop = self._asking, self._loop
        if not pending and not self._freeing:  # the first of this turn: a send at its end
            loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._send)
        assert loop is not None
        future: asyncio.Future[int] = loop.create_future()
        pending.append((keys, args, names, lease, future, room))
        if len(pending) >= BATCH:
            self._send()
        return future

    def release_now(self, leases: Pairs, at_once: bool = False) -> None:
        """Leases given back, sent at the end of this turn with its acquisitions (first: their
        slots go to the waiting before any newcomer of the turn), or with ``at_once`` now, with
        what gathered so far; not awaited (a failure is logged: they expire)."""
        if not self._asking and not self._freeing and not at_once:
            self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._send)
        self._freeing += leases
        if at_once:
            self._send()

    def _send(self) -> None:
        batch, self._asking = self._asking, []
        freed, self._freeing = self._freeing, []
        if not batch and not freed:
            return
        timer = None
        if batch:
            timer = asyncio.get_running_loop().call_later(self._timeout, _expire, batch)
        call = script_call(batch, freed, self._prefix, self._lease_ms)
        reply = self._transport().send_now(self._script, call)
        if reply is None:
            self._spawn(self._slow(batch, freed, call, timer))
        else:
            reply.add_done_callback(
                functools.partial(self._replied, batch, freed, call, timer, True)
            )

    def _replied(
        self,
        batch: list[Ask],
        freed: Pairs,
        call: Call,
        timer: asyncio.TimerHandle | None,
        again: bool,
        reply: asyncio.Future[Any],
    ) -> None:
        exc = None if reply.cancelled() else reply.exception()
        if again and isinstance(exc, LaneError) and exc.noscript:  # it ran nothing
            self._spawn(self._slow(batch, freed, call, timer))
            return
        _stop(timer)
        if isinstance(exc, LaneError):  # Redis answered with an error: nothing was done
            self._failed(batch, freed, StoreError(f"redis: {exc}"))
        elif exc is not None or reply.cancelled():  # sent, the reply lost: perhaps done
            self._lost(batch, freed, exc)
        else:
            self._deliver(batch, reply.result())

    def _deliver(self, batch: list[Ask], reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) != len(batch):  # a reply of the wrong shape
            self._lost(batch, [], ValueError(f"unexpected acquire reply {reply!r:.100}"))
            return
        got: list[int] = reply
        back: Pairs = []
        for (_, _, names, lease, future, room), code in zip(batch, got, strict=True):
            index = code % ROOMY  # 1-based, 0: none
            if not future.done():
                future.set_result(code - 1 if room else index - 1)
            elif index > 0:  # its caller stopped waiting: the slot goes back
                back.append((names[index - 1], lease))
        if back:
            self._give_back(back)

    def _lost(self, batch: list[Ask], freed: Pairs, exc: BaseException | None) -> None:
        """Redis may have run the call: every lease it may have taken goes back (with those
        given back in it), and every caller still waiting is told (``StoreLost``)."""
        self._give_back(freed + [(n, ask[3]) for ask in batch for n in ask[2]])
        for ask in batch:
            _fail(ask[4], StoreLost(f"redis: {why(exc)}"))

    def _failed(self, batch: list[Ask], freed: Pairs, exc: StoreError) -> None:
        """Nothing was run: its callers are told; its leases given back expire (logged)."""
        for ask in batch:
            _fail(ask[4], exc)
        if freed and not self._closed:
            log.warning("capacity release failed", extra={"reason": str(exc)})

    async def _slow(
        self, batch: list[Ask], freed: Pairs, call: Call, timer: asyncio.TimerHandle | None
    ) -> None:
        """A call that could not be sent at once. On the lane: the script loaded (bounded; a
        failure there ran nothing), then the call sent without a bound of its own (its timer
        still runs for the callers), so that a late answer is still given back. Elsewhere (a
        Cluster: every lease set and queue in one slot, so one call) redis-py's bounded call."""
        transport = self._transport()
        if isinstance(transport, LaneTransport):
            try:
                await transport.call("SCRIPT", "LOAD", self._script.source)
            except StoreError as exc:
                _stop(timer)
                self._failed(batch, freed, exc)
                return
            reply = transport.send_now(self._script, call)
            if reply is None:  # the connection dropped again meanwhile: nothing was sent
                _stop(timer)
                self._failed(batch, freed, StoreError("redis: connection lost"))
                return
            reply.add_done_callback(
                functools.partial(self._replied, batch, freed, call, timer, False)
            )
            return
        try:
            (answer,) = await transport.evalsha(self._script, [call])
        except StoreError as exc:  # timed out or dropped: Redis may have run it
            _stop(timer)
            self._lost(batch, freed, exc)
            return
        _stop(timer)
        self._deliver(batch, answer)

    def _give_back(self, leases: Pairs) -> None:
        if self._closed:  # the store is closing: they expire within a lease time
            return
        self._spawn(self._returning(leases))

    async def _returning(self, leases: Pairs) -> None:
        """Leases given back, tried again a little later when the store failed (a connection
        reset heals in a moment; giving back twice is harmless); past ``GIVE_BACK`` they are
        left to expire within their lease time."""
        reason = ""
        for pause in GIVE_BACK:
            if pause:
                await asyncio.sleep(pause)  # the store's reconnection, not a test's wait
            try:
                await self._release(leases)
                return
            except StoreError as exc:
                reason = str(exc)
        log.warning("capacity lease give-back failed", extra={"reason": reason})

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # held until done (the loop keeps only weak references)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Give back what is on its way (bounded by the store's time), then stop."""
        self._send()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self._timeout)
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
