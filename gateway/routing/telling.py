"""Telling the other gateway processes something on the store's broadcast, as placements
(``routing.placements``) and loads (``routing.loads``) do: what gathered goes out as one
``PUBLISH`` at the end of the loop's turn, or once ``interval`` has passed since the last (a
busy process sends at most 1/interval messages a second), with at most one in flight (what
gathers meanwhile goes in the next), never awaited by a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("gateway.routing")

Publish = Callable[[str], Awaitable[None]]


class Teller:
    """The sending half; a subclass says what its ``message`` is, whether ``more`` waits, and
    what a ``delivered`` message means to it."""

    __slots__ = ("_interval", "_next", "_publish", "_sending", "_what", "sharing")

    def __init__(self, interval: float, what: str) -> None:
        self._interval = interval
        self._what = what  # for the log: what was not told
        self.sharing = False  # ``share`` was called: tell the others
        self._publish: Publish | None = None
        self._sending: asyncio.Future[None] | asyncio.Handle | None = None
        self._next = 0.0  # the loop's time before which no message goes out

    def share(self, publish: Publish) -> None:
        """Tell the other processes through ``publish`` (the store's broadcast)."""
        self._publish = publish
        self.sharing = True

    def message(self) -> str | None:
        """What gathered, as one message (nothing gathered after); None: nothing to tell."""
        raise NotImplementedError

    def more(self) -> bool:
        """Something gathered since the last message."""
        raise NotImplementedError

    def delivered(self) -> None:
        """The last message reached the store."""

    def soon(self) -> None:
        """Something new to tell: a message is scheduled unless one is already."""
        if self._sending is None and self._publish is not None:
            self._later()

    def _later(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next:
            self._sending = loop.call_soon(self._send)
        else:
            self._sending = loop.call_at(self._next, self._send)

    def _send(self) -> None:
        self._sending = None
        self.emit(self.message())

    def emit(self, message: str | None) -> None:
        """Publish ``message`` now (None: nothing to tell)."""
        if message is None or self._publish is None:
            return
        self._next = asyncio.get_running_loop().time() + self._interval
        sending = self._sending = asyncio.ensure_future(self._publish(message))
        sending.add_done_callback(self._sent)

    def _sent(self, sent: asyncio.Future[None]) -> None:
        self._sending = None
        if not sent.cancelled() and sent.exception() is not None:
            log.debug("%s not told", self._what, exc_info=sent.exception())
        else:
            self.delivered()
        if self.more():
            self._later()
