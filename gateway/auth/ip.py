"""Parsing allowlist entries from the key API (IPs or CIDRs, IPv4 or IPv6). Pure."""

from __future__ import annotations

import ipaddress

from gateway.records import IPNetwork


def parse_allowlist(entries: object, field: str = "ipWhitelist") -> tuple[IPNetwork, ...]:
    """The networks of an allowlist; ``ValueError`` naming the first bad entry."""
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ValueError(f"'{field}' must be a list of IP addresses or CIDR networks")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise ValueError(f"{field}[{i}] must be a string such as '203.0.113.0/24'")
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{field}[{i}] {entry[:64]!r} is not an IP address or CIDR network"
            ) from None
    return tuple(out)
