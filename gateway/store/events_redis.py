"""The alert store on Redis or Redis Cluster (``store.events`` semantics), shared by every
gateway process of the store, so the queue survives a restart of any of them.

Every key is under the ``{alerts}`` hash tag (one Cluster slot), so each call is one atomic
script or command: ``gw:{alerts}:due`` (sorted set: item id by due time), ``gw:{alerts}:items``
(hash: item id → payload), ``gw:{alerts}:history`` (hash: item id → its last record) with
``gw:{alerts}:history:at`` (sorted set: item id by enqueue time), ``gw:{alerts}:once:<marker>``,
``gw:{alerts}:leader``, ``gw:{alerts}:state:<name>`` and ``gw:{alerts}:expiry`` (sorted set:
key id by expiry). Alerts are few, so one slot is plenty. Time is Redis ``TIME`` (``clock`` is
a test hook, as in ``store.redis``). Its own redis-py client, off the request path
(``store.redis_conn``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

from redis.commands.core import AsyncScript

from gateway.clock import Clock
from gateway.store.base import StoreError
from gateway.store.events import HISTORY, Item
from gateway.store.redis_conn import ERRORS, Client, client, parse

T = TypeVar("T")
PREFIX = "gw:{alerts}:"
DUE, ITEMS, LEADER, EXPIRY = (PREFIX + name for name in ("due", "items", "leader", "expiry"))
HIST, HIST_AT = PREFIX + "history", PREFIX + "history:at"

_NOW = """
local function now(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function at(seconds) return string.format('%.3f', seconds) end
"""
# KEYS: due, items, marker, history, history:at. ARGV: now, marker ttl in ms ('' = no marker),
# history size, then id, payload, ...
ENQUEUE = (
    _NOW
    + """
local t = now(ARGV[1])
if ARGV[2] ~= '' and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then
  return 0
end
for i = 4, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[1], at(t), ARGV[i])
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[5], at(t), ARGV[i])
  end
end
local over = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[3])
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, over - 1)) do
    redis.call('HDEL', KEYS[4], id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, over - 1)
end
return 1
"""
)
# KEYS: due, items. ARGV: now, count, lease seconds. Returns id, payload, id, payload, ...
CLAIM = (
    _NOW
    + """
local t = now(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', at(t), 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local payload = redis.call('HGET', KEYS[2], id)
  if payload then
    redis.call('ZADD', KEYS[1], at(t + tonumber(ARGV[3])), id)
    out[#out + 1] = id
    out[#out + 1] = payload
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""
)
# KEYS: due, items, history. ARGV: now, id, payload, delay seconds.
RETRY = (
    _NOW
    + """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[1], at(now(ARGV[1]) + tonumber(ARGV[4])), ARGV[2])
  if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
    redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
  end
end
return 1
"""
)
# KEYS: due, items, history. ARGV: id, its final record ('' = none).
ACK = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] ~= '' and redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
end
return 1
"""
# KEYS: history, history:at. ARGV: count. Returns id, record, ... newest first.
RECENT = """
local out = {}
for _, id in ipairs(redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1)) do
  local record = redis.call('HGET', KEYS[1], id)
  if record then
    out[#out + 1] = id
    out[#out + 1] = record
  end
end
return out
"""
# KEYS: leader. ARGV: holder, ttl in ms.
LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
SWAP = """
local before = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return before
"""

SCRIPTS = {
    "enqueue": ENQUEUE,
    "claim": CLAIM,
    "retry": RETRY,
    "ack": ACK,
    "recent": RECENT,
    "lead": LEAD,
    "resign": RESIGN,
    "swap": SWAP,
}


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisEventStore:
    def __init__(self, url: str, timeout_ms: int, clock: Clock | None = None) -> None:
        self.url = url
        self.timeout = max(1.0, timeout_ms / 1000.0)  # off the request path: no need to hurry
        self.clock = clock
        self._client: Client | None = None
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def client(self) -> Client:
        """Made on first use: a gateway without webhooks never makes one."""
        if self._client is None:
            self._client = client(parse(self.url), self.timeout)
            register = self._client.register_script
            self._scripts = {name: register(text) for name, text in SCRIPTS.items()}
        return self._client

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        self.client  # noqa: B018 - made on first use
        return self._scripts[name](keys, args)

    def _now(self) -> str:
        return repr(self.clock.time()) if self.clock is not None else ""

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except ERRORS as exc:
            raise StoreError(f"redis (alerts): {exc or type(exc).__name__}") from None

    async def enqueue(self, items: list[Item], once: tuple[str, float] | None = None) -> bool:
        marker, ttl = (PREFIX + "once:" + once[0], str(_ms(once[1]))) if once else (DUE, "")
        args: list[Any] = [self._now(), ttl, HISTORY]
        for item_id, payload in items:
            args += [item_id, payload]
        keys = [DUE, ITEMS, marker, HIST, HIST_AT]
        return bool(await self._call(self._script("enqueue", keys, args)))

    async def claim(self, count: int, lease: float) -> list[Item]:
        reply = await self._call(self._script("claim", [DUE, ITEMS], [self._now(), count, lease]))
        return [(reply[i].decode(), bytes(reply[i + 1])) for i in range(0, len(reply), 2)]

    async def ack(self, item_id: str, record: bytes | None = None) -> None:
        await self._call(self._script("ack", [DUE, ITEMS, HIST], [item_id, record or b""]))

    async def retry(self, item_id: str, payload: bytes, delay: float) -> None:
        args = [self._now(), item_id, payload, delay]
        await self._call(self._script("retry", [DUE, ITEMS, HIST], args))

    async def depth(self) -> int:
        return int(await self._call(self.client.hlen(ITEMS)))

    async def recent(self, count: int) -> list[Item]:
        if count <= 0:
            return []
        reply = await self._call(self._script("recent", [HIST, HIST_AT], [count]))
        return [(reply[i].decode(), bytes(reply[i + 1])) for i in range(0, len(reply), 2)]

    async def records(self, ids: list[str]) -> list[bytes | None]:
        if not ids:
            return []
        reply = await self._call(self.client.hmget(HIST, ids))
        return [None if r is None else r if isinstance(r, bytes) else r.encode() for r in reply]

    async def leader(self, holder: str, ttl: float) -> bool:
        return bool(await self._call(self._script("lead", [LEADER], [holder, _ms(ttl)])))

    async def resign(self, holder: str) -> None:
        await self._call(self._script("resign", [LEADER], [holder]))

    async def swap(self, name: str, value: str, ttl: float) -> str | None:
        before = await self._call(
            self._script("swap", [PREFIX + "state:" + name], [value, _ms(ttl)])
        )
        return before.decode() if before is not None else None

    async def watch_expiry(self, key_id: str, expires_at: float) -> None:
        await self._call(self.client.zadd(EXPIRY, {key_id: expires_at}))

    async def unwatch_expiry(self, key_id: str) -> None:
        await self._call(self.client.zrem(EXPIRY, key_id))

    async def expiring(self, until: float) -> list[tuple[str, float]]:
        reply = await self._call(self.client.zrangebyscore(EXPIRY, "-inf", until, withscores=True))
        pairs = cast(list[tuple[bytes, float]], reply)  # withscores: (member, score) pairs
        return [(member.decode(), float(score)) for member, score in pairs]

    async def close(self) -> None:
        if self._client is None:
            return
        try:
            await self._client.aclose()
        except ERRORS:
            pass  # closing a connection that is gone already
