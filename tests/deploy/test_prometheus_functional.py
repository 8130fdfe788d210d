"""A real Prometheus (Debian's binary) scrapes a real gateway's admin listener every second;
after requests through the gateway, Prometheus' query API reports exactly that many, and every
query of the Grafana dashboard evaluates without error against it."""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from typing import Any

import aiohttp
import yaml

from gateway.server import Server
from tests.clients import AUTH
from tests.deploy import tools

DASHBOARD = pathlib.Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/gateway.json"
DEADLINE = 15.0
REQUESTS = 5


async def test_prometheus_counts_the_requests(
    prometheus: str, gateway: Server, tmp_path: pathlib.Path
) -> None:
    port = tools.free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "gateway",
                        "static_configs": [{"targets": [f"127.0.0.1:{gateway.admin_port}"]}],
                    }
                ],
            }
        )
    )
    log = (tmp_path / "prometheus.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=log,
        stderr=log,
    )
    api = f"http://127.0.0.1:{port}/api/v1/query"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(REQUESTS):
                async with http.post(
                    f"http://127.0.0.1:{gateway.port}/v1/chat/completions",
                    json=tools.chat("mock-model"),
                    headers=AUTH,
                ) as response:
                    assert response.status == 200
            seen = await _poll(http, api, "sum(gateway_requests_total)", process, REQUESTS)
            assert seen == REQUESTS, f"Prometheus saw {seen} requests, not {REQUESTS}"
            for title, expr in _dashboard_queries():
                answer = await _query(http, api, tools.grafana_to_promql(expr))
                assert answer["status"] == "success", f"{title}: {answer}"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def _query(http: aiohttp.ClientSession, api: str, expr: str) -> dict[str, Any]:
    async with http.get(api, params={"query": expr}) as response:
        answer: dict[str, Any] = await response.json()
        return answer


async def _poll(
    http: aiohttp.ClientSession,
    api: str,
    expr: str,
    process: asyncio.subprocess.Process,
    expected: float,
) -> float | None:
    """The query's value once it equals ``expected``, or the last value at the deadline."""
    deadline = time.monotonic() + DEADLINE
    value = None
    while time.monotonic() < deadline:
        assert process.returncode is None, "prometheus exited; see prometheus.log"
        try:
            answer = await _query(http, api, expr)
        except aiohttp.ClientError:
            answer = {}  # not listening yet
        result = answer.get("data", {}).get("result", [])
        if result:
            value = float(result[0]["value"][1])
            if value == expected:
                return value
        await asyncio.sleep(0.1)
    return value


def _dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
