"""Real Redis servers for tests: a standalone ``redis-server`` or a 3-master Redis Cluster, each on
free loopback ports in a temp dir, without persistence. Readiness is polled with a deadline.

``pause()``/``resume()`` stop and continue the processes (SIGSTOP/SIGCONT): the server keeps its
sockets but answers nothing, the way a hung or partitioned store looks to a client.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import BinaryIO

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
START_DEADLINE = 10.0
CLUSTER_DEADLINE = 30.0


def available() -> bool:
    return os.access(REDIS_SERVER, os.X_OK) and os.access(REDIS_CLI, os.X_OK)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before by this process: the kernel may give the
    same free port to two calls in a row, and a test taking two (a gateway's public and admin
    ports) would then collide with itself."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def command(port: int, *args: str, password: str | None = None, timeout: float = 1.0) -> str:
    """One command over a raw RESP connection (no client library); the reply as text (an error
    reply starts with ``-``, arrays are flattened one element a line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        stream = s.makefile("rb")
        if password is not None:
            s.sendall(_encode(("AUTH", password)))
            _read(stream)
        s.sendall(_encode(args))
        return _read(stream)


def _encode(args: tuple[str, ...]) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read(stream: BinaryIO) -> str:
    line = stream.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2].decode()
    if kind in (b"+", b":"):
        return rest
    if kind == b"-":
        return "-" + rest
    if kind == b"$":
        size = int(rest)
        return "" if size < 0 else stream.read(size + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        return "\n".join(_read(stream) for _ in range(max(0, int(rest))))
    raise ConnectionError(f"unexpected reply {line!r}")


@dataclass
class RedisServer:
    """One ``redis-server`` process."""

    port: int
    directory: str
    process: subprocess.Popen[bytes]
    password: str | None = None
    args: list[str] = dataclasses.field(default_factory=list)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def call(self, *args: str) -> str:
        return command(self.port, *args, password=self.password)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Kill the process (no shutdown, no save), keeping the port and directory for restart."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """A new, empty server on the same port (as after a crash without persistence)."""
        if self.process.poll() is None:
            self.kill()
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not _wait_ready(self, time.monotonic() + START_DEADLINE):
            raise RuntimeError(f"redis-server on {self.port} did not come back")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
                self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _wait_ready(server: RedisServer, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            reply = command(server.port, "PING", timeout=0.5)
        except OSError:
            time.sleep(0.01)
            continue
        if reply == "PONG" or reply.startswith("-NOAUTH"):
            return True
        time.sleep(0.01)
    raise TimeoutError(f"redis-server on {server.port} not ready")


def start_redis(*extra: str, password: str | None = None) -> RedisServer:
    """A standalone server on a free port (retried if the port was taken in between)."""
    for _ in range(5):
        port = free_port()
        directory = tempfile.mkdtemp(prefix="gw-redis-")
        args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", directory, "--daemonize", "no"]
        args += ["--logfile", os.path.join(directory, "redis.log"), *extra]
        if password:
            args += ["--requirepass", password]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = RedisServer(port, directory, process, password, args)
        atexit.register(server.stop)  # should a session end without its fixtures' teardown
        if _wait_ready(server, time.monotonic() + START_DEADLINE):
            return server
        server.stop()
    raise RuntimeError("could not start redis-server")


@dataclass
class RedisClusterProcesses:
    """Three masters, every slot assigned, ``cluster_state:ok`` on every node."""

    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def flush(self) -> None:
        for node in self.nodes:
            assert node.call("FLUSHALL") == "OK"

    def pause(self) -> None:
        for node in self.nodes:
            node.pause()

    def resume(self) -> None:
        for node in self.nodes:
            node.resume()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(masters: int = 3) -> RedisClusterProcesses:
    cluster = RedisClusterProcesses()
    try:
        for _ in range(masters):
            cluster.nodes.append(
                start_redis(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",  # relative to the server's --dir
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-node-timeout",
                    "5000",
                )
            )
        addresses = [f"127.0.0.1:{n.port}" for n in cluster.nodes]
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=CLUSTER_DEADLINE,
        )
        deadline = time.monotonic() + CLUSTER_DEADLINE
        while not all(_cluster_ok(n.port) for n in cluster.nodes):
            if time.monotonic() > deadline:
                raise TimeoutError("redis cluster did not reach cluster_state:ok")
            time.sleep(0.02)
        return cluster
    except BaseException:
        cluster.stop()
        raise


def _cluster_ok(port: int) -> bool:
    info = command(port, "CLUSTER", "INFO")
    return "cluster_state:ok" in info and "cluster_slots_ok:16384" in info
