"""The key format: issued keys carry their id and a checksum; credentials come from exactly one
of two headers."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth import keys


def headers_of(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], object]:
    def all_values(name: str) -> list[str]:
        return [v for k, v in pairs if k.lower() == name.lower()]

    return dict(pairs), all_values


def cred(*pairs: tuple[str, str]) -> str:
    plain, all_values = headers_of(list(pairs))
    return keys.credential(plain, all_values)  # type: ignore[arg-type]


def test_issued_key_round_trip() -> None:
    key = keys.issue("sk_gw", "k3f9a2c1", os.urandom)
    assert key.startswith("sk_gw_k3f9a2c1_")
    assert len(key) == len("sk_gw_k3f9a2c1_") + keys.SECRET_CHARS + keys.CHECK_CHARS
    assert keys.parse_issued(key, "sk_gw") == keys.Issued("k3f9a2c1", True)
    assert keys.display_prefix("sk_gw", "k3f9a2c1") == "sk_gw_k3f9a2c1_…"


def test_secrets_differ_and_carry_enough_randomness() -> None:
    issued = {keys.issue("sk_gw", "k0000000", os.urandom) for _ in range(200)}
    assert len(issued) == 200
    # 18 random bytes = 144 bits ≥ 128; the alphabet is base62.
    assert 62**keys.SECRET_CHARS >= 2**142


@given(st.integers(min_value=0, max_value=28), st.sampled_from("0123456789abcdefXYZ"))
def test_any_single_change_breaks_the_checksum(position: int, char: str) -> None:
    key = keys.issue("sk_gw", "k1234567", lambda n: bytes(range(n)))
    tail_start = len("sk_gw_k1234567_")
    i = tail_start + position
    if key[i] == char:
        return
    broken = key[:i] + char + key[i + 1 :]
    assert keys.parse_issued(broken, "sk_gw") == keys.Issued("k1234567", False)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("wayscloud_llm_abc12_xyz", None),  # another system's key: looked up by hash
        ("sk_gw_", keys.Issued("", False)),
        ("sk_gw_notanid_" + "a" * 30, keys.Issued("", False)),
        ("sk_gw_k1234567_short", keys.Issued("k1234567", False)),
    ],
)
def test_parse_other_forms(key: str, expected: keys.Issued | None) -> None:
    assert keys.parse_issued(key, "sk_gw") == expected


def test_hash_is_sha256_hex() -> None:
    assert keys.sha256_hex("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


BAD = [
    ("empty bearer", [("Authorization", "Bearer ")], "missing"),
    ("nothing", [], "missing"),
    ("empty x-api-key", [("X-API-Key", "")], "missing"),
    ("empty lines", [("Authorization", " "), ("X-API-Key", "")], "missing"),
    ("no scheme", [("Authorization", "sk_gw_k1234567_abc")], "malformed"),
    ("basic scheme", [("Authorization", "Basic dXNlcjpwYXNz")], "malformed"),
    ("whitespace inside", [("Authorization", "Bearer sk gw")], "malformed"),
    ("unicode", [("Authorization", "Bearer sk_gw_ключ")], "malformed"),
    ("10 KB", [("X-API-Key", "a" * 10_240)], "malformed"),
    (
        "two authorization",
        [("Authorization", "Bearer a1"), ("Authorization", "Bearer a2")],
        "conflict",
    ),
    ("two x-api-key", [("X-API-Key", "a1"), ("X-API-Key", "a2")], "conflict"),
    ("both differ", [("Authorization", "Bearer a1"), ("X-API-Key", "a2")], "conflict"),
    (
        "bearer and basic",
        [("Authorization", "Bearer a1"), ("Authorization", "Basic a1")],
        "conflict",
    ),
    (
        "a third differs",
        [("X-API-Key", "a1"), ("X-API-Key", "a1"), ("X-API-Key", "a2")],
        "conflict",
    ),
]


@pytest.mark.parametrize(("pairs", "kind"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_credentials(pairs: list[tuple[str, str]], kind: str) -> None:
    with pytest.raises(keys.CredentialError) as info:
        cred(*pairs)
    assert (info.value.kind, info.value.missing) == (kind, kind == "missing")
    for _, value in pairs:  # what to send instead, never what was sent
        assert len(value) < 3 or value.split()[-1] not in info.value.why


@pytest.mark.parametrize(
    "pairs",
    [
        [("Authorization", "Bearer sk_gw_x")],
        [("Authorization", "bearer sk_gw_x")],  # schemes are case-insensitive (RFC 9110)
        [("Authorization", "  BEARER   sk_gw_x  ")],
        [("X-API-Key", " sk_gw_x ")],
        [("Authorization", "Bearer sk_gw_x"), ("X-API-Key", "sk_gw_x")],
        [("Authorization", "Bearer sk_gw_x"), ("Authorization", "bearer  sk_gw_x ")],
        [("X-API-Key", "sk_gw_x"), ("X-API-Key", "sk_gw_x"), ("Authorization", "")],
    ],
)
def test_good_credentials(pairs: list[tuple[str, str]]) -> None:
    assert cred(*pairs) == "sk_gw_x"
