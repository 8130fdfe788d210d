"""The listening sockets, bound before anything else starts, and owned by one ``gateway run``.

One process binds its public and admin ports exclusively: a port another program holds is a
``BindError`` naming the port and its setting, never shared. Several workers share their ports
with each other only: the supervisor checks each port is free (an exclusive bind, released at
once), then binds one ``SO_REUSEPORT`` socket per worker and listener so the kernel spreads
connections over the workers, and hands each worker its own. The supervisor keeps them while it
runs, so a restarted worker takes over the socket of the one it replaces, and no other program
can join a port the gateway was given.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field

from gateway.config.schema import Config

BACKLOG = 2048


class BindError(Exception):
    """A port that cannot be listened on; ``str()`` is the one line to print."""

    def __init__(self, setting: str, host: str, port: int, error: OSError) -> None:
        if error.errno == errno.EADDRINUSE:
            text = (
                f"{setting}: port {port} on {host} is already in use by another program (another "
                f"gateway?); stop it, or set {setting} to a free port"
            )
        else:
            reason = error.strerror or str(error)
            text = f"{setting}: cannot listen on {host} port {port}: {reason}"
        super().__init__(text)
        self.setting = setting
        self.port = port


@dataclass
class Listeners:
    """The bound sockets of one worker: the public listener's and the admin listener's (one per
    address the host name resolves to)."""

    public: list[socket.socket] = field(default_factory=list)
    admin: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in (*self.public, *self.admin):
            sock.close()


def _addresses(host: str, port: int) -> list[tuple[int, tuple[object, ...]]]:
    found = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    unique: dict[tuple[int, tuple[object, ...]], None] = {}
    for family, _, _, _, address in found:
        unique[(family, tuple(address))] = None
    return list(unique)


def _socket(family: int, address: tuple[object, ...], reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind(setting: str, host: str, port: int, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets on every address of ``host`` (port 0: one free port for all)."""
    bound: list[socket.socket] = []
    try:
        for family, address in _addresses(host, port):
            if port == 0 and bound:
                address = (address[0], bound[0].getsockname()[1], *address[2:])
            bound.append(_socket(family, address, reuse_port))
    except OSError as exc:
        for sock in bound:
            sock.close()
        raise BindError(setting, host, port, exc) from None
    return bound


def probe(setting: str, host: str, port: int) -> None:
    """Raise ``BindError`` unless ``port`` is free on ``host`` (bound exclusively, released)."""
    if port != 0:
        for sock in bind(setting, host, port):
            sock.close()


def _probe_mock(config: Config) -> None:
    mock = config.mock_worker
    if mock is not None:
        probe("mock_worker.port", mock.host, mock.port)


def bind_process(config: Config) -> Listeners:
    """The ports of a gateway running in this one process: exclusive."""
    listeners = Listeners()
    try:
        listeners.public = bind("listen.port", config.listen.host, config.listen.port)
        listeners.admin = bind("admin.port", config.admin.host, config.admin.port)
        _probe_mock(config)
    except BindError:
        listeners.close()
        raise
    return listeners


def bind_workers(config: Config, count: int) -> list[Listeners]:
    """``count`` workers' sockets on the same ports, after checking no one else holds them."""
    listen, admin = config.listen, config.admin
    # the public port held while the admin port is tried: the two the same port would be bound
    # by every worker with SO_REUSEPORT, and the kernel would share connections between them
    held = bind("listen.port", listen.host, listen.port) if listen.port else []
    try:
        probe("admin.port", admin.host, admin.port)
    finally:
        for sock in held:
            sock.close()
    _probe_mock(config)
    groups: list[Listeners] = []
    ports = [listen.port, admin.port]
    try:
        for _ in range(count):
            group = Listeners(
                bind("listen.port", listen.host, ports[0], reuse_port=True),
                bind("admin.port", admin.host, ports[1], reuse_port=True),
            )
            groups.append(group)
            ports = [group.public[0].getsockname()[1], group.admin[0].getsockname()[1]]
    except BindError:
        for group in groups:
            group.close()
        raise
    return groups


def keep_only(groups: list[Listeners], mine: Listeners) -> None:
    """In a forked worker: close the inherited copies of the other workers' sockets, so that
    when this worker closes its own listener at the drain, the port stops taking connections
    that nobody would accept."""
    for group in groups:
        if group is not mine:
            group.close()
