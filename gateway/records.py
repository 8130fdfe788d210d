"""The records that cross the storage seam: API keys, admissions and their verdicts, settlements,
usage. Plain frozen data (``per_request`` records: frozen to the type checker), no behaviour
beyond conversions. Pure.

Key records are stored and served as camelCase JSON (the portal's form); the secret is
never part of a record, only its SHA-256 (``key_hash``), which is never served.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from itertools import zip_longest
from typing import TYPE_CHECKING, Any, Literal, TypeVar

_R = TypeVar("_R")

if TYPE_CHECKING:
    from typing import dataclass_transform

    @dataclass_transform(frozen_default=True)
    def per_request(cls: type[_R]) -> type[_R]: ...

else:

    def per_request(cls: Callable[..., object]) -> Callable[..., object]:
        """A record made for every request: frozen to the type checker, a plain slots
        dataclass at run time. A frozen dataclass's ``__init__`` goes through
        ``object.__setattr__`` for each field, ~2.4 µs more per record (Admission, Verdict and
        Settlement are made for every governed request); nothing assigns to them, so they
        hash by value as frozen ones do."""
        return dataclass(slots=True, unsafe_hash=True)(cls)


Status = Literal["ACTIVE", "REVOKED", "EXPIRED"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str | None) -> float | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _network(net: IPNetwork, api: bool) -> str:
    """An allowlist entry as served (a single address without its /32) or stored (as is)."""
    return str(net.network_address) if api and net.num_addresses == 1 else str(net)


@dataclass(frozen=True, slots=True, kw_only=True)
class RightFields:
    """What a key may do, declared once for ``Rights`` and ``KeyRecord`` (keyword-only: a key
    record's own fields keep their places). ``models`` None: every model; ``ip_whitelist``
    empty: any address; a limit or ``expires_at`` None: none."""

    permissions: frozenset[str] = frozenset({"chat"})
    models: frozenset[str] | None = None
    ip_whitelist: tuple[IPNetwork, ...] = ()
    rpm_limit: int | None = None
    max_concurrency: int | None = None
    daily_limit: int | None = None
    monthly_limit: int | None = None
    expires_at: float | None = None
    tpm_limit: int | None = None
    daily_budget: int | None = None  # micro-dollars (served as dailyBudgetUsd, in dollars)
    monthly_budget: int | None = None  # micro-dollars

    def rights(self) -> Rights:
        """These fields alone, as ``Rights``."""
        return Rights(**self.right_fields())

    def right_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RIGHTS}


@dataclass(frozen=True, slots=True)
class Rights(RightFields):
    """What a key may do: the part of a key record that self-service bounds."""

    def to_json(self, api: bool) -> dict[str, Any]:
        """The camelCase fields, as served (``api``) or stored (full precision)."""
        return {
            "permissions": sorted(self.permissions),
            "models": sorted(self.models) if self.models is not None else None,
            "ipWhitelist": [_network(n, api) for n in self.ip_whitelist],
            "rpmLimit": self.rpm_limit,
            "maxConcurrency": self.max_concurrency,
            "dailyLimit": self.daily_limit,
            "monthlyLimit": self.monthly_limit,
            "expiresAt": iso(self.expires_at) if api else self.expires_at,
            "tpmLimit": self.tpm_limit,
            "dailyBudgetUsd": _dollars(self.daily_budget),
            "monthlyBudgetUsd": _dollars(self.monthly_budget),
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Rights:
        models = data.get("models")
        return Rights(
            permissions=frozenset(data.get("permissions", ["chat"])),
            models=frozenset(models) if models is not None else None,
            ip_whitelist=tuple(
                ipaddress.ip_network(n, strict=False) for n in data.get("ipWhitelist", [])
            ),
            rpm_limit=data.get("rpmLimit"),
            max_concurrency=data.get("maxConcurrency"),
            daily_limit=data.get("dailyLimit"),
            monthly_limit=data.get("monthlyLimit"),
            expires_at=data.get("expiresAt"),
            tpm_limit=data.get("tpmLimit"),
            daily_budget=_micros(data.get("dailyBudgetUsd")),
            monthly_budget=_micros(data.get("monthlyBudgetUsd")),
        )


def _dollars(micros: int | None) -> float | None:
    return None if micros is None else micros / 1_000_000


def _micros(dollars: float | None) -> int | None:
    return None if dollars is None else round(dollars * 1_000_000)


@dataclass(frozen=True, slots=True)
class KeyRecord(RightFields):
    """An API key as stored: who owns it, its state, and its rights (``RightFields``)."""

    id: str
    owner: str
    key_hash: str = field(repr=False)
    key_prefix: str = ""
    name: str = ""
    description: str = ""
    revoked: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    last_used_at: float | None = None
    revoked_at: float | None = None
    revoked_reason: str | None = None
    static: bool = False  # declared in the config: read-only through the API
    # The most self-service may set on this key: the admin's last word on each field, or, for a
    # key made through /api/keys, the creating key's rights. None (a record older than
    # ceilings, or a declared key): the key's own rights.
    ceiling: Rights | None = None
    revoked_by: Literal["admin", "owner"] | None = None  # None when revoked: before revokedBy

    def status(self, now: float) -> Status:
        if self.revoked:
            return "REVOKED"
        if self.expires_at is not None and now >= self.expires_at:
            return "EXPIRED"
        return "ACTIVE"

    def effective_ceiling(self) -> Rights:
        return self.ceiling if self.ceiling is not None else self.rights()

    def to_api(self, now: float) -> dict[str, Any]:
        """The record as the key API serves it (never the hash, never the secret)."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "owner": self.owner,
            "keyPrefix": self.key_prefix,
            "status": self.status(now),
            **self.rights().to_json(api=True),
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "lastUsedAt": iso(self.last_used_at),
            "revokedAt": iso(self.revoked_at),
            "revokedReason": self.revoked_reason,
            "revokedBy": self.revoked_by if self.revoked else None,
            "ceiling": self.effective_ceiling().to_json(api=True),
        }

    def to_store(self) -> dict[str, Any]:
        """The stored form: the API form's fields at full precision, plus the hash."""
        return {
            "id": self.id,
            "owner": self.owner,
            "keyHash": self.key_hash,
            "keyPrefix": self.key_prefix,
            "name": self.name,
            "description": self.description,
            "revoked": self.revoked,
            **self.rights().to_json(api=False),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "lastUsedAt": self.last_used_at,
            "revokedAt": self.revoked_at,
            "revokedReason": self.revoked_reason,
            "revokedBy": self.revoked_by,
            "ceiling": self.ceiling.to_json(api=False) if self.ceiling is not None else None,
        }

    @staticmethod
    def from_store(data: dict[str, Any]) -> KeyRecord:
        rights = Rights.from_json(data)
        ceiling = data.get("ceiling")
        return KeyRecord(
            id=data["id"],
            owner=data["owner"],
            key_hash=data["keyHash"],
            key_prefix=data.get("keyPrefix", ""),
            name=data.get("name", ""),
            description=data.get("description", ""),
            revoked=bool(data.get("revoked")),
            **rights.right_fields(),
            created_at=data.get("createdAt", 0.0),
            updated_at=data.get("updatedAt", 0.0),
            last_used_at=data.get("lastUsedAt"),
            revoked_at=data.get("revokedAt"),
            revoked_reason=data.get("revokedReason"),
            ceiling=Rights.from_json(ceiling) if ceiling is not None else None,
            revoked_by=data.get("revokedBy"),
        )

    def evolve(self, **changes: Any) -> KeyRecord:
        return replace(self, **changes)


