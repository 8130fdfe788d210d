"""Request paths, decoded and normalized once before any route is matched. Pure.

``normalize`` turns the path of a request target into the one path the gateway matches and
forwards: percent-decoded (as UTF-8), ``.`` and ``..`` segments resolved, repeated slashes
collapsed. It refuses (``PathError``, a 400) what has no safe meaning: a path that climbs above
the root, an encoded slash or backslash (``%2F``, ``%5C``: one layer would see a separator where
another sees a character), a raw backslash (a separator to some backends), NUL, malformed
percent-encoding and bytes that are not UTF-8 — as nginx does for the same inputs.

``encode`` is the one wire form of a normalized path, sent upstream: every character outside the
unreserved set, ``/`` and the sub-delimiters is percent-encoded, and so is ``;``, so that a
segment such as ``..;`` reaches a backend that splits path parameters (Tomcat) as the literal
it was matched as. ``normalize(encode(p)) == p`` for every normalized ``p``.

``is_plain`` is the hot path's check: a target without ``%``, ``/.``, ``//``, a backslash or NUL
is already normal, and costs five substring scans.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

# pchar (RFC 3986) without ';': letters, digits and "-._~" are always kept by ``quote``.
_KEEP = "/:@!$&'()*+,="
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PLAIN_WIRE = re.compile(r"[A-Za-z0-9\-._~/:@!$&'()*+,=]*")


class PathError(ValueError):
    """A request path the gateway refuses; the message says why, without echoing it."""


def is_plain(target: str) -> bool:
    """True when ``target`` (a request target, query included) needs no normalization work."""
    return not (
        "%" in target or "/." in target or "//" in target or "\\" in target or "\x00" in target
    )


def normalize(raw: str) -> str:
    """The decoded, normalized form of ``raw`` (a path beginning with ``/``, no query)."""
    if "\\" in raw:
        raise PathError("a backslash is not allowed in a path")
    if "\x00" in raw:
        raise PathError("NUL is not allowed in a path")
    text = _decoded(raw) if "%" in raw else raw
    kept: list[str] = []
    segments = text.split("/")
    for segment in segments:
        if segment == "..":
            if not kept:
                raise PathError("the path climbs above the root")
            kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    # A path that ended in a directory ("/a/", "/a/.", "/a/..") keeps its trailing slash.
    trailing = segments[-1] in ("", ".", "..") and kept
    return "/" + "/".join(kept) + ("/" if trailing else "")


def _decoded(raw: str) -> str:
    lowered = raw.lower()
    if "%2f" in lowered:
        raise PathError("an encoded slash (%2F) is not allowed in a path")
    if "%5c" in lowered:
        raise PathError("an encoded backslash (%5C) is not allowed in a path")
    if "%00" in lowered:
        raise PathError("NUL is not allowed in a path")
    if _BAD_ESCAPE.search(raw):
        raise PathError("the path has a malformed percent-escape")
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise PathError("the path is not UTF-8 once decoded") from None


def encode(path: str) -> str:
    """The wire form of a normalized path (what is sent upstream)."""
    if _PLAIN_WIRE.fullmatch(path):
        return path
    return quote(path, safe=_KEEP)


def canonical(raw: str) -> str:
    """``encode(normalize(raw))``: the target a normalized request carries from here on."""
    return encode(normalize(raw))


def is_normal(path: str) -> bool:
    """True when a decoded ``path`` is what ``normalize`` leaves: no dot segment, no empty
    segment but a trailing one, no backslash or NUL (a check for layers behind the one that
    normalizes, should a request reach them another way)."""
    if not path.startswith("/"):
        return False
    if "/." not in path and "//" not in path and "\\" not in path and "\x00" not in path:
        return True
    if "\\" in path or "\x00" in path or "//" in path:
        return False
    return all(segment not in (".", "..") for segment in path.split("/"))
