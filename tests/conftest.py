"""Shared fixtures: a real gateway on loopback (in this process), the bundled mock worker and an
independent fake upstream. Configurations are YAML text, loaded by the real loader."""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from gateway import mock_worker
from gateway.config.load import parse_text
from gateway.server import Server
from tests import redis_server
from tests.clients import KEYS_YAML, TEST_KEY, close_all
from tests.fakes import FakeUpstream
from tests.redis_server import RedisClusterProcesses, RedisServer
from tests.secrets_watch import Watch, install

GatewayFactory = Callable[..., Awaitable[Server]]

# A property test fails on a wrong answer, never on a slow example: a loaded machine (or CI
# beside other work) must not turn Hypothesis' per-example deadline into a flaky failure.
# In CI the examples are derived from each test's name (derandomize): a run there checks the
# same cases every time, so its verdict is the code's, not the draw's; runs elsewhere explore
# new examples every time and keep what failed in .hypothesis/ to replay it.
settings.register_profile(
    "gateway", deadline=None, print_blob=True, derandomize=bool(os.environ.get("CI"))
)
settings.load_profile("gateway")


def _need_redis() -> None:
    if not redis_server.available():
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing; the test command should have installed it")
        pytest.skip("redis-server is not installed")


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisServer]:
    """One redis-server for the session, on a free port, stopped at the end."""
    _need_redis()
    server = redis_server.start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster_processes() -> Iterator[RedisClusterProcesses]:
    """A 3-master Redis Cluster for the session, on free ports, stopped at the end."""
    _need_redis()
    cluster = redis_server.start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_url(redis_process: RedisServer) -> str:
    """The session server's URL, emptied (FLUSHALL) for this test."""
    assert redis_process.call("FLUSHALL") == "OK"
    return redis_process.url


@pytest.fixture
def cluster_url(cluster_processes: RedisClusterProcesses) -> str:
    """The session cluster's URL, every master emptied for this test."""
    cluster_processes.flush()
    return cluster_processes.url


def gateway_yaml(
    upstreams: dict[str, str],
    models: dict[str, Any] | None = None,
    extra: str = "",
    admin_token: str | None = None,
) -> str:
    """A config with the given upstream URLs; by default one model per upstream, and the static
    test key unless ``extra`` declares a ``keys:`` section of its own."""
    token = f", token: {admin_token}" if admin_token else ""
    lines = [
        "listen: {host: 127.0.0.1, port: 0}",
        f"admin: {{host: 127.0.0.1, port: 0{token}}}",
        "upstreams:",
    ]
    for name, url in upstreams.items():
        lines.append(
            f"  {name}: {{url: '{url}', timeouts: {{connect: 2, first_byte: 5, idle: 5}}}}"
        )
    if models is None:
        models = {f"{u}-model": {"upstreams": [u]} for u in upstreams}
    lines.append("models:" if models else "models: {}")
    lines.extend(f"  {name}: {json.dumps(spec)}" for name, spec in models.items())
    extra = textwrap.dedent(extra)
    if not re.search(r"^keys:", extra, re.MULTILINE):
        lines.append(KEYS_YAML.rstrip())
    return "\n".join(lines) + "\n" + extra


def access_log_fields() -> list[str]:
    """The access line's fields as docs/operations.md's table lists them, in its order."""
    docs = (Path(__file__).parent.parent / "docs" / "operations.md").read_text()
    table = docs[docs.index("**Access log**") : docs.index("## Console")]
    return re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)


async def mock_gateway(mock: tuple[int, Any]) -> Server:
    """A started gateway with one model, ``m``, on the bundled mock worker: for a test that
    stops it itself (to read the access log its stop flushes)."""
    text = gateway_yaml({"mock": f"http://127.0.0.1:{mock[0]}"}, {"m": {"upstreams": ["mock"]}})
    server = Server(parse_text(text, "t.yaml", env={}))
    await server.start()
    return server


@pytest.fixture(scope="session", autouse=True)
def secrets_watch() -> Iterator[Watch]:
    """No key issued during the session may appear in a log line, access line or error body."""
    watching = install({TEST_KEY})
    watch = next(watching)
    yield watch
    leaks = watch.leaks()
    watching.close()
    assert not leaks, f"secrets leaked: {leaks[:5]}"


@pytest.fixture(autouse=True)
async def _close_sdk_clients() -> AsyncIterator[None]:
    yield
    await close_all()


@pytest.fixture
async def mock() -> AsyncIterator[tuple[int, mock_worker.MockState]]:
    runner, port = await mock_worker.start(mock_worker.MockOptions(), "127.0.0.1", 0)
    yield port, runner.app[mock_worker.MOCK_STATE]
    await runner.cleanup()


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture
async def gateway_factory() -> AsyncIterator[GatewayFactory]:
    servers: list[Server] = []

    async def start(text: str) -> Server:
        server = Server(parse_text(text, "test.yaml", env={}))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def gateway(
    gateway_factory: GatewayFactory, mock: tuple[int, Any], fake: FakeUpstream
) -> Server:
    """A gateway with two models: ``mock-model`` (the bundled mock) and ``fake-model``."""
    text = gateway_yaml(
        {"mock": f"http://127.0.0.1:{mock[0]}", "fake": fake.url},
        {
            "mock-model": {"upstreams": ["mock"], "aliases": ["gpt-4o-mini"]},
            "mock-reasoner": {"upstreams": ["mock"]},
            "fake-model": {"upstreams": ["fake"], "upstream_model": "org/fake-13b"},
        },
    )
    return await gateway_factory(text)
