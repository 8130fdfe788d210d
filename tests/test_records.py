"""Key records as the store holds them: records written by earlier versions (bytes as they sit in
Redis under ``gw:kh:<sha256>``) load with every field, and are written back byte for byte; a
key's rights are one set of fields shared by ``Rights`` and ``KeyRecord``."""

from __future__ import annotations

import dataclasses
import ipaddress

import orjson

from gateway.records import RIGHTS, KeyRecord, Rights

# Written by the gateway before RightFields (commit 0bc1af1), every field set.
FULL = (
    b'{"id":"k0000001","owner":"acme","keyHash":"' + b"ab" * 32 + b'","keyPrefix":"sk_gw_k0000001",'
    b'"name":"ci","description":"d","revoked":true,"permissions":["chat","embeddings"],'
    b'"models":["m1","m2"],"ipWhitelist":["10.0.0.0/8","192.0.2.7/32"],"rpmLimit":60,'
    b'"maxConcurrency":4,"dailyLimit":1000,"monthlyLimit":20000,"expiresAt":1798761600.0,'
    b'"tpmLimit":5000,"dailyBudgetUsd":1.5,"monthlyBudgetUsd":30.0,"createdAt":1765000000.5,'
    b'"updatedAt":1765000100.25,"lastUsedAt":1765000200.0,"revokedAt":1765000300.0,'
    b'"revokedReason":"leaked","revokedBy":"owner","ceiling":{"permissions":["chat","vision"],'
    b'"models":null,"ipWhitelist":[],"rpmLimit":100,"maxConcurrency":null,"dailyLimit":null,'
    b'"monthlyLimit":null,"expiresAt":null,"tpmLimit":null,"dailyBudgetUsd":5.0,'
    b'"monthlyBudgetUsd":null}}'
)
# A record from before token-per-minute limits, budgets, ceilings and revokedBy.
OLD = (
    b'{"id":"k2","owner":"o","keyHash":"' + b"cd" * 32 + b'","keyPrefix":"sk_gw_k2",'
    b'"name":"","description":"","revoked":false,"permissions":["chat"],"models":null,'
    b'"ipWhitelist":[],"rpmLimit":10,"maxConcurrency":null,"dailyLimit":null,'
    b'"monthlyLimit":null,"expiresAt":null,"createdAt":1.0,"updatedAt":2.0,'
    b'"lastUsedAt":null,"revokedAt":null,"revokedReason":null}'
)


def test_a_stored_record_loads_every_field_and_is_written_back_the_same() -> None:
    record = KeyRecord.from_store(orjson.loads(FULL))
    assert (record.id, record.owner, record.key_hash) == ("k0000001", "acme", "ab" * 32)
    assert record.permissions == frozenset({"chat", "embeddings"})
    assert record.models == frozenset({"m1", "m2"})
    assert record.ip_whitelist == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    limits = (record.rpm_limit, record.max_concurrency, record.daily_limit, record.monthly_limit)
    assert limits == (60, 4, 1000, 20000)
    assert (record.tpm_limit, record.daily_budget, record.monthly_budget) == (
        5000,
        1_500_000,
        30_000_000,
    )
    assert (record.expires_at, record.revoked, record.revoked_by) == (1798761600.0, True, "owner")
    assert record.ceiling == Rights(
        permissions=frozenset({"chat", "vision"}), rpm_limit=100, daily_budget=5_000_000
    )
    assert orjson.dumps(record.to_store()) == FULL


def test_an_older_record_loads_with_the_defaults_of_what_it_lacks() -> None:
    record = KeyRecord.from_store(orjson.loads(OLD))
    assert record.rpm_limit == 10
    assert (record.tpm_limit, record.daily_budget, record.ceiling, record.revoked_by) == (
        None,
        None,
        None,
        None,
    )
    assert record.effective_ceiling() == Rights(rpm_limit=10)


def test_a_records_rights_are_its_right_fields() -> None:
    record = KeyRecord.from_store(orjson.loads(FULL))
    rights = record.rights()
    assert type(rights) is Rights
    assert {name: getattr(rights, name) for name in RIGHTS} == {
        name: getattr(record, name) for name in RIGHTS
    }
    assert set(RIGHTS) == {f.name for f in dataclasses.fields(Rights)}
    assert set(RIGHTS) < {f.name for f in dataclasses.fields(KeyRecord)}


def test_a_key_record_is_still_built_by_its_own_fields_first() -> None:
    record = KeyRecord("k3", "o", "ef" * 32, "prefix", rpm_limit=5)
    assert (record.id, record.key_prefix, record.rpm_limit) == ("k3", "prefix", 5)
