"""Fixtures of the real-agent tests: the scripted worker, the proxy trap and a gateway in front of
the worker; every test gets its own, on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.server import Server
from tests.agents.support import Recorder, Trap, agents_yaml
from tests.agents.worker import Reply, ScriptedWorker
from tests.conftest import GatewayFactory


@pytest.fixture
async def worker() -> AsyncIterator[ScriptedWorker]:
    scripted = ScriptedWorker(lambda body: Reply(text="(no plan)"))
    await scripted.start()
    yield scripted
    await scripted.stop()


@pytest.fixture
async def trap() -> AsyncIterator[Trap]:
    """Where the agents' proxy variables point; a test asserts no connection came."""
    listener = Trap()
    await listener.start()
    yield listener
    await listener.stop()


@pytest.fixture
async def agent_gateway(gateway_factory: GatewayFactory, worker: ScriptedWorker) -> Server:
    return await gateway_factory(agents_yaml(worker.url))


@pytest.fixture
async def recorder(agent_gateway: Server) -> AsyncIterator[Recorder]:
    """Between the agent and the gateway: keeps what the agent sent."""
    keeper = Recorder(f"http://127.0.0.1:{agent_gateway.port}")
    await keeper.start()
    yield keeper
    await keeper.stop()
