"""Client addresses: who is really asking (``X-Forwarded-For`` believed only from trusted
proxies, read from the right), and matching addresses against allowlists. Pure.

A header sent as several field lines is one list, the lines joined in order with commas (RFC 9110
§5.3): ``combine`` is that join, and every reader of ``X-Forwarded-For`` and
``X-Forwarded-Proto`` takes all the lines through it, never only the first (a trusted proxy that
adds its own line would otherwise have the client's forged one believed).

IPv4-mapped IPv6 addresses (``::ffff:203.0.113.7``) are treated as the IPv4 address they carry,
so they match IPv4 networks, as a dual-stack listener hands them out. Failed guesses are counted
per IPv6 /64 (``guesser``), the block one holder can send from.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

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


GUESSER_V6_PREFIX = 64  # one IPv6 subscriber, VM or phone holds a whole /64


@functools.lru_cache(maxsize=4096)
def guesser(client: str) -> str:
    """Who a failed guess is counted against: an IPv4 address itself, an IPv6 address's /64
    (its holder can send every request from another address in it), anything else as given."""
    address = _parse_ip(client) if client else None
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, GUESSER_V6_PREFIX), strict=False))
    return client


def unmap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# Where IPv4 addresses sit in IPv6 (``::ffff:0:0/96``, RFC 4291 §2.5.5.2): every address and
# network is matched as a point or a span of this one 128-bit space.
_MAPPED = 0xFFFF << 32
_SPANS_KEPT = 4096  # allowlists whose spans are kept (a dict cleared when it is full)
_spans_kept: dict[int, tuple[tuple[IPNetwork, ...], tuple[tuple[int, int], ...]]] = {}
_POINTS_KEPT = 4096  # addresses whose points are kept (``parse_ip`` hands out the same objects)
_points_kept: dict[int, tuple[IPAddress, int]] = {}


def in_networks(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    """Whether ``address`` (an IPv4-mapped IPv6 one as its IPv4 address) is in one of the
    networks, an IPv4 address also in an IPv6 network holding its mapped form. Matched as
    integers: a tuple of networks (a key's allowlist, the trusted proxies) is made into spans
    once, and an address into its point once, not compared as ``ipaddress`` objects (whose
    ``int`` is a Python call) on every request."""
    kept = _points_kept.get(id(address))
    if kept is None or kept[0] is not address:  # (kept holds the address: its id is not reused)
        if len(_points_kept) >= _POINTS_KEPT:
            _points_kept.clear()
        kept = _points_kept[id(address)] = (address, _point(address))
    point = kept[1]
    for low, high in _spans(networks):  # noqa: SIM110 (any() and its generator cost more)
        if low <= point <= high:
            return True
    return False


def _point(address: IPAddress) -> int:
    """Where ``address`` sits in the one 128-bit space (IPv4 as its mapped form)."""
    address = unmap(address)
    return int(address) + _MAPPED if isinstance(address, ipaddress.IPv4Address) else int(address)


def _spans(networks: Iterable[IPNetwork]) -> tuple[tuple[int, int], ...]:
    if type(networks) is not tuple:  # a list may change: never kept
        return _spans_of(networks)
    kept = _spans_kept.get(id(networks))
    if kept is None or kept[0] is not networks:  # (kept holds the tuple: its id is not reused)
        if len(_spans_kept) >= _SPANS_KEPT:
            _spans_kept.clear()
        kept = _spans_kept[id(networks)] = (networks, _spans_of(networks))
    return kept[1]


def _spans_of(networks: Iterable[IPNetwork]) -> tuple[tuple[int, int], ...]:
    spans = []
    for network in networks:
        low = int(network.network_address) + (_MAPPED if network.version == 4 else 0)
        spans.append((low, low + network.num_addresses - 1))
    return tuple(spans)


def combine(lines: Sequence[str]) -> str | None:
    """All field lines of one header as its single value (RFC 9110 §5.3), or None."""
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else ", ".join(lines)


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]
) -> IPAddress | None:
    """The real client: the peer, unless the peer is a trusted proxy; then the right-most
    address of ``X-Forwarded-For`` (``combine`` of all its lines) that is not itself trusted.
    Empty list elements are skipped, as RFC 9110 §5.6.1 asks."""
    return parse_ip(client_source(peer, forwarded_for, trusted))


def client_source(
    peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]
) -> str | None:
    """The text ``client_ip`` reads the client from: the peer, or one hop of
    ``X-Forwarded-For`` (``shown`` and ``parse_ip`` of it are remembered per text)."""
    address = parse_ip(peer)
    if address is None or not trusted or not in_networks(address, trusted):
        return peer
    if not forwarded_for:
        return peer
    source = peer
    for hop in reversed(forwarded_for.split(",")):
        if not hop.strip():
            continue
        address = parse_ip(hop)
        if address is None:
            return source  # a garbled hop: trust nothing beyond the last good one
        source = hop
        if not in_networks(address, trusted):
            return source
    return source


@functools.lru_cache(maxsize=4096)  # as ``_parse_ip``: ``str`` of an address costs ~8k
def shown(text: str | None) -> str | None:  # instructions, a cached one a lookup
    """``str(parse_ip(text))``, or None when ``text`` is no address."""
    address = parse_ip(text)
    return str(address) if address is not None else None


def peer_is_trusted(peer: str | None, trusted: tuple[IPNetwork, ...]) -> bool:
    address = parse_ip(peer)
    return address is not None and bool(trusted) and in_networks(address, trusted)


def forwarded_proto(
    peer: str | None, forwarded_proto: str | None, trusted: tuple[IPNetwork, ...]
) -> str | None:
    """``http`` or ``https`` as a trusted peer's ``X-Forwarded-Proto`` (``combine`` of all its
    lines) says, else None. The right-most element wins: it is the one the trusted peer itself
    set or saw; with several, the left ones came from farther away, maybe from the client.
    Anything but ``http`` or ``https`` there means nothing is believed."""
    if not forwarded_proto or not peer_is_trusted(peer, trusted):
        return None
    for element in reversed(forwarded_proto.split(",")):
        value = element.strip().lower()
        if value:
            return value if value in ("http", "https") else None
    return None