RIGHTS = tuple(f.name for f in fields(RightFields))  # the attributes self-service bounds

Refusal = Literal[
    "rpm",
    "concurrency",
    "daily",
    "monthly",
    "tpm",
    "daily_budget",
    "monthly_budget",
    "plan_rpm",
    "plan_monthly",
    "plan_tpm",
    "plan_budget",
]


@per_request
class Admission:
    """One request asking to be admitted: every limit that applies, checked all-or-nothing.

    ``None`` limits do not apply. ``reserve`` is the token reservation (estimated prompt tokens
    plus max_tokens); it is taken from the daily, monthly and plan counters (and the rolling
    minute's tokens) on admission and settled to the real usage later. ``reserve_cost`` is the
    same reservation priced, in micro-dollars, for the money budgets (also micro-dollars).
    """

    request_id: str
    key_id: str
    owner: str
    rpm: int | None = None
    concurrency: int | None = None
    daily: int | None = None
    monthly: int | None = None
    plan_rpm: int | None = None
    plan_monthly: int | None = None
    reserve: int = 0
    tpm: int | None = None
    daily_budget: int | None = None
    monthly_budget: int | None = None
    plan_tpm: int | None = None
    plan_budget: int | None = None
    reserve_cost: int = 0


@per_request
class Verdict:
    """The store's answer to an ``Admission``, with what the rate-limit headers need.

    ``retry_after`` (seconds, ≥ 1) is set when refused: the true time until the refused limit
    admits again. ``day`` (YYYYMMDD) and ``month`` (YYYYMM) are the periods the reservation was
    taken from, in the store's clock; ``now`` is that clock (epoch seconds).
    """

    admitted: bool
    refused: Refusal | None = None
    retry_after: int = 0
    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float = 0.0  # seconds until a request slot frees
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float = 0.0  # seconds until the tighter token period rolls over
    day: int = 0
    month: int = 0
    now: float = 0.0
    spent: Spent | None = None  # what the periods hold after this verdict (alerts read it)


