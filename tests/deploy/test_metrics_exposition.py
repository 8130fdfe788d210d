"""``promtool check metrics`` on real scrapes: a gateway in this process that served traffic of
every kind, and ``gateway run --workers 2`` (prometheus_client's multiprocess mode, as compose
and Kubernetes run it), whose one ``/metrics`` must count the requests of both workers."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import sys
import time
from typing import Any

import aiohttp

from gateway.server import Server
from tests.clients import KEYS_YAML, TEST_KEY
from tests.deploy import tools

READY_DEADLINE = 20.0
STOP_DEADLINE = 20.0


def check_metrics(promtool: str, text: str) -> None:
    done = tools.run([promtool, "check", "metrics"], stdin=text)
    findings = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and not findings, f"promtool check metrics:\n{findings}"


async def test_in_process_scrape_is_clean(promtool: str, gateway: Server) -> None:
    await tools.drive(gateway, ("mock-model", "mock-reasoner"))
    text = await tools.scrape(gateway.admin_port)
    assert "gateway_requests_total{" in text
    check_metrics(promtool, text)


async def test_busy_gateway_scrape_is_clean(promtool: str, busy_gateway: Server) -> None:
    """Every family with samples: store errors, buffered usage, upstream failures, reloads."""
    text = await tools.scrape(busy_gateway.admin_port)
    for name in ("gateway_store_errors_total{", "gateway_upstream_failures_total{"):
        assert name in text
    check_metrics(promtool, text)


async def test_two_workers_one_view(
    promtool: str, redis_url: str, mock: tuple[int, Any], tmp_path: pathlib.Path
) -> None:
    port, admin = tools.free_port(), tools.free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"listen: {{host: 127.0.0.1, port: {port}, drain_timeout: 2}}\n"
        f"admin: {{host: 127.0.0.1, port: {admin}}}\n"
        f"store: {{url: '{redis_url}'}}\n"
        f"upstreams: {{mock: {{url: 'http://127.0.0.1:{mock[0]}'}}}}\n"
        "models: {mock-model: {upstreams: [mock]}}\n"
        "log: {access: false}\n" + KEYS_YAML
    )
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    log = (tmp_path / "gateway.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "--config",
        str(config),
        "--workers",
        "2",
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        await _until_ready(admin, process)
        requests = 8
        # a new connection per request, so SO_REUSEPORT spreads them over both workers
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(requests):
                async with http.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json=tools.chat("mock-model"),
                    headers={"X-API-Key": TEST_KEY},
                ) as response:
                    assert response.status == 200, await response.text()
        assert len(list(metrics_dir.glob("counter_*.db"))) == 2, "both workers write metrics"
        text = await tools.scrape(admin)
        assert tools.sample_total(text, "gateway_requests_total") == requests
        check_metrics(promtool, text)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_DEADLINE)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()
    assert process.returncode == 0, (tmp_path / "gateway.log").read_text()[-2000:]


async def _until_ready(admin: int, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + READY_DEADLINE
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert process.returncode is None, "gateway run exited"
            try:
                async with http.get(f"http://127.0.0.1:{admin}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("gateway run --workers 2 did not become ready")
