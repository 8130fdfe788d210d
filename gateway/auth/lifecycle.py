"""The key lifecycle (SPEC 6): create, list, get, update, delete, regenerate, revoke, reactivate,
and owner plans. Every change is broadcast so each process drops its cached copy at once.

Input is the API's camelCase JSON; every bad field is a 400 naming it. Keys declared in the
config are listed but read-only (409): the config is their source of truth.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.auth import keys
from gateway.auth.ip import parse_allowlist
from gateway.auth.service import KeyService
from gateway.config.schema import PERMISSIONS
from gateway.errors import BadRequest, Conflict, NotFound, StoreUnavailable
from gateway.records import KeyRecord, UsageDay, from_iso
from gateway.store.base import KeyExists, StoreError

T = TypeVar("T")
_LIMITS = {
    "rpmLimit": "rpm_limit",
    "maxConcurrency": "max_concurrency",
    "dailyLimit": "daily_limit",
    "monthlyLimit": "monthly_limit",
}
_EDITABLE = {
    "name",
    "description",
    "permissions",
    "models",
    "ipWhitelist",
    "expiresInDays",
    "expiresAt",
    *_LIMITS,
}
MAX_DAYS = 3650


class KeyLifecycle:
    def __init__(
        self, service: KeyService, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.service = service
        self.store = service.store
        self.random_bytes = random_bytes

    async def _guarded(self, call: Awaitable[T]) -> T:
        """A store call, its failure as the client sees it (and counted)."""
        try:
            return await call
        except StoreError:
            self.service.on_store_error("keys_api")
            raise StoreUnavailable("The key store is unavailable; try again shortly.") from None

    @property
    def now(self) -> float:
        return self.service.clock.time()

    # -- reading ----------------------------------------------------------------------------
    async def usage(self, owner: str, key_ids: list[str], first: int, last: int) -> list[UsageDay]:
        return await self._guarded(self.store.usage(owner, key_ids, first, last))

    async def list(self, owner: str) -> list[KeyRecord]:
        stored = await self._guarded(self.store.list_keys(owner))
        declared = [r for r in self.service.static.values() if r.owner == owner]
        return sorted(stored, key=lambda r: (r.created_at, r.id), reverse=True) + declared

    async def get(self, owner: str | None, key_id: str) -> KeyRecord:
        record = await self._guarded(self.store.get_key(key_id))
        if record is None:
            record = next((r for r in self.service.static.values() if r.id == key_id), None)
        if record is None or (owner is not None and record.owner != owner):
            raise NotFound(f"There is no key '{key_id[:64]}' for this owner.", code="key_not_found")
        return record

    async def _mutable(self, owner: str | None, key_id: str) -> KeyRecord:
        record = await self.get(owner, key_id)
        if record.static:
            raise Conflict(
                f"The key '{key_id}' is declared in the gateway's config; change it there.",
                code="key_is_static",
            )
        return record

    # -- changing ---------------------------------------------------------------------------
    async def create(
        self, owner: str, body: dict[str, Any], admin: bool = False
    ) -> tuple[KeyRecord, str | None]:
        allowed = _EDITABLE | ({"owner", "sha256"} if admin else {"owner"})
        _no_unknown(body, allowed)
        imported = body.get("sha256") if admin else None
        if imported is not None and (
            not isinstance(imported, str)
            or len(imported) != 64
            or any(c not in "0123456789abcdef" for c in imported.lower())
        ):
            raise BadRequest(
                "'sha256' must be the SHA-256 of the key as 64 hex digits.", param="sha256"
            )
        fields = self._fields(body)
        plan = await self._plan(owner)
        for _ in range(5):
            key_id = keys.new_key_id(self.random_bytes)
            if imported:
                full, key_hash, prefix = None, imported.lower(), f"{key_id} (imported)"
            else:
                full = keys.issue(self.service.config.keys.prefix, key_id, self.random_bytes)
                key_hash = keys.sha256_hex(full)
                prefix = keys.display_prefix(self.service.config.keys.prefix, key_id)
            record = KeyRecord(
                id=key_id,
                owner=owner,
                key_hash=key_hash,
                key_prefix=prefix,
                created_at=self.now,
                updated_at=self.now,
                **fields,
            )
            try:
                inserted = await self._guarded(self.store.insert_key(record, plan.max_keys))
            except KeyExists:
                taken = await self._guarded(self.store.get_key_by_hash(key_hash))
                if imported and taken is not None:
                    raise Conflict(
                        "A key with this sha256 exists already.", code="key_exists"
                    ) from None
                continue  # an id collision: draw another id
            if not inserted:
                raise Conflict(
                    f"The owner's plan '{plan.name}' allows {plan.max_keys} key(s), revoked ones "
                    "included; delete one, or move the owner to a bigger plan.",
                    code="plan_key_limit",
                )
            await self._announce(record.key_hash)
            return record, full
        raise Conflict("Could not allocate a key id; try again.", code="key_id_collision")

    async def update(self, owner: str | None, key_id: str, body: dict[str, Any]) -> KeyRecord:
        _no_unknown(body, _EDITABLE)
        record = await self._mutable(owner, key_id)
        updated = record.evolve(updated_at=self.now, **self._fields(body, partial=True))
        await self._guarded(self.store.replace_key(updated))
        await self._announce(record.key_hash)
        return updated

    async def delete(self, owner: str | None, key_id: str) -> None:
        record = await self._mutable(owner, key_id)
        await self._guarded(self.store.delete_key(record))
        await self._announce(record.key_hash)

    async def regenerate(self, owner: str | None, key_id: str) -> tuple[KeyRecord, str]:
        record = await self._mutable(owner, key_id)
        prefix = self.service.config.keys.prefix
        full = keys.issue(prefix, record.id, self.random_bytes)
        updated = record.evolve(
            key_hash=keys.sha256_hex(full),
            updated_at=self.now,
            key_prefix=keys.display_prefix(prefix, record.id),
        )
        await self._guarded(self.store.replace_key(updated, old_hash=record.key_hash))
        await self._announce(record.key_hash)
        return updated, full

    async def revoke(self, owner: str | None, key_id: str, reason: object) -> KeyRecord:
        if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
            raise BadRequest("'reason' must be a string of at most 500 characters.", param="reason")
        record = await self._mutable(owner, key_id)
        updated = record.evolve(
            revoked=True, revoked_at=self.now, revoked_reason=reason, updated_at=self.now
        )
        await self._guarded(self.store.replace_key(updated))
        await self._announce(record.key_hash)
        return updated

    async def reactivate(self, owner: str | None, key_id: str) -> KeyRecord:
        record = await self._mutable(owner, key_id)
        if record.status(self.now) == "EXPIRED":
            raise Conflict(
                "An expired key cannot be reactivated; extend it with PATCH "
                '{"expiresInDays": N} first, or create a new key.',
                code="key_expired",
            )
        updated = record.evolve(
            revoked=False, revoked_at=None, revoked_reason=None, updated_at=self.now
        )
        await self._guarded(self.store.replace_key(updated))
        await self._announce(record.key_hash)
        return updated

    async def set_plan(self, owner: str, plan: object) -> str:
        if not isinstance(plan, str) or plan not in self.service.config.plans:
            raise BadRequest(
                f"'plan' must be one of {', '.join(self.service.config.plans)}.", param="plan"
            )
        await self._guarded(self.store.set_plan(owner, plan))
        await self._announce(f"plan:{owner}")  # every process drops its cached plan
        return plan

    async def _plan(self, owner: str) -> Any:
        config = self.service.config
        name = await self._guarded(self.store.get_plan(owner)) or config.default_plan
        return config.plans.get(name) or config.plans[config.default_plan]

    async def _announce(self, key_hash: str) -> None:
        self.service.invalidate(key_hash)
        try:
            await self.store.publish(key_hash)
        except StoreError:
            pass  # the change is stored; other processes' caches expire within POSITIVE_TTL

    # -- input ------------------------------------------------------------------------------
    def _fields(self, body: dict[str, Any], partial: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not partial or "name" in body:
            out["name"] = _text(body.get("name", ""), "name", 100)
        if not partial or "description" in body:
            out["description"] = _text(body.get("description", ""), "description", 500)
        if not partial or "permissions" in body:
            out["permissions"] = _permissions(body.get("permissions", ["chat"]))
        if not partial or "models" in body:
            out["models"] = self._models(body.get("models"))
        if not partial or "ipWhitelist" in body:
            try:
                out["ip_whitelist"] = parse_allowlist(body.get("ipWhitelist"))
            except ValueError as exc:
                raise BadRequest(str(exc), param="ipWhitelist") from None
        for api, attr in _LIMITS.items():
            if not partial or api in body:
                out[attr] = _limit(body.get(api), api)
        if "expiresInDays" in body or not partial:
            days = _limit(body.get("expiresInDays"), "expiresInDays", MAX_DAYS)
            out["expires_at"] = self.now + days * 86400 if days is not None else None
        if "expiresAt" in body:
            if "expiresInDays" in body:
                raise BadRequest(
                    "Send either 'expiresAt' or 'expiresInDays', not both.", param="expiresAt"
                )
            out["expires_at"] = _timestamp(body["expiresAt"])
        return out

    def _models(self, value: object) -> frozenset[str] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            raise BadRequest(
                "'models' must be null (every model) or a list of model names.", param="models"
            )
        router_names = set(self.service.config.models)
        for model in self.service.config.models.values():
            router_names.update(model.aliases)
        unknown = [m for m in value if m not in router_names]
        if unknown:
            raise BadRequest(
                f"'models' names an unknown model {unknown[0][:64]!r}.", param="models"
            )
        return frozenset(value)


def _no_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(
            f"Unknown field '{unknown[0][:64]}'; allowed: {', '.join(sorted(allowed))}.",
            param=unknown[0][:64],
        )


def _text(value: object, name: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"'{name}' must be a string of at most {limit} characters.", param=name)
    return value


def _permissions(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise BadRequest(
            f"'permissions' must be a non-empty list of {', '.join(sorted(PERMISSIONS))}.",
            param="permissions",
        )
    bad = sorted(set(value) - PERMISSIONS)
    if bad:
        raise BadRequest(
            f"Unknown permission '{bad[0][:32]}'; use {', '.join(sorted(PERMISSIONS))}.",
            param="permissions",
        )
    return frozenset(value)


def _limit(value: object, name: str, maximum: int = 10**12) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise BadRequest(
            f"'{name}' must be null or a whole number from 1 to {maximum}.", param=name
        )
    return value


def _timestamp(value: object) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return from_iso(value)
    except ValueError:
        pass
    raise BadRequest(
        "'expiresAt' must be null or an ISO 8601 time such as 2027-02-20T00:00:00Z.",
        param="expiresAt",
    )
