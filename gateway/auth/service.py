"""Who is calling: the key service finds the caller's key record (from a local cache kept fresh
by the store's broadcast, else the store) and refuses what SPEC 4 refuses, in its order.

Failed authentications are counted per client IP in the store (exact across processes); once an
IP passes ``auth.max_failures_per_minute`` this process refuses it locally, before any lookup,
until the window ends.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping

from gateway.auth import keys
from gateway.clock import Clock
from gateway.config.schema import Config
from gateway.errors import Forbidden, StoreUnavailable, TooManyRequests, Unauthorized
from gateway.limits.windows import retry_seconds
from gateway.netaddr import IPAddress, in_networks
from gateway.records import KeyRecord
from gateway.store.base import Store, StoreError

log = logging.getLogger("gateway.auth")

POSITIVE_TTL = 60.0  # the broadcast is what keeps the cache fresh; this bounds a missed one
NEGATIVE_TTL = 5.0
CACHE_MAX = 100_000

INVALID = "Invalid API key. Check the key you sent, or create a new one under /api/keys."


def static_records(config: Config) -> dict[str, KeyRecord]:
    return {
        k.sha256: KeyRecord(
            id=k.id,
            owner=k.owner,
            key_hash=k.sha256,
            key_prefix=f"{k.id} (static)",
            name=k.name,
            permissions=k.permissions,
            models=k.models,
            ip_whitelist=k.ip_whitelist,
            rpm_limit=k.rpm_limit,
            max_concurrency=k.max_concurrency,
            daily_limit=k.daily_limit,
            monthly_limit=k.monthly_limit,
            expires_at=k.expires_at,
            static=True,
        )
        for k in config.keys.static
    }


class KeyService:
    def __init__(self, store: Store, config: Config, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.configure(config)
        self._cache: dict[str, tuple[KeyRecord | None, float]] = {}
        self._blocked: dict[str, float] = {}
        self.on_failure: Callable[[str], None] = lambda reason: None
        self.on_store_error: Callable[[str], None] = lambda op: None

    def configure(self, config: Config) -> None:
        self.config = config
        self.static = static_records(config)

    async def start(self) -> None:
        await self.store.subscribe(self.invalidate)

    def invalidate(self, message: str) -> None:
        """A broadcast: ``*`` (drop everything) or a key hash whose record changed."""
        if message == "*":
            self._cache.clear()
        else:
            self._cache.pop(message, None)

    # -- the request path -------------------------------------------------------------------
    async def authenticate(
        self, headers: Mapping[str, str], all_values: Callable[[str], list[str]], client: str
    ) -> KeyRecord:
        blocked_until = self._blocked.get(client)
        if blocked_until is not None:
            if blocked_until > self.clock.monotonic():
                raise self._too_many(blocked_until - self.clock.monotonic())
            del self._blocked[client]
        try:
            key = keys.credential(headers, all_values)
        except keys.CredentialError as exc:
            if exc.missing:
                self.on_failure("missing")
                raise Unauthorized(
                    "No API key was sent. Send it as 'Authorization: Bearer <key>' or "
                    "'X-API-Key: <key>'."
                ) from None
            await self._failed(client, "malformed")
            raise Unauthorized(INVALID) from None
        record = await self._lookup(key)
        if record is None:
            await self._failed(client, "unknown")
            raise Unauthorized(INVALID)
        return self._alive(record)

    def _alive(self, record: KeyRecord) -> KeyRecord:
        status = record.status(self.clock.time())
        if status == "REVOKED":
            self.on_failure("revoked")
            raise Unauthorized(
                "This API key has been revoked. Use another key or reactivate this one.",
                code="key_revoked",
            )
        if status == "EXPIRED":
            self.on_failure("expired")
            raise Unauthorized(
                "This API key has expired. Create a new key under /api/keys.",
                code="key_expired",
            )
        return record

    async def _lookup(self, key: str) -> KeyRecord | None:
        key_hash = keys.sha256_hex(key)
        static = self.static.get(key_hash)
        if static is not None:
            return static
        cached = self._cache.get(key_hash)
        now = self.clock.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]  # only keys that passed the checks below are ever cached
        issued = keys.parse_issued(key, self.config.keys.prefix)
        if issued is not None and not issued.valid:
            return None  # a bad checksum never costs a store lookup
        try:
            record = await self.store.get_key_by_hash(key_hash)
        except StoreError:
            self.on_store_error("key_lookup")
            if (
                cached is not None
                and cached[0] is not None
                and self.config.store.on_error == "open"
            ):
                return cached[0]
            raise StoreUnavailable("The key store is unavailable; try again shortly.") from None
        if record is not None and issued is not None and record.id != issued.key_id:
            record = None
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key_hash] = (record, now + (POSITIVE_TTL if record else NEGATIVE_TTL))
        return record

    async def _failed(self, client: str, reason: str) -> None:
        self.on_failure(reason)
        limit = self.config.auth.max_failures_per_minute
        try:
            count, reset = await self.store.auth_failure(client)
        except StoreError:
            self.on_store_error("auth_failure")
            return
        if count > limit:
            self._blocked[client] = self.clock.monotonic() + reset
            if len(self._blocked) > CACHE_MAX:
                self._blocked.clear()

    def _too_many(self, seconds: float) -> TooManyRequests:
        return TooManyRequests(
            "Too many failed authentications from your address; wait before trying again.",
            code="too_many_auth_failures",
            retry_after=retry_seconds(seconds),
        )

    # -- access checks (after the body is known) --------------------------------------------
    @staticmethod
    def check_ip(record: KeyRecord, client: IPAddress | None) -> None:
        if record.ip_whitelist and (client is None or not in_networks(client, record.ip_whitelist)):
            raise Forbidden(
                f"This key may not be used from {client}; add the address to the key's "
                "ipWhitelist.",
                code="ip_not_allowed",
            )

    @staticmethod
    def check_permission(record: KeyRecord, permission: str) -> None:
        if permission not in record.permissions:
            raise Forbidden(
                f"This key lacks the '{permission}' permission; add it to the key's permissions."
            )

    @staticmethod
    def check_model(record: KeyRecord, model: str, allowed: bool) -> None:
        """``allowed``: the route's verdict on the key's model allowlist (any name counts)."""
        if record.models is not None and not allowed:
            raise Forbidden(
                f"This key may not use the model '{model}'; allowed: "
                f"{', '.join(sorted(record.models)) or 'none'}."
            )


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison of an admin token."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))
