"""Fixtures of the deploy checks: the Prometheus tools, and a gateway whose every metric has
samples (a working and a dead upstream, and a store that is down with ``on_error: open``, so
store errors and buffered usage are real too)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.server import Server
from tests.conftest import GatewayFactory, gateway_yaml
from tests.deploy import tools


@pytest.fixture
def promtool() -> str:
    return tools.tool("promtool")


@pytest.fixture
def prometheus() -> str:
    return tools.tool("prometheus")


@pytest.fixture
async def busy_gateway(gateway_factory: GatewayFactory, mock: tuple[int, Any]) -> Server:
    """A gateway that has served traffic of every kind, its store unreachable (``on_error:
    open``: requests are admitted, store errors counted, usage buffered)."""
    text = gateway_yaml(
        {
            "mock": f"http://127.0.0.1:{mock[0]}",
            "dead": f"http://127.0.0.1:{tools.free_port()}",
        },
        {
            "mock-model": {"upstreams": ["mock"]},
            "dead-model": {"upstreams": ["dead"]},
        },
        extra=(
            f"store: {{url: 'redis://127.0.0.1:{tools.free_port()}/0', on_error: open, "
            "timeout_ms: 100}\n"
        ),
    )
    server = await gateway_factory(text)
    await tools.drive(server, ("mock-model",), failing="dead-model")
    return server
