"""Timers of the request path that asyncio's own would make costly per chunk."""

from __future__ import annotations

import asyncio


class Silence:
    """``with Silence(limit) as s``: the task is cancelled (and the block raises TimeoutError)
    once a wait that began at ``s.since`` has lasted ``limit`` seconds; ``s.since = None``
    between waits. One timer re-armed at most once per ``limit``, where rescheduling an
    ``asyncio.timeout`` around every wait cost two timer operations per stream chunk."""

    __slots__ = ("_cancelling", "_fired", "_handle", "_limit", "_loop", "_task", "since")

    def __init__(self, limit: float) -> None:
        self.since: float | None = None
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self._fired = False

    def __enter__(self) -> Silence:
        self._cancelling = self._task.cancelling()
        self._handle = self._loop.call_later(self._limit, self._check)
        return self

    def _check(self) -> None:
        since, now = self.since, self._loop.time()
        if since is not None and now - since >= self._limit:
            self._handle, self._fired = None, True
            self._task.cancel()
        else:
            start = since if since is not None else now
            self._handle = self._loop.call_at(max(start + self._limit, now + 0.001), self._check)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: object
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fired:
            ours = self._task.uncancel() <= self._cancelling  # no one else cancelled the task
            if ours and kind is asyncio.CancelledError:
                raise TimeoutError from exc
