"""Client addresses: who is really asking (``X-Forwarded-For`` believed only from trusted
proxies, read from the right), and matching addresses against allowlists. Pure.

IPv4-mapped IPv6 addresses (``::ffff:203.0.113.7``) are treated as the IPv4 address they carry,
so they match IPv4 networks, as a dual-stack listener hands them out.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str | None) -> IPAddress | None:
    """An address from a peer or header value (brackets, zone ids and ports tolerated)."""
    if not text:
        return None
    return _parse_ip(text)


@functools.lru_cache(maxsize=4096)  # the same few peers ask again and again
def _parse_ip(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return unmap(address)


def unmap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_networks(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    address = unmap(address)
    for network in networks:
        if address.version == network.version and address in network:
            return True
        if (
            network.version == 6
            and address.version == 4
            and ipaddress.IPv6Address(f"::ffff:{address}") in network
        ):
            return True
    return False


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]
) -> IPAddress | None:
    """The real client: the peer, unless the peer is a trusted proxy; then the right-most
    address of ``X-Forwarded-For`` that is not itself trusted."""
    address = parse_ip(peer)
    if address is None or not trusted or not in_networks(address, trusted):
        return address
    if not forwarded_for:
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop_address = parse_ip(hop)
        if hop_address is None:
            return address  # a garbled hop: trust nothing beyond the last good one
        address = hop_address
        if not in_networks(address, trusted):
            return address
    return address


def peer_is_trusted(peer: str | None, trusted: tuple[IPNetwork, ...]) -> bool:
    address = parse_ip(peer)
    return address is not None and bool(trusted) and in_networks(address, trusted)
