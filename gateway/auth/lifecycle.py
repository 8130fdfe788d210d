"""The key lifecycle: create, list, get, update, delete, regenerate, revoke, reactivate,
and owner plans. Every change is broadcast so each process drops its cached copy at once.

Each change is made by the admin (``caller`` None: ``/admin/keys``, the CLI, the demo key) or by
a key through ``/api/keys`` (``caller``), which can never give more than the admin gave
(``grants``): what it creates or sets is within its own rights and the changed key's ceiling,
it changes, deletes, regenerates, revokes and reactivates only keys within its rights (the rule
creation uses: a key with a permission, model, address, limit or expiry the caller lacks is out
of its reach, 403), and it reactivates only keys its owner revoked.
The admin's creates and changes set the ceiling; a key created through ``/api/keys`` gets its
creator's rights as ceiling, and takes them for every bounded field the request leaves out.

Input is the API's camelCase JSON; every bad field is a 400 naming it. Keys declared in the
config are listed but read-only (409): the config is their source of truth.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.auth import grants, keys
from gateway.auth.ip import parse_allowlist
from gateway.auth.service import KeyService
from gateway.config.schema import PERMISSIONS
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound, StoreUnavailable
from gateway.limits import money
from gateway.records import RIGHTS, KeyRecord, Rights, RowSink, UsageDay, from_iso
from gateway.store.base import KeyExists, StoreError

T = TypeVar("T")
_LIMITS = {
    "rpmLimit": "rpm_limit",
    "maxConcurrency": "max_concurrency",
    "dailyLimit": "daily_limit",
    "monthlyLimit": "monthly_limit",
    "tpmLimit": "tpm_limit",
}
_BUDGETS = {"dailyBudgetUsd": "daily_budget", "monthlyBudgetUsd": "monthly_budget"}
_EDITABLE = {
    "name",
    "description",
    "permissions",
    "models",
    "ipWhitelist",
    "expiresInDays",
    "expiresAt",
    *_LIMITS,
    *_BUDGETS,
}
MAX_DAYS = 3650
_RIGHTS = RIGHTS


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
    async def usage(
        self, owner: str, key_ids: list[str], first: int, last: int, sink: RowSink | None = None
    ) -> list[UsageDay]:
        return await self._guarded(self.store.usage(owner, key_ids, first, last, sink))

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
        self,
        owner: str,
        body: dict[str, Any],
        admin: bool = False,
        caller: KeyRecord | None = None,
    ) -> tuple[KeyRecord, str | None]:
        """A new key (``admin``: an import by ``sha256`` is allowed)."""
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
        if caller is not None:
            fields.update(_inherited(caller, body))
            grants.check_grant(caller, _rights(fields), caller.rights(), set(body))
        ceiling = caller.rights() if caller is not None else _rights(fields)
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
                ceiling=ceiling,
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

    async def update(
        self,
        owner: str | None,
        key_id: str,
        body: dict[str, Any],
        caller: KeyRecord | None = None,
    ) -> KeyRecord:
        _no_unknown(body, _EDITABLE)
        record = await self._mutable(owner, key_id)
        updated = record.evolve(updated_at=self.now, **self._fields(body, partial=True))
        ceiling = record.effective_ceiling()  # kept in the record from now on (older: none)
        if caller is not None:
            grants.check_grant(caller, updated.rights(), ceiling, set(body))
            _within_reach(caller, record, "change")  # lowering a stronger key is no less
        else:  # the admin's word on what it set is the new ceiling of those fields
            rights = updated.rights()
            ceiling = dataclasses.replace(
                ceiling,
                **{attr: getattr(rights, attr) for attr in _bounded_attrs(body)},
            )
        updated = updated.evolve(ceiling=ceiling)
        await self._guarded(self.store.replace_key(updated))
        await self._announce(record.key_hash)
        return updated

    async def delete(self, owner: str | None, key_id: str, caller: KeyRecord | None = None) -> None:
        record = await self._mutable(owner, key_id)
        _within_reach(caller, record, "delete")
        await self._guarded(self.store.delete_key(record))
        await self._announce(record.key_hash)

    async def regenerate(
        self, owner: str | None, key_id: str, caller: KeyRecord | None = None
    ) -> tuple[KeyRecord, str]:
        record = await self._mutable(owner, key_id)
        if caller is not None:
            grants.check_regenerate(caller, record)
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

    async def revoke(
        self, owner: str | None, key_id: str, reason: object, caller: KeyRecord | None = None
    ) -> KeyRecord:
        if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
            raise BadRequest("'reason' must be a string of at most 500 characters.", param="reason")
        record = await self._mutable(owner, key_id)
        _within_reach(caller, record, "revoke")
        if caller is not None and _revoked_by_admin(record):
            return record  # the owner's revoke must not turn the admin's into its own
        updated = record.evolve(
            revoked=True,
            revoked_at=self.now,
            revoked_reason=reason,
            revoked_by="admin" if caller is None else "owner",
            updated_at=self.now,
        )
        await self._guarded(self.store.replace_key(updated))
        await self._announce(record.key_hash)
        return updated

    async def reactivate(
        self, owner: str | None, key_id: str, caller: KeyRecord | None = None
    ) -> KeyRecord:
        record = await self._mutable(owner, key_id)
        _within_reach(caller, record, "reactivate")
        if caller is not None and _revoked_by_admin(record):
            raise Forbidden(
                f"The key '{record.id}' was revoked by the admin; only the admin can reactivate "
                f"it (POST /admin/keys/{record.id}/reactivate)."
            )
        if record.status(self.now) == "EXPIRED":
            raise Conflict(
                "An expired key cannot be reactivated; extend it with PATCH "
                '{"expiresInDays": N} first, or create a new key.',
                code="key_expired",
            )
        updated = record.evolve(
            revoked=False,
            revoked_at=None,
            revoked_reason=None,
            revoked_by=None,
            updated_at=self.now,
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

    async def set_owner_budget(self, owner: str, usd: object) -> int | None:
        """The owner's own monthly budget (dollars; null clears it: the plan's applies), over
        every key of the owner like the plan's ``monthly_budget_usd``."""
        micros = _budget(usd, "monthlyBudgetUsd")
        await self._guarded(self.store.set_owner_budget(owner, micros))
        await self._announce(f"plan:{owner}")  # the limiters read it with the plan
        return micros

    async def owner_budget(self, owner: str) -> int | None:
        return await self._guarded(self.store.get_owner_budget(owner))

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
        for api, attr in _BUDGETS.items():
            if not partial or api in body:
                out[attr] = _budget(body.get(api), api)
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


