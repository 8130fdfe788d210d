"""Connections of the Redis store: clients from ``store.url`` and the broadcast subscriber.

``redis://`` and ``rediss://`` URLs (password, username and db from the URL) give one
``redis.asyncio.Redis``; ``redis+cluster://[user:pass@]h1:p1,h2:p2`` gives a ``RedisCluster``
with those startup nodes. Clients never retry a command on their own (a retried admission could
be counted twice); a failed call is the caller's ``StoreError``. At most ``POOL`` connections
per node; calls beyond wait for one (within their timeout).

The subscriber holds its own connection to one node (a Cluster broadcasts PUBLISH to every
node) and reconnects with backoff until closed. It probes an idle connection with PING, so a
hung server counts as a lost connection too; after any loss it tells its callbacks ``"*"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from gateway.store.redis_codec import CHANNEL

log = logging.getLogger("gateway.store")

Client = Redis | RedisCluster
ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
# Connections per node. A standalone client waits (within the call's timeout) for a free one; a
# Cluster client would refuse a command instead, so the store gates its calls to this many.
POOL = 256


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect: a standalone URL, or cluster startup nodes and credentials."""

    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None

    @property
    def cluster(self) -> bool:
        return bool(self.nodes)


def parse(url: str) -> Target:
    if not url.startswith("redis+cluster://"):
        if not url.startswith(("redis://", "rediss://")):
            raise ValueError(f"not a redis URL: {url.split('://')[0]!r}")
        return Target(url)
    rest = url[len("redis+cluster://") :].split("/", 1)[0].split("?", 1)[0]
    userinfo, _, hosts = rest.rpartition("@")
    username = password = None
    if userinfo:  # as redis:// URLs: "user:password", ":password" or "user"
        user, sep, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) if sep else None
    nodes = []
    for item in filter(None, (h.strip() for h in hosts.split(","))):
        host, port = item, "6379"
        if not item.endswith("]") and ":" in item:
            host, _, port = item.rpartition(":")
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise ValueError("redis+cluster:// needs at least one host:port")
    return Target(url, tuple(nodes), username, password)


def _options(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": False,
        "retry": Retry(NoBackoff(), 0),
    }


def client(target: Target, timeout: float) -> Client:
    """A client that connects lazily (on its first command)."""
    if not target.cluster:
        pool = BlockingConnectionPool.from_url(
            target.url, max_connections=POOL, timeout=timeout, **_options(timeout)
        )
        return Redis.from_pool(pool)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        max_connections=POOL,
        **_options(timeout),
    )


def node_client(target: Target, main: Client | None, attempt: int, timeout: float) -> Redis:
    """A plain client to one node, for the subscription (rotating over nodes on retries)."""
    if not target.cluster:
        return Redis.from_url(target.url, **_options(timeout))
    known = (
        [(n.host, int(n.port)) for n in main.get_nodes()] if isinstance(main, RedisCluster) else []
    )
    nodes = list(dict.fromkeys([*target.nodes, *known]))
    host, port = nodes[attempt % len(nodes)]
    return Redis(
        host=host,
        port=port,
        username=target.username,
        password=target.password,
        **_options(timeout),
    )


class Subscriber:
    """Delivers ``gw:invalidate`` broadcasts to callbacks, from one background task."""

    def __init__(self, target: Target, main: Client | None, timeout: float) -> None:
        self.callbacks: list[Callable[[str], None]] = []
        self.ready = asyncio.Event()  # set while subscribed
        self.idle = 5.0  # seconds without traffic before a PING probe
        self._target, self._main, self._timeout = target, main, timeout
        self._task: asyncio.Task[None] | None = None
        self._delay = 0.05

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="redis-store-subscriber")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _deliver(self, message: str) -> None:
        for callback in list(self.callbacks):
            try:
                callback(message)
            except Exception:
                log.exception("store broadcast callback failed")

    async def _run(self) -> None:
        attempt, lost = 0, False
        while True:
            conn = node_client(self._target, self._main, attempt, self._timeout)
            pubsub: Any = conn.pubsub()
            try:
                await self._session(pubsub, lost)
            except ERRORS as exc:
                level = logging.WARNING if self.ready.is_set() else logging.DEBUG  # once a loss
                log.log(level, "store subscription lost (%s); retrying", exc or type(exc).__name__)
            finally:
                self.ready.clear()
                with contextlib.suppress(*ERRORS):
                    async with asyncio.timeout(self._timeout):
                        await pubsub.aclose()
                        await conn.aclose()
            lost, attempt = True, attempt + 1
            await asyncio.sleep(self._delay)
            self._delay = min(2.0, self._delay * 2)

    async def _session(self, pubsub: Any, lost: bool) -> None:
        async with asyncio.timeout(self._timeout):
            await pubsub.subscribe(CHANNEL)
            while True:
                message = await pubsub.get_message(timeout=self._timeout)
                if message is not None and message["type"] == "subscribe":
                    break
        self.ready.set()
        self._delay = 0.05
        if lost:
            self._deliver("*")  # messages may have been missed while disconnected
        while True:
            message = await pubsub.get_message(timeout=self.idle)
            if message is None:
                await pubsub.ping()
                message = await pubsub.get_message(timeout=self._timeout)
                if message is None:
                    raise TimeoutError("no answer to PING")
            if message["type"] == "message":
                self._deliver(message["data"].decode())
