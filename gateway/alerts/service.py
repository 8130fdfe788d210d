"""The alert service of one process: the hooks the rest of the gateway calls, and the background
work that turns what they report into events in the store's durable queue.

Hooks never wait and never touch the store; they are called on the request path or from
callbacks, and do nothing at all when no webhook is configured (the service is not started):

- ``observe_verdict(record, plan, verdict)`` (or ``observe_usage`` with a ``UsageSnapshot``):
  after an admission; every token or money threshold crossed (50, 80, 100 %) becomes one
  ``usage.threshold`` event per period.
- ``key_changed(message)``: every store broadcast; a key's hash is looked up in the background:
  a revoked key gives ``key.revoked`` (once per revocation), a key with an expiry is indexed
  for ``key.expiring``. ``key_revoked(record)`` says the same directly.
- ``upstream_changed(name, healthy)``: a push of one upstream's state; ``health`` (given at
  construction) is polled every tick as well. ``upstream.down``/``upstream.up`` per
  ``alerts.down_after``.

``send_test(message)`` (the admin API's ``POST /admin/alerts/test``) queues an ``alert.test``
event for every webhook at once, waiting for the store.

In the background (every process): the intake writes events to the store, at most once per
marker (``EventStore.enqueue(once=...)``); the tick renews or seeks the leader lease, reports
upstream changes and, in the leader only, scans for keys about to expire (at leadership and
hourly). The leader's ``Sender`` delivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gateway.alerts import thresholds as th
from gateway.alerts.events import TEST, deliveries, new_event
from gateway.alerts.sender import Sender, Tuning
from gateway.alerts.upstreams import UpstreamViews
from gateway.clock import Clock
from gateway.config.schema import Alerts, Plan
from gateway.metrics import Metrics
from gateway.records import KeyRecord, Verdict, iso
from gateway.store.base import Store, StoreError
from gateway.store.events import EventStore

log = logging.getLogger("gateway.alerts")
SEEN_MAX = 50_000  # crossings remembered in a process (the store's markers are the truth)


@dataclass(frozen=True, slots=True)
class Pending:
    """An event made by a hook, on its way to the store; ``once``: (marker, ttl)."""

    event: dict[str, Any]
    once: tuple[str, float] | None = None


class AlertService:
    def __init__(
        self,
        settings: Callable[[], Alerts],
        store: Store,
        events: EventStore,
        clock: Clock,
        metrics: Metrics,
        static_keys: Callable[[], Iterable[KeyRecord]] = tuple,
        health: Callable[[], Iterable[tuple[str, bool]]] | None = None,
        tuning: Tuning | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.clock = clock
        self.metrics = metrics
        self.static_keys = static_keys
        self.health = health
        self.tuning = tuning or Tuning()
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sender = Sender(events, settings, clock, metrics, holder, self.tuning)
        self.active = False
        self.upstreams = UpstreamViews()
        self._pending: deque[Pending] = deque()
        self._keys: deque[KeyRecord | str] = deque()  # records or key hashes to look at
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()  # set while nothing waits for the store
        self._drained.set()
        self._seen: dict[str, None] = {}
        self._indexed: dict[str, float] = {}  # key id → expiry handed to the intake
        self._tasks: list[asyncio.Task[None]] = []
        self._next_scan = 0.0
        self.ticks = 0  # rounds of the tick done: lease sought, upstreams looked at

    # -- hooks: never wait, never fail ---------------------------------------------------------
    def observe_usage(self, record: KeyRecord, plan: Plan, used: th.UsageSnapshot) -> None:
        """After an admission: queue every threshold crossed for the first time here."""
        if not self.active:
            return
        if record.expires_at is not None and self._indexed.get(record.id) != record.expires_at:
            if len(self._indexed) >= SEEN_MAX:
                self._indexed.clear()
            self._indexed[record.id] = record.expires_at
            self._look_at(record)
        for crossing in th.crossed(th.limits_of(record, plan), used):
            marker = crossing.marker(record.owner if crossing.owner_wide else record.id)
            if marker in self._seen:
                continue
            if len(self._seen) >= SEEN_MAX:
                self._seen.clear()
            self._seen[marker] = None
            data = crossing.data(record.id, record.owner)
            self._emit("usage.threshold", data, ("threshold|" + marker, crossing.ttl()))

    def observe_verdict(self, record: KeyRecord, plan: Plan, verdict: Verdict) -> None:
        """``observe_usage`` from an admitting verdict's counters (``Verdict.spent``)."""
        if self.active and (used := th.UsageSnapshot.of(verdict)) is not None:
            self.observe_usage(record, plan, used)

    def key_changed(self, message: str) -> None:
        """A store broadcast: a key's hash (a key changed), ``plan:<owner>`` or ``*``."""
        if self.active and len(message) == 64 and not message.startswith("plan:"):
            self._look_at(message)

    def key_revoked(self, record: KeyRecord) -> None:
        if self.active:
            self._look_at(record)

    def upstream_changed(self, name: str, healthy: bool) -> None:
        if self.active:
            self.upstreams.tell(name, healthy)

    def _look_at(self, key: KeyRecord | str) -> None:
        self._keys.append(key)
        self._drained.clear()
        self._ready.set()

    def _emit(self, kind: str, data: dict[str, Any], once: tuple[str, float] | None) -> None:
        if len(self._pending) >= self.tuning.pending_max:
            dropped = self._pending.popleft()
            self.metrics.alert_deliveries.labels(dropped.event["type"], "dropped").inc()
        self._pending.append(Pending(new_event(kind, data, self.clock.time()), once))
        self._drained.clear()
        self._ready.set()

    async def send_test(self, message: str) -> tuple[dict[str, Any], int]:
        """An ``alert.test`` event for every configured webhook, queued in the store now (a
        ``StoreError`` reaches the caller); the event and how many webhooks it is queued for.
        The sender delivers it as any other event."""
        now = self.clock.time()
        event = new_event(TEST, {"message": message, "requestedBy": "admin"}, now)
        queued = deliveries(event, self.settings().webhooks, now)
        if queued:
            await self.events.enqueue([(d.id, d.encode()) for d in queued])
            for delivery in queued:
                self.metrics.alert_deliveries.labels(delivery.type, "queued").inc()
            self.sender.wake.set()
        return event, len(queued)

    # -- start and stop ---------------------------------------------------------------------
    async def start(self) -> None:
        """Run the background work, unless no webhook is configured: then nothing runs."""
        if not self.settings().webhooks:
            return
        self.active = True
        self._tasks = [
            asyncio.create_task(self._intake(), name="alerts-intake"),
            asyncio.create_task(self._ticks(), name="alerts-tick"),
            asyncio.create_task(self.sender.run(), name="alerts-sender"),
        ]

    async def stop(self, flush_seconds: float = 2.0) -> None:
        """Write what the hooks queued (bounded), stop, and give up the leader lease."""
        if not self.active:
            return
        self.active = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_seconds):
                await self._drained.wait()  # the intake writes what the hooks queued
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.sender.close()
        await self.events.close()

    # -- the intake: hooks → store --------------------------------------------------------------
    async def _intake(self) -> None:
        backoff = 0.05
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._keys or self._pending:
                try:
                    await self._intake_one()
                    backoff = 0.05
                except StoreError:
                    await asyncio.sleep(backoff)  # the store is down: retry, more slowly
                    backoff = min(2.0, backoff * 2)
                except Exception:  # a bad item must not stop the ones behind it
                    log.exception("alert intake failed; the item is dropped")
                    (self._keys or self._pending).popleft()
            self._drained.set()

    async def _intake_one(self) -> None:
        """Take the oldest item to the store; it leaves its queue only once written."""
        if self._keys:
            key = self._keys[0]
            record = await self.store.get_key_by_hash(key) if isinstance(key, str) else key
            if record is not None:
                await self._key_seen(record)
            self._keys.popleft()
            return
        await self._store_event(self._pending[0])
        self._pending.popleft()

    async def _store_event(self, pending: Pending) -> None:
        settings = self.settings()
        queued = deliveries(pending.event, settings.webhooks, self.clock.time())
        if not queued:
            return  # no webhook asks for this type
        items = [(d.id, d.encode()) for d in queued]
        if await self.events.enqueue(items, once=pending.once):
            for delivery in queued:
                self.metrics.alert_deliveries.labels(delivery.type, "queued").inc()
            self.sender.wake.set()

    async def _key_seen(self, record: KeyRecord) -> None:
        if record.revoked:
            data = {
                "keyId": record.id,
                "owner": record.owner,
                "name": record.name,
                "reason": record.revoked_reason,
                "revokedBy": record.revoked_by or "admin",
                "revokedAt": iso(record.revoked_at),
            }
            marker = f"revoked|{record.id}|{record.revoked_at}"
            event = new_event("key.revoked", data, self.clock.time())
            await self._store_event(Pending(event, (marker, 40 * th.DAY)))
            return
        if record.expires_at is None:
            await self.events.unwatch_expiry(record.id)
            return
        await self.events.watch_expiry(record.id, record.expires_at)
        await self._expiry_event(record)

    async def _expiry_event(self, record: KeyRecord) -> None:
        """``key.expiring`` when a notice is due for this key and expiry, once."""
        assert record.expires_at is not None
        now = self.clock.time()
        days = th.expiry_notice(record.expires_at, now)
        if days is None or record.revoked:
            return
        data = {
            "keyId": record.id,
            "owner": record.owner,
            "name": record.name,
            "expiresAt": iso(record.expires_at),
            "days": days,
        }
        marker = f"expiring|{record.id}|{record.expires_at}|{days}"
        ttl = record.expires_at - now + 2 * th.DAY
        await self._store_event(Pending(new_event("key.expiring", data, now), (marker, ttl)))

    # -- the tick: leadership, upstreams, expiries ----------------------------------------------
    async def _ticks(self) -> None:
        while True:
            try:
                await self._tick()
            except StoreError:
                pass  # the next tick tries again
            except Exception:  # one bad round must not end the alerts for good
                log.exception("alert tick failed")
            self.ticks += 1
            await asyncio.sleep(self.tuning.tick)

    async def _tick(self) -> None:
        if await self.sender.renew():
            self._next_scan = 0.0  # a new leader looks at once
        await self._report_upstreams()
        if not self.sender.leading:
            self.metrics.alert_queue.set(0)
            return
        self.metrics.alert_queue.set(await self.events.depth())
        if self.clock.monotonic() >= self._next_scan:
            await self.scan_expiries()
            self._next_scan = self.clock.monotonic() + self.tuning.expiry_scan

    async def _report_upstreams(self) -> None:
        if self.health is not None:
            self.upstreams.replace(self.health())
        settings = self.settings()
        for name, state in self.upstreams.changes(self.clock.monotonic(), settings.down_after):
            before = await self.events.swap(f"upstream:{name}", state, self.tuning.upstream_ttl)
            if state == "down" and before != "down":
                since = self.upstreams.since(name) or self.clock.monotonic()
                began = self.clock.time() - (self.clock.monotonic() - since)
                self._emit("upstream.down", {"upstream": name, "since": iso(began)}, None)
            elif state == "up":
                if before == "down":
                    self._emit("upstream.up", {"upstream": name}, None)
                self.upstreams.said_up(name)  # only now: a failed swap is tried again

    async def scan_expiries(self) -> None:
        """Every indexed key expiring within 7 days, and every declared key with an expiry."""
        now = self.clock.time()
        for key_id, expires_at in await self.events.expiring(now + th.EXPIRY_DAYS[0] * th.DAY):
            record = await self.store.get_key(key_id)
            if record is None or record.expires_at is None or record.expires_at <= now:
                await self.events.unwatch_expiry(key_id)
                continue
            if record.expires_at != expires_at:
                await self.events.watch_expiry(key_id, record.expires_at)
            await self._expiry_event(record)
        for record in self.static_keys():
            if record.expires_at is not None:
                await self._expiry_event(record)
