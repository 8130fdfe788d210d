"""The self-service bounds without sockets: ``grants.exceeded`` agrees with the allowlist check
the gateway applies to requests (a property over random networks), and records stored before
ceilings existed (no ``ceiling``, no ``revokedBy``) are bounded by their own values and count
their revocation as the admin's, on the real in-memory store."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth import grants
from gateway.auth.lifecycle import KeyLifecycle
from gateway.auth.service import KeyService
from gateway.clock import FakeClock
from gateway.config.load import parse_text
from gateway.errors import Forbidden
from gateway.netaddr import in_networks
from gateway.records import IPNetwork, KeyRecord, Rights
from gateway.store.memory import MemoryStore

CONFIG = "upstreams: {u: {url: 'http://127.0.0.1:1'}}\nmodels: {m: {upstreams: [u]}}\n"


def v4(draw_bits: int, prefix: int) -> IPNetwork:
    return ipaddress.ip_network(f"{ipaddress.IPv4Address(draw_bits)}/{prefix}", strict=False)


networks = st.builds(v4, st.integers(0, 2**32 - 1), st.integers(8, 32)) | st.builds(
    lambda bits, prefix: ipaddress.ip_network(
        f"::ffff:{ipaddress.IPv4Address(bits)}/{96 + prefix}", strict=False
    ),
    st.integers(0, 2**32 - 1),
    st.integers(8, 32),
)


@given(st.lists(networks, min_size=1, max_size=3), st.lists(networks, min_size=1, max_size=3))
def test_an_allowlist_is_granted_iff_each_entry_lies_in_one_of_the_callers(
    asked: list[IPNetwork], bound: list[IPNetwork]
) -> None:
    """The oracle is the request-time check itself (``in_networks``): a range lies in a network
    when both its ends do."""

    def inside(network: IPNetwork, of: IPNetwork) -> bool:
        ends = (network.network_address, network.broadcast_address)
        return all(in_networks(address, [of]) for address in ends)

    granted = "ipWhitelist" not in grants.exceeded(
        Rights(ip_whitelist=tuple(asked)), Rights(ip_whitelist=tuple(bound))
    )
    assert granted == all(any(inside(n, b) for b in bound) for n in asked)


@pytest.mark.parametrize(
    ("asked", "bound", "over"),
    [
        (Rights(), Rights(), []),
        (Rights(permissions=frozenset({"chat", "vision"})), Rights(), ["permissions"]),
        (Rights(models=None), Rights(models=frozenset({"m"})), ["models"]),
        (Rights(models=frozenset({"m"})), Rights(models=None), []),
        (
            Rights(ip_whitelist=()),
            Rights(ip_whitelist=(ipaddress.ip_network("10.0.0.0/8"),)),
            ["ipWhitelist"],
        ),
        (Rights(rpm_limit=None, daily_limit=5), Rights(rpm_limit=1, daily_limit=5), ["rpmLimit"]),
        (Rights(monthly_limit=2), Rights(monthly_limit=1), ["monthlyLimit"]),
        (Rights(expires_at=None), Rights(expires_at=10.0), ["expiresAt"]),
        (Rights(expires_at=11.0, max_concurrency=9), Rights(expires_at=10.0), ["expiresAt"]),
    ],
)
def test_exceeded_names_each_field(asked: Rights, bound: Rights, over: list[str]) -> None:
    assert grants.exceeded(asked, bound) == over


def older_record(**fields: Any) -> KeyRecord:
    """A record as stored before ceilings: its JSON without ``ceiling`` and ``revokedBy``."""
    stored = KeyRecord(id="k0000001", owner="o", key_hash="a" * 64, **fields).to_store()
    del stored["ceiling"], stored["revokedBy"]
    return KeyRecord.from_store(stored)


async def lifecycle_with(record: KeyRecord) -> KeyLifecycle:
    clock = FakeClock()
    store = MemoryStore(clock)
    assert await store.insert_key(record, None)
    return KeyLifecycle(KeyService(store, parse_text(CONFIG, "t.yaml", env={}), clock))


async def test_an_older_record_is_bounded_by_its_own_values() -> None:
    old = older_record(rpm_limit=10)
    assert old.ceiling is None and old.effective_ceiling() == old.rights()
    lifecycle = await lifecycle_with(old)
    caller = KeyRecord(id="k0000002", owner="o", key_hash="b" * 64)  # no limits
    with pytest.raises(Forbidden) as info:
        await lifecycle.update("o", old.id, {"rpmLimit": 11}, caller)
    assert info.value.param == "rpmLimit"
    lowered = await lifecycle.update("o", old.id, {"rpmLimit": 5}, caller)
    assert lowered.rpm_limit == 5 and lowered.ceiling == Rights(rpm_limit=10)  # kept from now on
    assert (await lifecycle.update("o", old.id, {"rpmLimit": 10}, caller)).rpm_limit == 10


async def test_an_older_revocation_counts_as_the_admins() -> None:
    old = older_record(revoked=True, revoked_at=1.0, revoked_reason="old")
    assert old.revoked_by is None
    lifecycle = await lifecycle_with(old)
    caller = KeyRecord(id="k0000002", owner="o", key_hash="b" * 64)
    with pytest.raises(Forbidden):
        await lifecycle.reactivate("o", old.id, caller)
    again = await lifecycle.revoke("o", old.id, "mine now", caller)
    assert again.revoked_reason == "old"  # the owner's revoke does not make it the owner's
    assert (await lifecycle.reactivate("o", old.id)).status(0.0) == "ACTIVE"  # the admin can
