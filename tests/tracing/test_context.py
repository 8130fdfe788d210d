"""W3C trace context from a client, read strictly: one valid ``traceparent`` line or none, and a
``tracestate`` passed on only when every member of it is well formed."""

from __future__ import annotations

import pytest

from gateway.tracing import Parent, parse_traceparent, parse_tracestate

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([VALID], Parent(TRACE, SPAN, True)),
        ([f"00-{TRACE}-{SPAN}-00"], Parent(TRACE, SPAN, False)),
        ([f"00-{TRACE}-{SPAN}-09"], Parent(TRACE, SPAN, True)),  # other flags are ignored
        ([f"01-{TRACE}-{SPAN}-01-later-fields"], Parent(TRACE, SPAN, True)),  # a later version
        ([f"01-{TRACE}-{SPAN}-01"], Parent(TRACE, SPAN, True)),
        ([], None),
        ([VALID, VALID], None),  # two header lines
        ([VALID.upper()], None),
        ([f"ff-{TRACE}-{SPAN}-01"], None),  # version ff is invalid
        ([f"00-{TRACE}-{SPAN}-01-x"], None),  # version 00 has exactly four fields
        ([f"01-{TRACE}-{SPAN}-01x"], None),
        ([f"00-{'0' * 32}-{SPAN}-01"], None),
        ([f"00-{TRACE}-{'0' * 16}-01"], None),
        ([f"00-{TRACE[:-1]}-{SPAN}-01"], None),
        ([f"00-{TRACE}-{SPAN}-1"], None),
        ([f" {VALID}"], None),
        ([f"00_{TRACE}_{SPAN}_01"], None),
        (["garbage"], None),
        ([""], None),
    ],
)
def test_traceparent_is_parsed_strictly(values: list[str], expected: Parent | None) -> None:
    assert parse_traceparent(values) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], ()),
        (["vendor=abc"], (("vendor", "abc"),)),
        (["a=1, b=2", "c=3"], (("a", "1"), ("b", "2"), ("c", "3"))),  # lines join in order
        (["a=1,,\tb=2 "], (("a", "1"), ("b", "2"))),  # empty members and blanks are allowed
        (["t0@sys=v", "k-_*/9=x y"], (("t0@sys", "v"), ("k-_*/9", "x y"))),
        ([",".join(f"k{i}=v" for i in range(32))], tuple((f"k{i}", "v") for i in range(32))),
        ([",".join(f"k{i}=v" for i in range(33))], ()),  # more than 32 members
        (["a=1,a=2"], ()),  # a repeated key
        (["A=1"], ()),  # keys are lowercase
        (["a=1,b"], ()),  # one bad member drops them all
        (["a=x,y"], ()),
        (["a=with=equals"], ()),
        (["a=" + "v" * 257], ()),
        (["a=trailing "], (("a", "trailing"),)),
        (["a=\u00e9"], ()),
        (["a=1", "b=" + "v" * 9000], ()),  # too long to read at all
    ],
)
def test_tracestate_is_kept_whole_or_not_at_all(
    values: list[str], expected: tuple[tuple[str, str], ...]
) -> None:
    assert parse_tracestate(values) == expected
