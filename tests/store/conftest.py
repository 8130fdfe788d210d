"""Real Redis for the store tests: a standalone server and a 3-master Cluster, started once per
session on free ports (``tests.redis_server``) and emptied before each test that uses them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import redis_server
from tests.redis_server import RedisClusterProcesses, RedisServer


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisServer]:
    if not redis_server.available():
        pytest.skip("redis-server is not installed")
    server = redis_server.start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster_processes() -> Iterator[RedisClusterProcesses]:
    if not redis_server.available():
        pytest.skip("redis-server is not installed")
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
