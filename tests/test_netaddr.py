"""Client addresses and allowlists: property tests against an oracle built on the stdlib alone,
and the X-Forwarded-For rules (believed only from trusted proxies, read from the right, every
field line of it) and X-Forwarded-Proto's."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.netaddr import client_ip, combine, forwarded_proto, in_networks, parse_ip

v4 = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)
v6 = st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address)
v4net = st.tuples(v4, st.integers(0, 32)).map(
    lambda t: ipaddress.IPv4Network((t[0], t[1]), strict=False)
)
v6net = st.tuples(v6, st.integers(0, 128)).map(
    lambda t: ipaddress.IPv6Network((t[0], t[1]), strict=False)
)


def oracle(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> bool:
    """Bit arithmetic on integers: the first ``prefixlen`` bits agree."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = 32 if network.version == 4 else 128
    if address.version != network.version:
        if address.version == 4 and network.version == 6:
            mapped = int(ipaddress.IPv6Address(f"::ffff:{address}"))
            shift = bits - network.prefixlen
            return mapped >> shift == int(network.network_address) >> shift
        return False
    shift = bits - network.prefixlen
    return int(address) >> shift == int(network.network_address) >> shift


@given(st.one_of(v4, v6), st.one_of(v4net, v6net))
def test_matching_agrees_with_the_oracle(address: object, network: object) -> None:
    assert in_networks(address, [network]) == oracle(address, network)  # type: ignore[arg-type]


@given(
    st.lists(st.one_of(v4, v6), min_size=1, max_size=8),
    st.lists(st.one_of(v4net, v6net), max_size=6).map(tuple),
)
def test_an_allowlist_tuple_matches_as_the_oracle_every_time(
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> None:
    """A tuple's spans are made once and kept: every address asked of the same tuple (and
    its IPv4-mapped form) gets the oracle's answer over all of its networks."""
    for address in addresses:
        expected = any(oracle(address, n) for n in networks)
        assert in_networks(address, networks) == expected
        if isinstance(address, ipaddress.IPv4Address):
            mapped = ipaddress.IPv6Address(f"::ffff:{address}")
            assert in_networks(mapped, networks) == expected


def test_a_new_allowlist_in_a_dead_ones_place_is_matched_as_itself() -> None:
    """Spans are kept by the tuple's identity, holding the tuple: a tuple made where a freed one
    was (the same id) is never matched by the freed one's spans."""
    address = ipaddress.IPv4Address("192.0.2.7")
    for n in range(200):
        wide = (ipaddress.ip_network(f"192.0.{n % 3}.0/24"),)
        assert in_networks(address, wide) == (n % 3 == 2)
        del wide


@given(v4, v4net)
def test_ipv4_mapped_addresses_match_ipv4_networks(
    address: ipaddress.IPv4Address, network: ipaddress.IPv4Network
) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert in_networks(mapped, [network]) == (address in network)


@given(v4, v4)
def test_a_host_matches_exactly_its_own_32(
    a: ipaddress.IPv4Address, b: ipaddress.IPv4Address
) -> None:
    assert in_networks(a, [ipaddress.ip_network(f"{b}/32")]) == (a == b)


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # untrusted peer: its header is ignored
        ("10.0.0.5", "198.51.100.7", "198.51.100.7"),
        ("10.0.0.5", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # rightmost untrusted hop
        ("10.0.0.5", "198.51.100.7, 10.0.0.9", "198.51.100.7"),  # trusted hops are skipped
        ("10.0.0.5", "10.1.1.1, 10.0.0.9", "10.1.1.1"),  # all trusted: the leftmost
        ("10.0.0.5", "garbage, 198.51.100.7", "198.51.100.7"),
        ("10.0.0.5", "198.51.100.7, garbage", "10.0.0.5"),  # a garbled hop stops the walk
        ("::1", "2001:db8::1", "2001:db8::1"),
        ("::ffff:10.0.0.5", "192.0.2.1", "192.0.2.1"),  # mapped peer is a trusted IPv4
        ("10.0.0.5", "[2001:db8::2]:443", "2001:db8::2"),
        ("10.0.0.5", "192.0.2.1:5555", "192.0.2.1"),
        ("10.0.0.5", "198.51.100.7, , 10.0.0.9,", "198.51.100.7"),  # empty elements: skipped
        ("10.0.0.5", " , ", "10.0.0.5"),
    ],
)
def test_forwarded_for(peer: str, xff: str | None, expected: str) -> None:
    assert str(client_ip(peer, xff, TRUSTED)) == expected


def test_parse_ip_refuses_nonsense() -> None:
    for text in ("", "host.example", "1.2.3", "::g", None):
        assert parse_ip(text) is None


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], None),
        (["1.1.1.1"], "1.1.1.1"),
        (["1.1.1.1", "2.2.2.2, 3.3.3.3"], "1.1.1.1, 2.2.2.2, 3.3.3.3"),  # in order
    ],
)
def test_field_lines_combine_in_order(lines: list[str], expected: str | None) -> None:
    assert combine(lines) == expected


def test_the_last_line_is_the_trusted_proxys() -> None:
    """A client's own line first, the trusted proxy's after it: the proxy's word counts."""
    lines = ["203.0.113.7", "198.51.100.5"]
    assert str(client_ip("10.0.0.5", combine(lines), TRUSTED)) == "198.51.100.5"


@given(st.lists(v4, min_size=1, max_size=6), st.integers(1, 5))
def test_lines_read_as_their_join(hops: list[ipaddress.IPv4Address], cut: int) -> None:
    """However a list is split into lines, it is read as the one comma-joined value."""
    text = [str(h) for h in hops]
    lines = [", ".join(text[:cut]), ", ".join(text[cut:])] if cut < len(text) else [", ".join(text)]
    assert client_ip("10.0.0.5", combine(lines), TRUSTED) == client_ip(
        "10.0.0.5", ", ".join(text), TRUSTED
    )


@pytest.mark.parametrize(
    ("peer", "value", "expected"),
    [
        ("10.0.0.5", "https", "https"),
        ("10.0.0.5", "HTTPS", "https"),
        ("10.0.0.5", "https, http", "http"),  # the right-most: the nearest proxy's
        ("10.0.0.5", "http, https", "https"),
        ("10.0.0.5", "https, ", "https"),
        ("10.0.0.5", "https, gopher", None),  # nonsense from the trusted side: believe nothing
        ("10.0.0.5", None, None),
        ("203.0.113.9", "https", None),  # an untrusted peer's claim
    ],
)
def test_forwarded_proto(peer: str, value: str | None, expected: str | None) -> None:
    assert forwarded_proto(peer, value, TRUSTED) == expected