@per_request
class Spent:
    """What a key's and its owner's counters hold: tokens of the day, the month, the owner's
    month and the rolling minutes (the key's, the owner's); money in micro-dollars."""

    day_tokens: int = 0
    month_tokens: int = 0
    owner_month_tokens: int = 0
    minute_tokens: int = 0
    owner_minute_tokens: int = 0
    day_cost: int = 0
    month_cost: int = 0
    owner_month_cost: int = 0


@per_request
class Settlement:
    """The end of an admitted request: release its slot, settle its reservation to what it
    used, and record its usage (once per ``request_id``, however often this is retried).

    A settlement of an admission the store made (``day`` set) counts only while its lease is
    held: removing the lease is the settle-once marker. One without (admitted while the store
    was down, ``day`` 0) records its usage once and charges the periods current when settled.
    """

    admission: Admission
    day: int
    month: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    error: bool = False
    estimated: bool = False
    finished_at: float = 0.0
    # False: a release only (an admission nobody was served by: its caller timed out or left):
    # the lease and the reservation are given back, no usage is recorded.
    record: bool = True
    api: str = "chat"  # the API the request used: usage is kept per model and API
    cost: int = 0  # what the request cost, micro-dollars (settles ``reserve_cost``)


# Latency histogram bucket bounds (ms) for usage p50/p95; the last bucket is open.
LATENCY_BOUNDS_MS: tuple[int, ...] = (
    25,
    50,
    100,
    200,
    300,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    7500,
    10000,
    15000,
    20000,
    30000,
    45000,
    60000,
    90000,
    120000,
    180000,
    300000,
    600000,
)


def latency_bucket(ms: float) -> int:
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS)


@dataclass(frozen=True, slots=True)
class UsageDay:
    """One key's usage of one model through one API on one UTC day (``date`` is YYYY-MM-DD)."""

    date: str
    key_id: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    latency_ms_total: float = 0.0
    latency_buckets: tuple[int, ...] = ()  # counts per LATENCY_BOUNDS_MS bucket (+1 open)
    api: str = "chat"  # the API the requests used (chat, responses, embeddings, ...)

    def plus(self, other: UsageDay) -> UsageDay:
        """This row with ``other``'s counts added (its date, key, model and API kept)."""
        pairs = zip_longest(self.latency_buckets, other.latency_buckets, fillvalue=0)
        return replace(
            self,
            requests=self.requests + other.requests,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            errors=self.errors + other.errors,
            latency_ms_total=self.latency_ms_total + other.latency_ms_total,
            latency_buckets=tuple(a + b for a, b in pairs),
        )


RowSink = Callable[[list[UsageDay]], None]  # takes a report's usage rows, part by part


class Merge:
    """Usage rows summed as they come, per model and API, and per key and day only where
    ``by_key``/``by_day`` (else the merged rows' key id or date is empty): a report over
    thousands of keys and days holds a row per group instead of every row it read."""

    def __init__(self, by_key: bool, by_day: bool) -> None:
        self.by_key, self.by_day = by_key, by_day
        self._rows: dict[tuple[str, str, str, str], UsageDay] = {}

    def add(self, rows: list[UsageDay]) -> None:
        for row in rows:
            key_id = row.key_id if self.by_key else ""
            date = row.date if self.by_day else ""
            at = (key_id, date, row.model, row.api)
            had = self._rows.get(at)
            self._rows[at] = (
                replace(row, key_id=key_id, date=date) if had is None else had.plus(row)
            )

    @property
    def rows(self) -> list[UsageDay]:
        return list(self._rows.values())
