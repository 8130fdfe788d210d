"""Delivery of queued alert events: only the process holding the store's leader lease sends.

The leader claims due deliveries from the store (hidden from any other sender for the POST's
timeout plus a margin), POSTs each to its webhook, signed, and then acknowledges it (a 2xx) or
schedules its retry (anything else, or no answer in ``alerts.timeout``): 2 s, 4 s, 8 s, … at
most 10 min apart, until ``alerts.give_up_after`` has passed since the event, when the delivery
is dropped and counted. A leader that dies leaves its lease to lapse (``leader_ttl``) and its
claimed deliveries to come back: delivery is at least once. The webhook's URL and secret are
read from the running config at each attempt; a URL is never logged (Slack-style URLs carry a
token), only its host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from gateway.alerts.events import (
    FIRST_RETRY,
    Delivery,
    hook_id,
    render,
    retry_delay,
    signature,
)
from gateway.clock import Clock
from gateway.config.schema import Alerts, Webhook
from gateway.metrics import Metrics
from gateway.store.base import StoreError
from gateway.store.events import EventStore

log = logging.getLogger("gateway.alerts")


@dataclass(frozen=True, slots=True)
class Tuning:
    """Intervals of the alert service, in seconds (tests shorten them)."""

    tick: float = 1.0  # lease renewal, upstream looks, the queue gauge
    first_retry: float = FIRST_RETRY  # the retry schedule: this, twice it, … (at most 10 min)
    leader_ttl: float = 5.0  # a dead leader's lease lapses this long after its last renewal
    poll: float = 1.0  # how often the leader looks for due deliveries
    batch: int = 32  # deliveries claimed (and POSTed concurrently) at once
    expiry_scan: float = 3600.0  # the leader's look for keys about to expire
    upstream_ttl: float = 120.0  # a shared upstream state lapses unless a process renews it
    pending_max: int = 10_000  # events waiting in a process for the store


class Sender:
    def __init__(
        self,
        events: EventStore,
        settings: Callable[[], Alerts],
        clock: Clock,
        metrics: Metrics,
        holder: str,
        tuning: Tuning,
    ) -> None:
        self.events = events
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.holder = holder
        self.tuning = tuning
        self.leading = False
        self.wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    async def renew(self) -> bool:
        """Take or keep the leader lease; True when this process became the leader now."""
        was = self.leading
        try:
            self.leading = await self.events.leader(self.holder, self.tuning.leader_ttl)
        except StoreError:
            self.leading = False  # another process may take over meanwhile: stop sending
        if self.leading and not was:
            log.info("alert sender: this process sends the alerts", extra={"holder": self.holder})
            self.wake.set()
        return self.leading and not was

    async def run(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.tuning.batch), trust_env=False
        )
        while True:
            try:
                async with asyncio.timeout(self.tuning.poll):
                    await self.wake.wait()
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                while self.leading and await self._round():
                    pass  # a full batch: there may be more due
            except Exception:  # one bad round must not end the deliveries for good
                log.exception("alert sender round failed")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.leading:
            self.leading = False
            try:
                await self.events.resign(self.holder)  # another process takes over at once
            except StoreError:
                pass  # the lease lapses by itself

    async def _round(self) -> bool:
        """Deliver one batch of due deliveries; True when the batch was full."""
        lease = self.settings().timeout + 5.0
        try:
            claimed = await self.events.claim(self.tuning.batch, lease)
        except StoreError:
            return False
        await asyncio.gather(*(self._deliver(i, p) for i, p in claimed))
        return len(claimed) == self.tuning.batch

    async def _deliver(self, item_id: str, payload: bytes) -> None:
        try:
            delivery = Delivery.decode(payload)
        except (ValueError, KeyError, TypeError):  # not ours, or from a future version
            log.warning("alert queue item unreadable; dropped", extra={"item": item_id[:80]})
            await self.events.ack(item_id)
            return
        settings = self.settings()
        hook = next((h for h in settings.webhooks if hook_id(h) == delivery.hook), None)
        try:
            if hook is None:
                await self._drop(item_id, delivery, "its webhook is no longer configured")
                return
            outcome = await self._post(hook, delivery)
            if outcome.isdigit() and 200 <= int(outcome) < 300:
                sent = delivery.ended("sent", outcome, self.clock.time())
                await self.events.ack(item_id, sent.encode())
                self._count(delivery, "sent")
            else:
                await self._failed(item_id, delivery, settings, outcome)
        except StoreError:
            pass  # the claim lapses and the delivery comes back: at least once

    async def _failed(
        self, item_id: str, delivery: Delivery, settings: Alerts, outcome: str
    ) -> None:
        self._count(delivery, "failed")
        now = self.clock.time()
        delay = retry_delay(delivery.attempts + 1, self.tuning.first_retry)
        delivery = delivery.failed(outcome, now, delay)
        if now + delay - delivery.first_at > settings.give_up_after:
            why = f"no 2xx in {delivery.attempts} attempts (the last: {outcome})"
            await self._drop(item_id, delivery, why)
            return
        await self.events.retry(item_id, delivery.encode(), delay)

    async def _drop(self, item_id: str, delivery: Delivery, why: str) -> None:
        dropped = delivery.ended("dropped", why, self.clock.time())
        await self.events.ack(item_id, dropped.encode())
        self._count(delivery, "dropped")
        log.warning(
            "alert dropped",
            extra={"event": delivery.event["id"], "type": delivery.type, "reason": why},
        )

    async def _post(self, hook: Webhook, delivery: Delivery) -> str:
        """The outcome of one POST: the HTTP status, or the name of the error."""
        body = render(delivery.event, hook.format)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "llm-edge-gateway",
            "X-Gateway-Signature": signature(hook.secret, body),
            "X-Gateway-Event": delivery.type,
            "X-Gateway-Event-Id": str(delivery.event["id"]),
            "X-Gateway-Delivery-Attempt": str(delivery.attempts + 1),
        }
        assert self._session is not None
        status: int | str
        try:
            async with asyncio.timeout(self.settings().timeout):
                async with self._session.post(
                    hook.url, data=body, headers=headers, allow_redirects=False
                ) as answer:
                    status = answer.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status = type(exc).__name__
        if isinstance(status, int) and 200 <= status < 300:
            return str(status)
        log.warning(
            "alert delivery failed; will retry",
            extra={"host": urlsplit(hook.url).hostname, "status": status, "type": delivery.type},
        )
        return str(status)

    def _count(self, delivery: Delivery, result: str) -> None:
        self.metrics.alert_deliveries.labels(delivery.type, result).inc()
