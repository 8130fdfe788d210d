"""The API key format, hashing and credential extraction. Pure.

An issued key is ``<prefix>_<keyId>_<secret><checksum>``:

- ``keyId``: ``k`` + 7 lowercase hex digits (the record id, shown in lists);
- ``secret``: 24 base62 characters from 18 random bytes (≥ 142 bits);
- ``checksum``: 6 base62 characters of the CRC-32 of everything before it, so a mistyped or
  made-up key with the gateway's prefix is refused without a store lookup. Anyone can compute a
  CRC: it filters typos and junk, it proves nothing; the secret is what cannot be guessed.

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
    """The request's credentials are unusable: ``kind`` is ``missing`` (none sent), ``conflict``
    (two different keys) or ``malformed``; ``why`` says what to send instead (never the key)."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(why)
        self.kind = kind
        self.why = why

    @property
    def missing(self) -> bool:
        return self.kind == "missing"


def credential(headers: Mapping[str, str], all_values: Callable[[str], list[str]]) -> str:
    """The key a request presents, from ``Authorization: Bearer`` or ``X-API-Key``.

    ``all_values(name)`` gives every line of a header: a client (or a proxy that adds its own)
    may send each more than once. The same key repeated is one key; two different values are
    refused, whatever the headers, since either could be the one meant. The scheme is
    case-insensitive (RFC 9110 §11.1); surrounding whitespace and empty lines are ignored.
    """
    key = presented(all_values)
    check_form(key)
    return key


def presented(all_values: Callable[[str], list[str]]) -> str:
    """The one key the request's headers carry (``credential`` without the check of its
    characters): ``CredentialError`` when they carry none, two, or another scheme."""
    sent: set[str] = set()
    other_scheme = False
    for line in all_values("Authorization"):
        scheme, _, token = line.strip().partition(" ")
        if scheme.lower() == "bearer":
            sent.add(token.strip())
        elif scheme:
            other_scheme = True
            sent.add(line.strip())  # a value of its own: differs from any bearer token
    for line in all_values("X-API-Key"):  # (a loop: a generator costs more, made per request)
        sent.add(line.strip())
    sent.discard("")  # an empty header is as if absent
    if len(sent) > 1:
        raise CredentialError(
            "conflict",
            "Authorization and X-API-Key (or repeated lines of one of them) carry different "
            "values; send one key, in one header",
        )
    if other_scheme:
        raise CredentialError("malformed", "the Authorization header must be 'Bearer <key>'")
    if not sent:
        raise CredentialError("missing", "no key was sent")
    return sent.pop()


def check_form(key: str) -> None:
    """``CredentialError`` (malformed) for a key too long or of characters no key has."""
    if len(key) > MAX_KEY_CHARS or not _KEY_CHARS.match(key):
        raise CredentialError(
            "malformed",
            f"a key is at most {MAX_KEY_CHARS} letters, digits and . _ ~ + / = - characters",
        )
