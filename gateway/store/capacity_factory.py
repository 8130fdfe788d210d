"""Choosing where upstream slots are counted from ``store.url``: ``memory://`` → nowhere but
the balancer of this one process (None); a redis URL → leases in Redis, shared by every process
of the store."""

from __future__ import annotations

from gateway.config import schema
from gateway.store.capacity import LeaseStore


def create_lease_store(config: schema.Store) -> LeaseStore | None:
    if config.is_memory:
        return None
    from gateway.store.capacity_redis import RedisLeaseStore  # imported only when used

    return RedisLeaseStore(config.url, config.timeout_ms)
