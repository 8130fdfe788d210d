"""Where stored Responses live: a small Protocol of its own (put, get, delete with a TTL, keyed
by owner and response id), apart from the main ``store.base`` Store, and the factory choosing
its backend from ``store.url`` (in this process for ``memory://``, else Redis or Redis Cluster).

A record is opaque bytes (the response and the input it answered, as JSON: ``proxy.responses``
writes and reads it). An owner sees only its own records: another owner's id is simply not
there. Every call is bounded by ``store.timeout_ms`` and raises only ``StoreError``.
"""

from __future__ import annotations

import re
import secrets
from typing import Protocol

from gateway.clock import Clock
from gateway.config import schema

ID_PREFIX = "resp_"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


_IDS_AT_ONCE = 64
_random: list[str] = []  # hex digits of ids to come, drawn from the OS in one call


def new_id() -> str:
    """A new response id: ``resp_`` and 48 random hex digits (the OS's randomness, read for
    ``_IDS_AT_ONCE`` ids at a time: one system call, not one per response)."""
    if not _random:
        pool = secrets.token_hex(24 * _IDS_AT_ONCE)
        _random.extend(pool[i : i + 48] for i in range(0, len(pool), 48))
    return ID_PREFIX + _random.pop()


def valid_id(response_id: str) -> bool:
    """Whether ``response_id`` could name a stored response (any other is simply unknown)."""
    return _ID.match(response_id) is not None


class ResponsesStore(Protocol):
    async def put(self, owner: str, response_id: str, record: bytes, ttl: float) -> None:
        """Keep ``record`` for ``owner`` under ``response_id`` for ``ttl`` seconds."""

    async def get(self, owner: str, response_id: str) -> bytes | None:
        """The record, or None when the owner has none by that id (expired, deleted, never)."""

    async def delete(self, owner: str, response_id: str) -> bool:
        """Remove the record; whether there was one."""

    async def close(self) -> None: ...


def create_responses_store(config: schema.Store, clock: Clock) -> ResponsesStore:
    """``memory://`` → in this process on ``clock``; a redis URL → Redis (its own TTLs)."""
    if config.is_memory:
        from gateway.store.responses_store_memory import MemoryResponses

        return MemoryResponses(clock)
    from gateway.store.responses_store_redis import RedisResponses  # imported only when used

    return RedisResponses(config.url, config.timeout_ms)
