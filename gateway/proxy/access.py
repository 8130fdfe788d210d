"""Who is calling and from where, for every public route that takes a key: the real client IP
(``network.trusted_proxies``; every ``X-Forwarded-For`` line, joined), the key
(``KeyService.authenticate``) and its IP allowlist.

Permission and model checks stay with the route that knows what it serves.
"""

from __future__ import annotations

from aiohttp import web

from gateway.netaddr import IPAddress, client_source, combine, parse_ip, shown
from gateway.proxy.exchange import EXCHANGE
from gateway.records import KeyRecord
from gateway.runtime import Runtime


def resolve_client(runtime: Runtime, request: web.Request) -> IPAddress | None:
    """The real client's address (noted on the exchange for logs, per-IP counts and the
    failed-auth blocking, which must never blame an address the client wrote)."""
    source = client_source(
        request.remote,
        combine(request.headers.getall("X-Forwarded-For", ())),
        runtime.config.network.trusted_proxies,
    )
    request[EXCHANGE].client_ip = shown(source)
    return parse_ip(source)


async def authenticate(runtime: Runtime, request: web.Request) -> KeyRecord:
    ex = request[EXCHANGE]
    client = resolve_client(runtime, request)
    headers = request.headers
    record = await runtime.keys.authenticate(
        headers, lambda name: headers.getall(name, []), ex.client_ip or "-"
    )
    ex.key_id, ex.owner = record.id, record.owner
    runtime.keys.check_ip(record, client)
    return record
