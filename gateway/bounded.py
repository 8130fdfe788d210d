"""Bounded tables for caches that clients can fill (key records, owners' plans). Pure.

``remember`` keeps at most ``limit`` entries: a new name past the bound evicts the entry
remembered longest ago (dicts keep insertion order, and a name remembered again moves to the
end). Entries in use are remembered again whenever their TTL runs out, so what is evicted is
what has not been fetched for the longest time; a hit costs nothing extra.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def remember(table: dict[str, T], name: str, value: T, limit: int) -> None:
    """``table[name] = value`` as the newest entry, evicting the oldest past ``limit``."""
    if table.pop(name, None) is None and len(table) >= limit:
        del table[next(iter(table))]
    table[name] = value
