"""A coroutine run every so often in the background, and stopped cleanly: the one shape shared by
the health checks, the config-file watch, gauge refreshes, access-log flushes and lease renewals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("gateway.periodic")


class Periodic:
    """``every(seconds)``: call ``job`` forever, ``seconds`` apart, until ``stop``. A job that
    fails is logged and called again next time; it never ends the loop."""

    def __init__(self, seconds: float, job: Callable[[], Awaitable[object] | object]) -> None:
        self.seconds = seconds
        self.job = job
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Periodic:
        self._task = asyncio.create_task(self._loop())
        return self

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            try:
                result = self.job()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # one bad round must not stop the checks for good
                log.exception(
                    "periodic job failed", extra={"job": getattr(self.job, "__name__", "?")}
                )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
