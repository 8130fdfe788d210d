"""Where affinity moved a conversation, told to every gateway process on the store's broadcast.

Behind a load balancer the turns of one conversation reach the gateway processes at random.
Each process remembers where it sent each prompt (``routing.history``), but a process that did
not route the turn before knows only the ring: when the bound moved the conversation off its
ring worker, that process sent the next turn back to where its KV cache no longer was (0.57x
of least_loaded's time to first token against 0.37x with one process, in
``bench/routing_sim.py``). So a process tells the others each placement they could not guess:
a prompt sent elsewhere than its remembered worker, or, with nothing remembered, than its
ring worker. A conversation that stays where the others expect it costs nothing; on the
request path a move costs an append to a list.

The told placements go out as one ``PUBLISH`` per batch (``BATCH`` at most, ``INTERVAL`` apart),
with at most one in flight per process (what is moved while one is sent goes in the next),
never awaited by a request;
receivers put them in their own memory, as if they had routed the turn. Prompts are named by
``affinity``'s hashes, the same in every process. A lost message (the store down, a
subscriber reconnecting) only sends a turn to the ring's choice, as before.

Messages are ``route:`` then JSON ``[origin, [prompt, replaced prompt or null, upstream],
…]``; the store's other broadcasts (key hashes, ``*``) never start so.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import orjson

from gateway.routing.history import History

log = logging.getLogger("gateway.routing")

PREFIX = "route:"
MAX_PENDING = 4096  # placements waiting for the next message; more are dropped (the store is slow)
BATCH = 256  # placements in one message at most (~16 KB; a receiver learns them in ~0.4 ms)
INTERVAL = 0.02  # seconds at least between two messages of a process

Publish = Callable[[str], Awaitable[None]]


class Placements:
    """This process's moves to tell, and the others' to learn (into ``history``)."""

    __slots__ = ("_next", "_publish", "_sending", "history", "origin", "pending", "sharing")

    def __init__(self, history: History, origin: int | None = None) -> None:
        self.history = history
        self.origin = random.getrandbits(62) if origin is None else origin
        self.pending: list[int | str | None] = []  # prompt, replaced, upstream, prompt, …
        self.sharing = False  # ``share`` was called: tell the others
        self._publish: Publish | None = None
        self._sending: asyncio.Future[None] | asyncio.Handle | None = None
        self._next = 0.0  # the loop's time before which no message goes out

    def share(self, publish: Publish) -> None:
        """Tell the other processes through ``publish`` (the store's broadcast)."""
        self._publish = publish
        self.sharing = True

    def tell(self, prompt: int, replaced: int | None, upstream: str) -> None:
        """``prompt`` (replacing ``replaced`` in the memory) went to ``upstream``."""
        pending = self.pending
        if len(pending) >= 3 * MAX_PENDING:
            return
        if not pending and self._sending is None and self._publish is not None:
            self._later()
        pending += (prompt, replaced, upstream)

    def _later(self) -> None:
        """The next message at the end of this turn of the loop, or once ``INTERVAL`` has
        passed since the last (a busy process tells at most 1/INTERVAL messages a second)."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next:
            self._sending = loop.call_soon(self._send)
        else:
            self._sending = loop.call_at(self._next, self._send)

    def message(self) -> str | None:
        """The pending placements as one message (and none pending after)."""
        if not self.pending:
            return None
        moves, self.pending = self.pending[: 3 * BATCH], self.pending[3 * BATCH :]
        return PREFIX + orjson.dumps([self.origin, moves]).decode()

    def _send(self) -> None:
        self._sending = None
        message = self.message()
        if message is None or self._publish is None:
            return
        self._next = asyncio.get_running_loop().time() + INTERVAL
        sending = self._sending = asyncio.ensure_future(self._publish(message))
        sending.add_done_callback(self._sent)

    def _sent(self, sent: asyncio.Future[None]) -> None:
        self._sending = None
        if not sent.cancelled() and sent.exception() is not None:
            log.debug("placements not told", exc_info=sent.exception())
        if self.pending:
            self._later()

    def receive(self, message: str) -> bool:
        """Learn another process's placements; False if ``message`` is not placements."""
        if not message.startswith(PREFIX):
            return False
        try:
            origin, moves = orjson.loads(message[len(PREFIX) :])
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return True
        if origin == self.origin or not isinstance(moves, list):
            return True
        record = self.history.record
        for i in range(0, len(moves) - 2, 3):
            prompt, replaced, upstream = moves[i : i + 3]
            if (
                isinstance(prompt, int)
                and (replaced is None or isinstance(replaced, int))
                and isinstance(upstream, str)
            ):
                record((prompt,), upstream, replaced)
        return True
