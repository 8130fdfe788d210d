"""The grants of the shared waiting room to this process (``store.capacity``), as they happen:
one Redis subscription to ``gw:grant:<process>`` on a connection of its own, reconnected with
backoff until closed. Every message is ``ticket \\t upstream``. After a loss (messages may have
been missed) ``lost`` is called: the caller sweeps at once, which finds every grant it missed.
With ``wanted``, the same connection also hears ``gw:wanted``: the upstreams (tab-separated) a
request of any process started to wait for; ``status`` is told when the subscription comes up
and when it goes down (notices may be missed while it is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from gateway.store.capacity import Deliver, Status, Wanted
from gateway.store.redis_conn import ERRORS, node_client, parse

log = logging.getLogger("gateway.store")

CHANNEL = "gw:grant:"
WANTED = "gw:wanted"
_WANTED = WANTED.encode()
IDLE = 5.0  # seconds without a message before a PING probe


class RedisGrantListener:
    def __init__(
        self,
        url: str,
        timeout: float,
        process: str,
        deliver: Deliver,
        lost: Callable[[], None],
        wanted: Wanted | None = None,
        status: Status | None = None,
    ) -> None:
        self._target, self._timeout = parse(url), timeout
        self.channel = CHANNEL + process
        self._channels = [self.channel] if wanted is None else [self.channel, WANTED]
        self._deliver, self._lost = deliver, lost
        self._wanted, self._status = wanted, status
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="capacity-grants")

    async def ready(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._ready.wait()
        return self._ready.is_set()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        attempt, delay = 0, 0.05
        while True:
            conn = node_client(self._target, None, attempt, self._timeout)
            pubsub: Any = conn.pubsub()
            try:
                await self._session(pubsub, attempt > 0)
            except ERRORS as exc:
                log.warning("capacity grants subscription lost (%s); retrying", exc or "closed")
            finally:
                self._down()
                with contextlib.suppress(*ERRORS):
                    async with asyncio.timeout(self._timeout):
                        await pubsub.aclose()
                        await conn.aclose()
            attempt += 1
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)

    def _down(self) -> None:
        if self._ready.is_set():
            self._ready.clear()
            if self._status is not None:
                self._status(False)

    async def _session(self, pubsub: Any, lost: bool) -> None:
        async with asyncio.timeout(self._timeout):
            await pubsub.subscribe(*self._channels)
            confirmed = 0
            while confirmed < len(self._channels):
                message = await pubsub.get_message(timeout=self._timeout)
                if message is not None and message["type"] == "subscribe":
                    confirmed += 1
        self._ready.set()
        if self._status is not None:
            self._status(True)
        if lost:
            self._lost()
        while True:
            message = await pubsub.get_message(timeout=IDLE)
            if message is None:
                await pubsub.ping()
                continue
            if message["type"] == "message":
                self._heard(bytes(message["channel"]), bytes(message["data"]).decode())

    def _heard(self, channel: bytes, data: str) -> None:
        if channel == _WANTED:
            if self._wanted is not None:
                self._wanted(data.split("\t"))
            return
        ticket, _, upstream = data.partition("\t")
        self._deliver(ticket, upstream)