def _rights(parsed: dict[str, Any]) -> Rights:
    """The bounded part of a new key's parsed fields."""
    return Rights(**{attr: parsed[attr] for attr in _RIGHTS})


def _bounded_attrs(body: dict[str, Any]) -> list[str]:
    """The ``Rights`` attributes a request body sets."""
    attrs = [grants.ATTRS.get(api, api) for api in grants.FIELDS if api in body]
    if "expiresInDays" in body and "expires_at" not in attrs:
        attrs.append("expires_at")
    return attrs


def _inherited(caller: KeyRecord, body: dict[str, Any]) -> dict[str, Any]:
    """A key created through /api/keys takes the calling key's value of every bounded field the
    body leaves out (the most it may give), but the usual ``["chat"]`` for ``permissions`` when
    the caller has chat (least privilege, as for the admin)."""
    taken = set(_bounded_attrs(body))
    out = {attr: getattr(caller, attr) for attr in _RIGHTS if attr not in taken}
    if "permissions" in out and "chat" in caller.permissions:
        out["permissions"] = frozenset({"chat"})
    return out


def _within_reach(caller: KeyRecord | None, target: KeyRecord, action: str) -> None:
    """403 when a key (not the admin) would act on a key with rights it lacks itself: a key
    with fewer permissions or lower limits must not delete, revoke, change or reactivate its
    owner's stronger keys (regenerating is ``grants.check_regenerate``, the same rule)."""
    if caller is None:
        return
    over = grants.exceeded(target.rights(), caller.rights())
    if over:
        names = " and ".join(", ".join(f"'{n}'" for n in over).rsplit(", ", 1))
        raise Forbidden(
            f"This key may not {action} the key '{target.id}': its {names} go beyond the "
            "calling key's (a key manages only keys with at most its own rights). Use a key "
            "that has at least its rights, or the admin (/admin/keys).",
            param=over[0],
        )


def _revoked_by_admin(record: KeyRecord) -> bool:
    """Revoked, and not by its owner (a revocation older than ``revokedBy`` counts as the
    admin's: only the admin may be sure to undo it)."""
    return record.revoked and record.revoked_by != "owner"


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


def _budget(value: object, name: str) -> int | None:
    """A budget in dollars (null: none), as whole micro-dollars."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1e9:
        raise BadRequest(
            f"'{name}' must be null or an amount of dollars above 0, at most 1e9.", param=name
        )
    return money.micros(float(value))


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
