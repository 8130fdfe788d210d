"""What self-service may give: through ``/api/keys`` with a key, a key created or
changed gets at most the calling key's rights, and never more than its own ceiling (what the
admin set on it; for a key made through ``/api/keys``, the creating key's rights then). A
request that asks for more is refused, naming each field: a refusal says what was wrong, a
silent clamp would leave a key other than the one asked for.

Comparisons, field by field (API names, in the record's order):
- ``permissions``: a subset;
- ``models``: a subset of a list; anything (null too) under null, which is every model;
- ``ipWhitelist``: every entry a subnet of one of the bound's entries (an IPv4 network and its
  IPv4-mapped IPv6 form are the same); anything under an empty list, which is any address;
- limits and ``expiresAt``: at most the bound's number or time; anything under null (none),
  and null (none) only under null.
"""

from __future__ import annotations

import ipaddress

from gateway.errors import Forbidden
from gateway.records import IPNetwork, KeyRecord, Rights

LIMITS = {
    "rpmLimit": "rpm_limit",
    "maxConcurrency": "max_concurrency",
    "dailyLimit": "daily_limit",
    "monthlyLimit": "monthly_limit",
    "tpmLimit": "tpm_limit",
    "dailyBudgetUsd": "daily_budget",
    "monthlyBudgetUsd": "monthly_budget",
}
FIELDS = ("permissions", "models", "ipWhitelist", *LIMITS, "expiresAt")
ATTRS = {"ipWhitelist": "ip_whitelist", "expiresAt": "expires_at", **LIMITS}


def exceeded(rights: Rights, bound: Rights) -> list[str]:
    """The API names of the fields of ``rights`` beyond ``bound``, in the record's order."""
    out = []
    if not rights.permissions <= bound.permissions:
        out.append("permissions")
    if bound.models is not None and (rights.models is None or not rights.models <= bound.models):
        out.append("models")
    if bound.ip_whitelist and not _networks_within(rights.ip_whitelist, bound.ip_whitelist):
        out.append("ipWhitelist")
    for api, attr in LIMITS.items():
        if _over(getattr(rights, attr), getattr(bound, attr)):
            out.append(api)
    if _over(rights.expires_at, bound.expires_at):
        out.append("expiresAt")
    return out


def _over(value: float | None, bound: float | None) -> bool:
    return bound is not None and (value is None or value > bound)


def _networks_within(networks: tuple[IPNetwork, ...], bounds: tuple[IPNetwork, ...]) -> bool:
    if not networks:
        return False  # any address, under a bound that names some
    wide = [_as_v6(b) for b in bounds]
    return all(any(_as_v6(n).subnet_of(b) for b in wide) for n in networks)


def _as_v6(network: IPNetwork) -> ipaddress.IPv6Network:
    """IPv4 networks as their IPv4-mapped IPv6 form, the way the allowlist check matches."""
    if isinstance(network, ipaddress.IPv6Network):
        return network
    return ipaddress.IPv6Network(f"::ffff:{network.network_address}/{96 + network.prefixlen}")


def check_grant(caller: KeyRecord, rights: Rights, ceiling: Rights, sent: set[str]) -> None:
    """403 unless every field of ``rights`` the request set (``sent``: the body's names) is
    within both the calling key's rights and the changed key's ``ceiling``."""
    over = _named(exceeded(rights, caller.rights()), sent)
    if over:
        raise Forbidden(
            f"This key may not give more than it has itself: {over[1]} would exceed the calling "
            f"key's. Ask for at most its values (GET /api/keys/{caller.id}), or have the admin "
            "set them through /admin/keys.",
            param=over[0],
        )
    over = _named(exceeded(rights, ceiling), sent)
    if over:
        raise Forbidden(
            f"{over[1]} would exceed what the admin set on this key (its 'ceiling'): through "
            "/api/keys it can be lowered, and raised or removed only by the admin.",
            param=over[0],
        )


def check_regenerate(caller: KeyRecord, target: KeyRecord) -> None:
    """403 when ``target`` has rights ``caller`` lacks: regenerating answers the new secret,
    which would hand the caller those rights."""
    over = _named(exceeded(target.rights(), caller.rights()), set(FIELDS))
    if over:
        raise Forbidden(
            f"This key may not regenerate the key '{target.id}': its {over[1]} go beyond the "
            "calling key's, and the new secret would hand the caller those rights. Regenerate it "
            "with a key that has at least its rights, or through the admin.",
            param=over[0],
        )


def _named(fields: list[str], sent: set[str]) -> tuple[str, str] | None:
    """The first of ``fields`` the request sent and all of them listed, as the request named
    them (the expiry as ``expiresInDays`` or ``expiresAt``); None when it sent none."""
    names = []
    for field in fields:
        if field in sent:
            names.append(field)
        elif field == "expiresAt" and "expiresInDays" in sent:
            names.append("expiresInDays")
    if not names:
        return None
    return names[0], " and ".join(", ".join(f"'{n}'" for n in names).rsplit(", ", 1))
