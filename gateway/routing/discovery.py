"""``discover: dns``: an upstream entry whose host name stands for a set of workers (a
Kubernetes headless Service), resolved every ``discover_interval`` seconds into one upstream
per address, named ``<entry>@<address>:<port>``, each with its own health, ejection, signals
and load.

A new address is probed (``routing.health``) before it takes traffic: one that does not answer
joins ejected, and the health checker brings it in when it does. An address that vanishes takes
no new request; its requests in flight finish, and its state is dropped once they have. A failed
resolution keeps the last addresses (DNS trouble must not empty a pool). The names are resolved
with the event loop's ``getaddrinfo``, unless a resolver is given (tests).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from gateway.clock import Clock
from gateway.config.schema import Upstream
from gateway.periodic import Periodic
from gateway.routing.balancer import Balancer

log = logging.getLogger("gateway.discovery")

Resolve = Callable[[str, int], Awaitable[list[str]]]  # (host, port) → addresses
Check = Callable[[Upstream], Awaitable[bool]]  # answers its health probe


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses of ``host`` (IPv4 and IPv6), each once, in a stable order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return sorted({str(info[4][0]) for info in infos})


def target(upstream: Upstream) -> tuple[str, int]:
    """The host name and port an entry's URL names."""
    parts = urlsplit(upstream.url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def member(entry: Upstream, address: str) -> Upstream:
    """The upstream for one address of ``entry``: its settings, that address in its URL."""
    parts = urlsplit(entry.url)
    _, port = target(entry)
    host = f"[{address}]" if ":" in address else address
    url = urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, ""))
    return dataclasses.replace(entry, name=f"{entry.name}@{host}:{port}", url=url, discover=None)


class Discovery:
    """Re-resolves every ``discover: dns`` entry when its interval is up."""

    def __init__(
        self,
        balancer: Balancer,
        upstreams: Callable[[], Iterable[Upstream]],
        check: Check,
        clock: Clock,
        resolve: Resolve = resolve_host,
    ) -> None:
        self.balancer = balancer
        self.upstreams = upstreams
        self.check = check
        self.clock = clock
        self.resolve = resolve
        self._due: dict[str, float] = {}  # entry name → when to resolve it next (monotonic)
        self._draining: set[str] = set()  # vanished upstreams with requests still in flight
        self._periodic: Periodic | None = None

    async def sweep(self) -> None:
        """Resolve the entries that are due; forget entries a reload removed."""
        now = self.clock.monotonic()
        entries = {u.name: u for u in self.upstreams() if u.discover == "dns"}
        for name in [n for n in self._due if n not in entries]:
            self._vanish(self.balancer.members(name) or ())
            self.balancer.set_members(name, None)
            del self._due[name]
        due = [u for u in entries.values() if self._due.get(u.name, 0.0) <= now]
        for entry in due:
            self._due[entry.name] = now + entry.discover_interval
        await asyncio.gather(*(self.refresh(entry) for entry in due))
        self._draining = {n for n in self._draining if not self.balancer.forget(n)}

    async def refresh(self, entry: Upstream) -> None:
        host, port = target(entry)
        try:
            addresses = await self.resolve(host, port)
        except (OSError, UnicodeError) as exc:
            log.warning("discovery failed", extra={"upstream": entry.name, "error": str(exc)})
            return
        if not addresses:
            return
        known = {m.name: m for m in self.balancer.members(entry.name) or ()}
        found = tuple(member(entry, a) for a in addresses)  # a reload's settings, too
        fresh = [m for m in found if m.name not in known]
        answers = await asyncio.gather(*(self.check(m) for m in fresh))
        for upstream, ok in zip(fresh, answers, strict=True):
            self._draining.discard(upstream.name)
            if not ok:  # joins ejected: the health checker lets it in once it answers
                self.balancer.failed(upstream)
        names = {m.name for m in found}
        self._vanish(m for m in known.values() if m.name not in names)
        self.balancer.set_members(entry.name, found)
        if fresh or len(names) != len(known):
            log.info("discovered", extra={"upstream": entry.name, "addresses": addresses})

    def _vanish(self, gone: Iterable[Upstream]) -> None:
        for upstream in gone:
            self._draining.add(upstream.name)

    def start(self, tick: float = 1.0) -> None:
        self._periodic = Periodic(tick, self.sweep).start()

    async def stop(self) -> None:
        if self._periodic is not None:
            await self._periodic.stop()
