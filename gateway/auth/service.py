"""Who is calling: the key service finds the caller's key record (from a local cache kept fresh
by the store's broadcast, else the store) and refuses what the admission order refuses, in that
order (docs/api.md).

Failed guesses are limited per client IP, exactly across processes: each failure is counted in
the store (``auth_failure``), the count decides the answer (past ``auth.max_failures_per_minute``
it is a 429, whichever process counted before), and a process that has seen the count reach the
limit refuses that IP locally, before any lookup, until the window ends.

The limit protects the keys that can be guessed: keys declared in the config, keys imported by
hash (of unknown strength), anything not in the issued form. An issued key with a good checksum
is never refused for its address's failures, nor are its failures counted there: its 142-bit
secret cannot be guessed online, and a made-up one costs one store read (and no write), so a
client behind a shared NAT cannot lock its neighbours' issued keys out. Junk that is refused
without a lookup (no key, two keys, a malformed key or a bad checksum) is not counted either: it
cannot match any key.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable, Mapping

from gateway.auth import keys
from gateway.bounded import remember
from gateway.clock import Clock
from gateway.config.schema import Config
from gateway.errors import Forbidden, StoreUnavailable, TooManyRequests, Unauthorized
from gateway.limits import money
from gateway.limits.windows import retry_seconds
from gateway.netaddr import IPAddress, guesser, in_networks
from gateway.records import KeyRecord
from gateway.store.base import Store, StoreError

log = logging.getLogger("gateway.auth")

POSITIVE_TTL = 60.0  # the broadcast is what keeps the cache fresh; this bounds a missed one
NEGATIVE_TTL = 5.0
CACHE_MAX = 50_000  # records a process keeps (~1.5 KB each: ~75 MB at the bound)
DIGESTS_MAX = 10_000  # hashes of presented keys kept (~0.4 KB each: ~4 MB at the bound)

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
            tpm_limit=k.tpm_limit,
            daily_budget=money.micros(k.daily_budget_usd),
            monthly_budget=money.micros(k.monthly_budget_usd),
            static=True,
        )
        for k in config.keys.static
    }


class KeyService:
    def __init__(self, store: Store, config: Config, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.configure(config)
        self._cache: dict[str, tuple[KeyRecord, float]] = {}  # found keys, until the expiry
        # Hashes not found, apart: a flood of made-up keys cannot evict the found ones.
        self._negative: dict[str, float] = {}
        self._blocked: dict[str, float] = {}
        # The SHA-256 of each presented key that matched a key record (its characters checked):
        # hashing and checking cost ~8.5k instructions a request, a look-up ~0.2k. Only a key
        # that was found goes in (no guess can fill it), bounded; the hash of a key never
        # changes, so nothing in it goes stale (the record it finds is checked every time). It
        # holds those keys as they were sent, in this process's memory only: never logged,
        # never stored.
        self._digests: dict[str, str] = {}
        self.on_failure: Callable[[str], None] = lambda reason: None
        self.on_store_error: Callable[[str], None] = lambda op: None

    def configure(self, config: Config) -> None:
        self.config = config
        self.static = static_records(config)
        self._issued_head = config.keys.prefix + "_"

    async def start(self) -> None:
        await self.store.subscribe(self.invalidate)

    def invalidate(self, message: str) -> None:
        """A broadcast: ``*`` (drop everything) or a key hash whose record changed."""
        if message == "*":
            self._cache.clear()
            self._negative.clear()
        else:
            self._cache.pop(message, None)
            self._negative.pop(message, None)  # a key imported (or created) by this hash

    # -- the request path -------------------------------------------------------------------
    async def authenticate(
        self, headers: Mapping[str, str], all_values: Callable[[str], list[str]], client: str
    ) -> KeyRecord:
        client = guesser(client)  # an IPv6 /64 is one client: it holds every address in it
        try:
            key = keys.presented(all_values)
            key_hash = known_hash = self._digests.get(key)
            if key_hash is None:  # (``keys.credential``, then its hash)
                keys.check_form(key)
                key_hash = keys.sha256_hex(key)
        except keys.CredentialError as exc:
            self._unless_blocked(client)
            raise self._unusable(exc) from None
        record = self._known(key_hash)
        if record is not None:
            if client in self._blocked and (record.static or not key.startswith(self._issued_head)):
                self._unless_blocked(client)  # a right guess of a guessable key is a guess too
            if known_hash is None:
                remember(self._digests, key, key_hash, DIGESTS_MAX)
            return self._alive(record)
        issued = keys.parse_issued(key, self.config.keys.prefix)
        if issued is None or not issued.valid:
            self._unless_blocked(client)
            if issued is not None:  # a bad checksum: no lookup, it cannot match any key
                self.on_failure("unknown")
                raise Unauthorized(INVALID)
        record = await self._fetch(key_hash, issued.key_id if issued is not None else None)
        if record is None:
            if issued is None:
                await self._failed(client)
            else:
                self.on_failure("unknown")
            raise Unauthorized(INVALID)
        if known_hash is None:
            remember(self._digests, key, key_hash, DIGESTS_MAX)
        return self._alive(record)

    def _unusable(self, exc: keys.CredentialError) -> Unauthorized:
        if exc.missing:
            self.on_failure("missing")
            return Unauthorized(
                "No API key was sent. Send it as 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>'."
            )
        self.on_failure("malformed")
        if exc.kind == "conflict":
            return Unauthorized(exc.why[0].upper() + exc.why[1:] + ".")
        return Unauthorized(
            f"Invalid API key: {exc.why}. Send it as 'Authorization: Bearer <key>' or "
            "'X-API-Key: <key>'."
        )

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

    def _known(self, key_hash: str) -> KeyRecord | None:
        """The record without the store: declared in the config, or found within the TTL."""
        static = self.static.get(key_hash)
        if static is not None:
            return static
        cached = self._cache.get(key_hash)
        if cached is not None and cached[1] > self.clock.monotonic():
            return cached[0]
        return None

    async def _fetch(self, key_hash: str, key_id: str | None) -> KeyRecord | None:
        """The record from the store (``key_id``: the id an issued key names, which must match),
        remembered either way."""
        now = self.clock.monotonic()
        if self._negative.get(key_hash, 0.0) > now:
            return None
        try:
            record = await self.store.get_key_by_hash(key_hash)
        except StoreError:
            self.on_store_error("key_lookup")
            stale = self._cache.get(key_hash)
            if stale is not None and self.config.store.on_error == "open":
                return stale[0]
            raise StoreUnavailable("The key store is unavailable; try again shortly.") from None
        if record is not None and key_id is not None and record.id != key_id:
            record = None
        if record is None:
            remember(self._negative, key_hash, now + NEGATIVE_TTL, CACHE_MAX)
        else:
            remember(self._cache, key_hash, (record, now + POSITIVE_TTL), CACHE_MAX)
        return record

    async def _failed(self, client: str) -> None:
        """Count a failed guess of ``client``; 429 when it is past the limit. The count is the
        store's, shared by every process: at most ``max_failures_per_minute`` failures are
        answered 401 per window, whichever processes answer them."""
        self.on_failure("unknown")
        limit = self.config.auth.max_failures_per_minute
        try:
            count, reset = await self.store.auth_failure(client)
        except StoreError:
            self.on_store_error("auth_failure")
            return
        if count >= limit:  # this one was the last allowed: the next is refused before lookup
            remember(self._blocked, client, self.clock.monotonic() + reset, CACHE_MAX)
        if count > limit:
            raise self._too_many(reset)

    def _unless_blocked(self, client: str) -> None:
        until = self._blocked.get(client)
        if until is None:
            return
        left = until - self.clock.monotonic()
        if left > 0:
            raise self._too_many(left)
        del self._blocked[client]

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

    @classmethod
    def check_permissions(cls, record: KeyRecord, needed: Iterable[str]) -> None:
        """``check_permission`` for each (a request's media: ``inputs.media_needed``)."""
        for permission in needed:
            cls.check_permission(record, permission)

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
