"""A port belongs to one ``gateway run``: a second gateway, or any other program, holding it is one
line on stderr naming the port and its setting, exit status 2, nothing started; the workers of one
``gateway run`` share their ports with each other only. The real ``gateway`` command, in
subprocesses, on free ports."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.redis_server import free_port

GATEWAY = os.path.join(os.path.dirname(sys.executable), "gateway")
KEY = re.compile(r"sk_gw_k[0-9a-f]{7}_[0-9A-Za-z]{30}")
DEADLINE = 30.0


@dataclass
class Ports:
    port: int
    admin: int
    mock: int

    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        return {
            **clean,
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_ADMIN_PORT": str(self.admin),
            "GATEWAY_MOCK_PORT": str(self.mock),
        }


def fresh() -> Ports:
    return Ports(free_port(), free_port(), free_port())  # three different ports


def _status(url: str, key: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    data = None
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(
            {
                "model": "mock-model",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "hi"}],
            }
        ).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_ready(ports: Ports, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the gateway exited"
        try:
            if _status(f"http://127.0.0.1:{ports.admin}/healthz") == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("the gateway did not start")


@pytest.fixture
def started(tmp_path: pathlib.Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Gateways started by a test, stopped (SIGTERM, then waited for) after it."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=DEADLINE)
        if proc.stdout is not None:
            proc.stdout.close()


def serve(
    started: list[subprocess.Popen[bytes]], cwd: pathlib.Path, ports: Ports, *args: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [GATEWAY, "run", *args],
        cwd=cwd,
        env=ports.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started.append(proc)
    wait_ready(ports, proc)
    return proc


def refused(cwd: pathlib.Path, ports: Ports, *args: str) -> str:
    """``gateway run`` that must not start: its stderr, after checking the exit status."""
    done = subprocess.run(
        [GATEWAY, "run", *args], cwd=cwd, env=ports.env(), capture_output=True, timeout=60
    )
    assert done.returncode == 2, done.stderr.decode()
    assert done.stdout == b""
    return done.stderr.decode()


def one_line(err: str, setting: str, port: int) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert setting in lines[0] and str(port) in lines[0] and "in use" in lines[0], err
    assert "Traceback" not in err and "Unclosed" not in err


def demo_key(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        match = KEY.search(proc.stdout.readline().decode())
        if match:
            return match.group(0)
    raise AssertionError("no demo key printed")


def test_a_second_gateway_does_not_share_the_ports_of_a_running_one(
    tmp_path: pathlib.Path, started: list[subprocess.Popen[bytes]]
) -> None:
    first = fresh()
    key = demo_key(serve(started, tmp_path, first))
    for setting, second in (
        ("listen.port", Ports(first.port, free_port(), free_port())),
        ("admin.port", Ports(free_port(), first.admin, free_port())),
        ("mock_worker.port", Ports(free_port(), free_port(), first.mock)),
    ):
        port = {"listen.port": first.port, "admin.port": first.admin}.get(setting, first.mock)
        one_line(refused(tmp_path, second), setting, port)
    statuses = [
        _status(f"http://127.0.0.1:{first.port}/v1/chat/completions", key) for _ in range(20)
    ]
    assert statuses == [200] * 20  # every request reached the gateway that issued the key


def test_a_port_held_by_another_program_is_one_line(tmp_path: pathlib.Path) -> None:
    ports = fresh()
    with socket.socket() as other:
        other.bind(("127.0.0.1", ports.admin))
        other.listen()
        err = refused(tmp_path, ports)
    one_line(err, "admin.port", ports.admin)
    assert "GATEWAY_ADMIN_PORT" in err  # the embedded default reads the port from it


def test_workers_share_their_ports_with_each_other_only(
    tmp_path: pathlib.Path, started: list[subprocess.Popen[bytes]], redis_url: str
) -> None:
    ports = fresh()
    config = tmp_path / "workers.yaml"
    config.write_text(
        f"listen: {{host: 127.0.0.1, port: {ports.port}, workers: 2}}\n"
        f"admin: {{host: 127.0.0.1, port: {ports.admin}}}\n"
        f"store: {{url: '{redis_url}'}}\n"
        "upstreams: {u: {url: 'http://127.0.0.1:1'}}\nmodels: {m: {upstreams: [u]}}\n"
    )
    serve(started, tmp_path, ports, "--config", str(config))
    one_line(refused(tmp_path, ports, "--config", str(config)), "listen.port", ports.port)
    single = tmp_path / "single.yaml"
    single.write_text(config.read_text().replace("workers: 2", "workers: 1"))
    one_line(refused(tmp_path, ports, "--config", str(single)), "listen.port", ports.port)
    # The first gateway's workers still serve the port (a key is needed: 401, never refused).
    statuses = {_status(f"http://127.0.0.1:{ports.port}/v1/models") for _ in range(20)}
    assert statuses == {401}


def test_workers_never_share_the_public_port_with_the_admin_port(
    tmp_path: pathlib.Path, redis_url: str
) -> None:
    """listen.port = admin.port with several workers: one line, as with one worker. (Before,
    every worker bound both with SO_REUSEPORT, and the kernel handed some of the public
    port's connections to the admin listener: 404 for /v1/models.)"""
    ports = fresh()
    for workers in (2, 1):
        config = tmp_path / f"same{workers}.yaml"
        config.write_text(
            f"listen: {{host: 127.0.0.1, port: {ports.port}, workers: {workers}}}\n"
            f"admin: {{host: 127.0.0.1, port: {ports.port}}}\n"
            f"store: {{url: '{redis_url}'}}\n"
            "upstreams: {u: {url: 'http://127.0.0.1:1'}}\nmodels: {m: {upstreams: [u]}}\n"
        )
        one_line(refused(tmp_path, ports, "--config", str(config)), "admin.port", ports.port)


def test_port_zero_with_several_workers_is_one_port(
    tmp_path: pathlib.Path, started: list[subprocess.Popen[bytes]], redis_url: str
) -> None:
    from gateway import ports
    from gateway.config.load import parse_text

    config = parse_text(
        f"listen: {{host: 127.0.0.1, port: 0, workers: 3}}\nadmin: {{port: 0}}\n"
        f"store: {{url: '{redis_url}'}}\n",
        "t.yaml",
        env={},
    )
    groups = ports.bind_workers(config, 3)
    try:
        public = {g.public[0].getsockname()[1] for g in groups}
        admin = {g.admin[0].getsockname()[1] for g in groups}
        assert len(public) == 1 and len(admin) == 1 and public != admin
        with pytest.raises(ports.BindError, match=r"listen\.port"):
            ports.bind_process(
                parse_text(f"listen: {{port: {public.pop()}, host: 127.0.0.1}}\n", "t", env={})
            )
    finally:
        for group in groups:
            group.close()
