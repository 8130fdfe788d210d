"""The grants of the shared waiting room to this process (``store.capacity``), as they happen:
one Redis subscription to ``gw:grant:<process>`` on a connection of its own, reconnected with
backoff until closed. Every message is ``ticket \\t upstream``. After a loss (messages may have
been missed) ``lost`` is called: the caller sweeps at once, which finds every grant it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from gateway.store.capacity import Deliver
from gateway.store.redis_conn import ERRORS, node_client, parse

log = logging.getLogger("gateway.store")

CHANNEL = "gw:grant:"
IDLE = 5.0  # seconds without a message before a PING probe


class RedisGrantListener:
    def __init__(
        self, url: str, timeout: float, process: str, deliver: Deliver, lost: Callable[[], None]
    ) -> None:
        self._target, self._timeout = parse(url), timeout
        self.channel = CHANNEL + process
        self._deliver, self._lost = deliver, lost
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
                self._ready.clear()
                with contextlib.suppress(*ERRORS):
                    async with asyncio.timeout(self._timeout):
                        await pubsub.aclose()
                        await conn.aclose()
            attempt += 1
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)

    async def _session(self, pubsub: Any, lost: bool) -> None:
        async with asyncio.timeout(self._timeout):
            await pubsub.subscribe(self.channel)
            while (message := await pubsub.get_message(timeout=self._timeout)) is None or (
                message["type"] != "subscribe"
            ):
                pass
        self._ready.set()
        if lost:
            self._lost()
        while True:
            message = await pubsub.get_message(timeout=IDLE)
            if message is None:
                await pubsub.ping()
                continue
            if message["type"] == "message":
                ticket, _, upstream = bytes(message["data"]).decode().partition("\t")
                self._deliver(ticket, upstream)
