"""Choosing the store backend from ``store.url``."""

from __future__ import annotations

from gateway.clock import Clock
from gateway.config import schema
from gateway.store.base import Store


def create_store(config: schema.Store, clock: Clock) -> Store:
    """``memory://`` → ``MemoryStore`` on ``clock``; a redis URL → ``RedisStore``, which takes
    time from Redis itself (``TIME`` in its scripts), so it is not given the clock."""
    if config.is_memory:
        from gateway.store.memory import MemoryStore  # imported only when used

        return MemoryStore(clock)
    from gateway.store.redis import RedisStore  # imported only when used

    return RedisStore(config.url, config.timeout_ms)
