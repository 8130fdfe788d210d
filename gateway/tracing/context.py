"""W3C Trace Context from a client, read strictly: ``traceparent`` (one header line; version
``00``, or a later version's first four fields; lowercase hex; neither id all zeros) and
``tracestate`` (at most 32 well-formed ``key=value`` members; anything else drops it whole, as
the W3C text asks, so a client's junk is never passed on). Pure: no I/O, no SDK."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_KEY = r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(f"({_KEY})=({_VALUE})")
MAX_MEMBERS = 32
MAX_STATE = 8192  # characters of tracestate read at most (aiohttp caps a header line there too)


@dataclass(frozen=True, slots=True)
class Parent:
    """A valid incoming ``traceparent``, with the ``tracestate`` that goes with it."""

    trace_id: str
    span_id: str
    sampled: bool
    state: tuple[tuple[str, str], ...] = ()


def parse_traceparent(values: Sequence[str]) -> Parent | None:
    """The parent named by the ``traceparent`` header lines ``values``, or None if there is not
    exactly one valid line (W3C Trace Context, level 1)."""
    if len(values) != 1:
        return None
    value = values[0]
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or (version == "00" and len(value) != 55):
        return None
    if len(value) > 55 and value[55] != "-":  # a later version may add fields, after a dash
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return Parent(trace_id, span_id, int(flags, 16) & 1 == 1)


def parse_tracestate(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The members of the ``tracestate`` header lines ``values`` (joined, in order), or none at
    all when any member is malformed, a key repeats, or there are more than 32."""
    members: list[tuple[str, str]] = []
    seen: set[str] = set()
    if sum(len(v) for v in values) > MAX_STATE:
        return ()
    for line in values:
        for part in line.split(","):
            part = part.strip(" \t")
            if not part:
                continue
            match = _MEMBER.fullmatch(part)
            if match is None or match[1] in seen or len(members) == MAX_MEMBERS:
                return ()
            seen.add(match[1])
            members.append((match[1], match[2]))
    return tuple(members)
