"""The API key format, hashing and credential extraction. Pure.

An issued key is ``<prefix>_<keyId>_<secret><checksum>``:

- ``keyId``: ``k`` + 7 lowercase hex digits (the record id, shown in lists);
- ``secret``: 24 base62 characters from 18 random bytes (≥ 142 bits);
- ``checksum``: 6 base62 characters of the CRC-32 of everything before it, so a mistyped or
  made-up key with the gateway's prefix is refused without a store lookup.

Only the SHA-256 (hex) of the whole key is stored. Keys of any other form (declared in the
config, or imported by hash from an older system) are looked up by their hash like any other.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SECRET_CHARS = 24
CHECK_CHARS = 6
MAX_KEY_CHARS = 256
_KEY_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
_KEY_ID = re.compile(r"^k[0-9a-f]{7}$")


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECK_CHARS)


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key_id(random_bytes: Callable[[int], bytes]) -> str:
    return "k" + random_bytes(4).hex()[:7]


def issue(prefix: str, key_id: str, random_bytes: Callable[[int], bytes]) -> str:
    """A new full key for ``key_id``."""
    secret = _base62(int.from_bytes(random_bytes(18), "big"), SECRET_CHARS)
    body = f"{prefix}_{key_id}_{secret}"
    return body + checksum(body)


@dataclass(frozen=True, slots=True)
class Issued:
    """What an issued-format key says about itself."""

    key_id: str
    valid: bool  # the checksum holds


def parse_issued(key: str, prefix: str) -> Issued | None:
    """None when ``key`` is not of the issued form of ``prefix`` (look it up by hash)."""
    head = prefix + "_"
    if not key.startswith(head):
        return None
    rest = key[len(head) :]
    key_id, sep, tail = rest.partition("_")
    if not sep or not _KEY_ID.match(key_id):
        return Issued(key_id="", valid=False)
    if len(tail) != SECRET_CHARS + CHECK_CHARS:
        return Issued(key_id=key_id, valid=False)
    body, check = key[:-CHECK_CHARS], key[-CHECK_CHARS:]
    return Issued(key_id=key_id, valid=hmac.compare_digest(checksum(body), check))


def display_prefix(prefix: str, key_id: str) -> str:
    """The part of a key safe to show: ``sk_gw_k3f9a2c1_…``."""
    return f"{prefix}_{key_id}_…"


class CredentialError(Exception):
    """The request's credentials are missing (``missing``) or unusable."""

    def __init__(self, missing: bool, why: str) -> None:
        super().__init__(why)
        self.missing = missing
        self.why = why


def credential(headers: Mapping[str, str], all_values: Callable[[str], list[str]]) -> str:
    """The key a request presents, from ``Authorization: Bearer`` or ``X-API-Key``.

    ``all_values(name)`` gives every value of a header (to refuse duplicates). The scheme is
    case-insensitive (RFC 9110 §11.1); surrounding whitespace is ignored; both headers may be
    sent only with the same key.
    """
    auth = all_values("Authorization")
    api_key = all_values("X-API-Key")
    if len(auth) > 1 or len(api_key) > 1:
        raise CredentialError(False, "send the key once")
    bearer = None
    if auth:
        scheme, _, token = auth[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            raise CredentialError(False, "use Authorization: Bearer <key>")
        bearer = token.strip()
    direct = api_key[0].strip() if api_key else None
    if (
        bearer is not None
        and direct is not None
        and not hmac.compare_digest(
            bearer.encode("utf-8", "replace"), direct.encode("utf-8", "replace")
        )
    ):
        raise CredentialError(False, "Authorization and X-API-Key name different keys")
    key = bearer if bearer is not None else direct
    if not key:
        raise CredentialError(True, "no key was sent")  # absent or empty headers alike
    if len(key) > MAX_KEY_CHARS or not _KEY_CHARS.match(key):
        raise CredentialError(False, "the key is malformed")
    return key
