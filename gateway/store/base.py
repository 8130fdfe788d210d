"""The storage seam: the one Protocol the key service, the limiter and usage reports depend on.

Two backends implement it with the same semantics: ``memory`` (in-process, time from the injected
clock; the test fake and the single-process default) and ``redis`` (Redis or Redis Cluster, time
from ``TIME`` inside Lua scripts so processes with skewed clocks agree). One contract suite runs
against both (``tests/store``).

Semantics every backend keeps:

- Keys are found by the SHA-256 of the full key (``KeyRecord.key_hash``) or by id; an owner's keys
  are listed by owner. ``insert_key`` refuses (returns False) when the owner already has
  ``max_keys`` keys, atomically with the insert.
- ``admit`` checks every limit of an ``Admission`` in one round trip, all-or-nothing: either every
  window takes the request (rpm logs, a concurrency lease, token reservations on the day, month
  and plan-month counters) or none does. Exact under any concurrency and across processes.
  * rpm / plan_rpm: a log of admission times; at most N admissions in any rolling 60 s
    (an entry of time t stops counting at t + 60, so a steady N per minute is never refused).
  * concurrency: every admitted request holds a lease (expires after ``LEASE_SECONDS`` unless
    renewed, so a crashed or stalled process cannot hold slots for long), released by
    ``settle``; a key's concurrency is the number of its live leases.
  * daily / monthly / plan_monthly: token counters of the current UTC day / calendar month;
    admitted iff counter + reserve ≤ limit; the counter then includes the reservation.
  * retry_after: whole seconds ≥ 1 until the refused limit admits again (the oldest rpm entry
    leaving the window, UTC midnight, the first of next month; 1 for concurrency).
- ``settle`` releases the lease, moves each token counter by (used - reserved) if the period of
  the admission is still current (a period that rolled over started from zero), records usage per
  (key, model, UTC day of ``finished_at``) and the key's last use, and does all of it at most
  once per request id (a retried settle changes nothing): the lease is the marker, so nothing
  of a request outlives it. A settlement without a verdict (admitted while the store was down)
  has no lease: a marker that lives ``SETTLED_TTL`` keeps it once, and its tokens are charged
  to the periods current when it is written. ``record=False`` releases without recording.
- Request ids are the gateway's own (unique per request), never a client's.
- Usage is kept at least 90 days.
- ``publish``/``subscribe``: a broadcast to every process (key-cache invalidations); a
  subscriber that lost messages (reconnect) is told ``"*"``.
- Every call is bounded by ``store.timeout_ms``; failures raise ``StoreError``, nothing else.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Protocol

from gateway.records import Admission, KeyRecord, RowSink, Settlement, UsageDay, Verdict

# A request's lease: the limiter renews the leases of running requests every quarter of it, so a
# lease lost with its process (or its admission's late reply) frees its slot within this time.
LEASE_SECONDS = 20.0


def lease_end(now: float) -> float:
    """When a lease taken or renewed at ``now`` ends: the whole second at or before ``now +
    LEASE_SECONDS``. Redis keeps a small set's scores as text unless they are integers, and reads
    every score it passes when it adds one (a strtod each, thousands of instructions with a
    fraction); and ``floor(now)``, its end less the lease, is in ``now``'s day, so a lease still
    dates its admission exactly."""
    return float(math.floor(now + LEASE_SECONDS))


USAGE_DAYS = 100  # usage is kept this long (the promise: at least 90 days)
# The settled marker of a request admitted without the store (on_error: open): it only has
# to outlive the writer's retries of that settlement.
SETTLED_TTL = 3600.0
# The day of a settlement whose admission's reply was lost (``Limiter._abandoned``): the store
# dates it by its lease, the settlement's month holding the lease's seconds.
PRESUMED = -1


class StoreError(Exception):
    """The store could not be reached or did not answer in time."""


class StoreLost(StoreError):
    """A call sent whose connection was lost before its reply: the store may have run it (an
    admission it made then holds a lease nobody knows of, so the limiter gives it back)."""


class KeyExists(Exception):
    """``insert_key`` with an id or hash that is already taken."""


class Store(Protocol):
    # -- keys ------------------------------------------------------------------------------
    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None: ...

    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    async def list_keys(self, owner: str) -> list[KeyRecord]: ...

    async def insert_key(self, record: KeyRecord, max_keys: int | None) -> bool: ...

    async def replace_key(self, record: KeyRecord, old_hash: str | None = None) -> None:
        """Overwrite a key's record; ``old_hash`` when the hash changed (regenerate): the old
        hash stops finding the key before this returns."""
        ...

    async def delete_key(self, record: KeyRecord) -> None: ...

    async def get_plan(self, owner: str) -> str | None: ...

    async def set_plan(self, owner: str, plan: str) -> None: ...

    async def get_owner_budget(self, owner: str) -> int | None:
        """The owner's own monthly budget in micro-dollars, set over its plan's (None: the
        plan's ``monthly_budget_usd`` applies)."""
        ...

    async def set_owner_budget(self, owner: str, micros: int | None) -> None:
        """Set (or, with None, clear) the owner's own monthly budget."""
        ...

    # -- broadcast --------------------------------------------------------------------------
    async def publish(self, message: str) -> None: ...

    async def subscribe(self, callback: Callable[[str], None]) -> None:
        """Start delivering broadcasts to ``callback`` (in this process's loop) until close."""
        ...

    # -- limits -----------------------------------------------------------------------------
    async def admit(self, admission: Admission) -> Verdict:
        """The verdict, having taken what it admits."""
        ...

    def admit_now(self, admission: Admission) -> asyncio.Future[Verdict]:
        """The limiter's ``admit``: the admission is on its way when this returns (the memory
        store answers a future already done). The future completes whatever its awaiter does,
        so a caller that leaves can still give back what was taken. It fails with ``StoreLost``
        when the admission was sent and its reply lost with the connection."""
        ...

    async def settle(self, settlement: Settlement) -> None: ...

    async def settle_many(self, settlements: list[Settlement]) -> None:
        """``settle`` each, in one round trip where the backend can (a pipeline)."""
        ...

    async def renew_leases(self, admissions: list[Admission]) -> None:
        """Extend the concurrency leases of these (still running) requests."""
        ...

    async def hit(self, counter: str) -> tuple[int, float]:
        """Count one event on ``counter`` in its fixed one-minute window: (events in the
        window, seconds until it ends). Used for per-IP route rates."""
        ...

    async def auth_failure(self, client: str) -> tuple[int, float]:
        """Count a failed authentication of ``client``: (failures in the current minute window,
        seconds until that window ends)."""
        ...

    # -- usage ------------------------------------------------------------------------------
    async def usage(
        self,
        owner: str,
        key_ids: list[str],
        first_day: int,
        last_day: int,
        sink: RowSink | None = None,
    ) -> list[UsageDay]:
        """Usage rows of these keys of ``owner`` for days (YYYYMMDD) first..last inclusive.
        With ``sink``, the rows are given to it part by part as they are read, and none are
        returned: a report of thousands of keys folds them as they come instead of holding
        every row at once."""
        ...

    # -- lifecycle --------------------------------------------------------------------------
    async def ping(self) -> None: ...

    async def close(self) -> None: ...
