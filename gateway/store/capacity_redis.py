"""Upstream leases and the waiting room of full models on Redis or Redis Cluster
(``store.capacity`` semantics), shared by every gateway process of the store.

Keys: ``gw:{cap}:<upstream>``, a sorted set of lease ids by expiry (ms, Redis ``TIME``); the
queues under ``gw:{cap}|q|<model>|`` and ``gw:{cap}|w|<upstream>`` (``capacity_queue.lua``
says what each holds). All under one hash tag, so that one script can look at every upstream
and queue on a Cluster. ``capacity_acquire.lua`` gives back the leases freed in one turn of
the loop and takes the slots its requests ask for, in one EVALSHA (``store.capacity_batch``;
each request's model queue looked at in the same call, and whether its upstream has room to
spare told with its answer); ``capacity_renew.lua`` renews any number of leases in one
EVALSHA (and tells which upstreams whose idle leases a process keeps still have room to
spare); ``capacity_release.lua`` gives leases back (off the hot path) and
hands the freed slots to the waiting; ``capacity_join``, ``_leave`` and ``_sweep`` are the
waiting room.
Its own connection through the store's transport (``store.transport``: the lane on one Redis,
redis-py for a Cluster), apart from the main store's, and one subscription for grants.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from importlib import resources

from gateway.store.capacity import LEASE_SECONDS, Bound, Deliver, Renewed, Status, Wanted
from gateway.store.capacity_batch import Acquirer
from gateway.store.capacity_grants import RedisGrantListener
from gateway.store.redis_conn import parse
from gateway.store.transport import RedisTransport, Script, transport_for

PREFIX = "gw:{cap}:"
QUEUE = "gw:{cap}|q|"
MIN_SHARE = 1e-3  # the cost of a request is 1 / share: bounded, so that tags keep their width


def _source(name: str) -> str:
    return resources.files("gateway.store").joinpath(name).read_text()


def _script(name: str, library: bool = False) -> Script:
    return Script(name, (_source("capacity_queue.lua") if library else "") + _source(name))


ACQUIRE = _script("capacity_acquire.lua", library=True)
RENEW = _script("capacity_renew.lua", library=True)
RELEASE = _script("capacity_release.lua", library=True)
JOIN = _script("capacity_join.lua", library=True)
LEAVE = _script("capacity_leave.lua", library=True)
SWEEP = _script("capacity_sweep.lua", library=True)


def queue_key(model: str) -> str:
    return f"{QUEUE}{model}|z"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLeaseStore:
    def __init__(self, url: str, timeout_ms: int, lease_seconds: float = LEASE_SECONDS) -> None:
        self.url = url
        self.timeout = timeout_ms / 1000.0
        self.lease_ms = str(max(1, int(lease_seconds * 1000)))
        self._transport: RedisTransport | None = None
        self._acquirer = Acquirer(
            ACQUIRE, lambda: self.transport, PREFIX, self.lease_ms, self.timeout, self.release
        )

    @property
    def wait_room(self) -> RedisLeaseStore:
        """This store keeps the queues of full models too (``join``, ``leave``, ``sweep``)."""
        return self

    @property
    def transport(self) -> RedisTransport:
        """Made on first use: a gateway without capped upstreams never connects."""
        if self._transport is None:
            self._transport = transport_for(parse(self.url), self.timeout, self.timeout)
        return self._transport

    def acquire_now(
        self,
        candidates: Sequence[tuple[str, int]],
        lease: str,
        queue: str | None = None,
        room: bool = False,
        bound: Bound | None = None,
    ) -> asyncio.Future[int]:
        if len(candidates) == 1:  # the usual model: one upstream
            ((name, cap),) = candidates
            names, keys, args = [name], [PREFIX + name], [lease, "0", "1", str(cap)]
        else:
            names = [name for name, _ in candidates]
            keys = [PREFIX + name for name in names]
            args = [lease, "0", str(len(names)), *(str(cap) for _, cap in candidates)]
        flags = 0
        if queue is not None:
            keys.append(QUEUE + queue + "|z")  # queue_key(queue)
            flags = 1
        if bound is not None:  # the load factor and weights, exact (repr round-trips)
            factor, weights = bound
            args += [repr(float(factor)), *(repr(float(w)) for w in weights)]
            flags += 2
            room = False
        if flags:
            args[1] = str(flags)
        return self._acquirer.ask(keys, args, names, lease, room)

    async def acquire(
        self,
        candidates: Sequence[tuple[str, int]],
        lease: str,
        queue: str | None = None,
        bound: Bound | None = None,
    ) -> int:
        return await self.acquire_now(candidates, lease, queue, bound=bound)

    async def renew(
        self, leases: Sequence[tuple[str, str]], room: Sequence[tuple[str, int]] = ()
    ) -> Renewed:
        if not leases and not room:
            return Renewed([], [])
        keys = [PREFIX + name for name, _ in leases] + [PREFIX + name for name, _ in room]
        args = [self.lease_ms, str(len(leases)), *(lease for _, lease in leases)]
        args += [str(cap) for _, cap in room]
        (reply,) = await self.transport.evalsha(RENEW, [(keys, args)])
        flags, gone = reply[: len(room)], reply[len(room) :]
        return Renewed([bool(flag) for flag in flags], [leases[int(i) - 1] for i in gone])

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        if leases:
            await self.transport.evalsha(RELEASE, [self._release_call(leases)])

    def release_now(self, leases: Sequence[tuple[str, str]], at_once: bool = False) -> None:
        if leases:
            self._acquirer.release_now(list(leases), at_once)

    def _release_call(self, leases: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
        keys = [PREFIX + name for name, _ in leases]
        return keys, [self.lease_ms, *(lease for _, lease in leases)]

    async def held(self, upstream: str) -> int:
        seconds, micros = await self.transport.call("TIME")
        ms = int(seconds) * 1000 + int(micros) // 1000
        return int(await self.transport.call("ZCOUNT", PREFIX + upstream, str(ms + 1), "+inf"))

    # -- the waiting room -------------------------------------------------------------------
    async def join(
        self,
        model: str,
        ticket: str,
        owner: str,
        share: float,
        priority: int,
        most: int | None,
        upstreams: Sequence[tuple[str, int]],
    ) -> tuple[int, str | int, float]:
        cost = f"{1.0 / max(share, MIN_SHARE):.6f}"
        args = [model, ticket, owner, cost, str(priority), self.lease_ms]
        args.append(str(-1 if most is None else most))
        for name, cap in upstreams:
            args += [name, str(cap)]
        ((status, value, rate),) = await self.transport.evalsha(JOIN, [([queue_key(model)], args)])
        per_second = int(rate) / 1000.0
        if int(status) == 1:
            return 1, _text(value), per_second
        return int(status), int(value), per_second

    async def leave(self, model: str, ticket: str) -> int:
        args = [model, ticket, self.lease_ms]
        (answer,) = await self.transport.evalsha(LEAVE, [([queue_key(model)], args)])
        return int(answer)

    async def sweep(self, model: str, tickets: Sequence[str]) -> list[str]:
        args = [model, self.lease_ms, *tickets]
        (fates,) = await self.transport.evalsha(SWEEP, [([queue_key(model)], args)])
        return [_text(fate) for fate in fates]

    def listen(
        self,
        process: str,
        deliver: Deliver,
        lost: Callable[[], None],
        wanted: Wanted | None = None,
        status: Status | None = None,
    ) -> RedisGrantListener:
        return RedisGrantListener(self.url, self.timeout, process, deliver, lost, wanted, status)

    async def close(self) -> None:
        await self._acquirer.close()
        if self._transport is not None:
            await self._transport.close()
