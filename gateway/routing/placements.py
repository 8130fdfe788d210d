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

import random

import orjson

from gateway.routing.history import History
from gateway.routing.telling import Teller

PREFIX = "route:"
MAX_PENDING = 4096  # placements waiting for the next message; more are dropped (the store is slow)
BATCH = 256  # placements in one message at most (~16 KB; a receiver learns them in ~0.4 ms)
INTERVAL = 0.02  # seconds at least between two messages of a process


class Placements(Teller):
    """This process's moves to tell, and the others' to learn (into ``history``)."""

    __slots__ = ("history", "origin", "pending")

    def __init__(self, history: History, origin: int | None = None) -> None:
        super().__init__(INTERVAL, "placements")
        self.history = history
        self.origin = random.getrandbits(62) if origin is None else origin
        self.pending: list[int | str | None] = []  # prompt, replaced, upstream, prompt, …

    def tell(self, prompt: int, replaced: int | None, upstream: str) -> None:
        """``prompt`` (replacing ``replaced`` in the memory) went to ``upstream``."""
        pending = self.pending
        if len(pending) >= 3 * MAX_PENDING:
            return
        if not pending:
            self.soon()
        pending += (prompt, replaced, upstream)

    def message(self) -> str | None:
        """The pending placements as one message (and none pending after)."""
        if not self.pending:
            return None
        moves, self.pending = self.pending[: 3 * BATCH], self.pending[3 * BATCH :]
        return PREFIX + orjson.dumps([self.origin, moves]).decode()

    def more(self) -> bool:
        return bool(self.pending)

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
