"""The lane's RESP packer packs every command byte for byte as hiredis.pack_command does."""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.store import resp

ARGS = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.sampled_from(["", "1", "1.0", "EVALSHA", "gw:{bench}:rpm:o"]),
)


@given(st.lists(ARGS, min_size=1, max_size=40))
def test_packs_as_hiredis(args: list[resp.Arg]) -> None:
    command = tuple(args)
    assert resp.pack(command) == hiredis.pack_command(command)
    assert resp.pack(command) == hiredis.pack_command(command)  # again, from what it kept


def test_a_kept_text_never_stands_for_a_number() -> None:
    """1 and 1.0 hash alike, "1" does not: a number is never read from the kept texts."""
    for command in (("SET", "1", 1), ("SET", 1.0, "1"), ("X", 1, "1.0", 1.0)):
        assert resp.pack(command) == hiredis.pack_command(command)


def test_a_lone_surrogate_fails_as_in_hiredis() -> None:
    with pytest.raises(UnicodeEncodeError):
        hiredis.pack_command(("SET", "\udcff"))
    with pytest.raises(UnicodeEncodeError):
        resp.pack(("SET", "\udcff"))


def test_what_is_kept_stays_bounded() -> None:
    filler = ("x",) * resp.FEW  # a command long enough to be packed from what is kept
    resp.pack((*filler, "req_first"))
    assert "req_first" in resp._KEPT
    for n in range(resp.KEPT_MAX * 2 + 7):
        resp.pack((*filler, f"req_{n}"))
        assert len(resp._KEPT) <= resp.KEPT_MAX


def test_a_short_command_is_packed_by_hiredis_whole() -> None:
    """A stored response's SET (its key seen once, its record large) keeps nothing here."""
    command = ("SET", "gw:resp:{resp_once}:acme", b"x" * 1024, "PX", "2592000000")
    assert resp.pack(command) == hiredis.pack_command(command)
    assert "gw:resp:{resp_once}:acme" not in resp._KEPT


_TEXTS = st.lists(st.text(max_size=12), max_size=5)


@given(st.lists(_TEXTS, max_size=4), _TEXTS, st.booleans())
def test_a_script_call_of_runs_packs_as_hiredis(
    groups: list[list[str]], args: list[str], kept: bool
) -> None:
    """A call's KEYS of kept runs (a key's) and ARGV of texts: what hiredis packs of the
    flat command, and the same texts read back (redis-py's calls)."""
    parts: list[str | resp.Run] = [resp.Run(tuple(g)) for g in groups]
    if kept:
        parts.append("loose")
    keys = resp.Run(parts, sum(map(len, groups)) + kept)
    argv = resp.Run(args)
    flat = [text for g in groups for text in g] + (["loose"] if kept else [])
    command = ("EVALSHA", "f" * 40, len(flat), *flat, *args)
    assert resp.evalsha("f" * 40, keys, argv) == hiredis.pack_command(command)
    assert resp.evalsha("f" * 40, keys, argv) == hiredis.pack_command(command)  # kept runs
    assert list(keys) == flat and len(keys) == len(flat) and tuple(argv) == tuple(args)
    assert resp.evalsha("f" * 40, flat, args) == hiredis.pack_command(command)
