"""Choosing the alert store's backend from ``store.url``, as ``store.factory`` does for the
main store: the alert queue lives where keys and limits do."""

from __future__ import annotations

from gateway.clock import Clock
from gateway.config import schema
from gateway.store.events import EventStore
from gateway.store.events_memory import MemoryEventStore


def create_event_store(config: schema.Store, clock: Clock) -> EventStore:
    """``memory://`` → in this process on ``clock``; a redis URL → Redis, time from Redis."""
    if config.is_memory:
        return MemoryEventStore(clock)
    from gateway.store.events_redis import RedisEventStore  # imported only when used

    return RedisEventStore(config.url, config.timeout_ms)
