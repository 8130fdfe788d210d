"""Hot reload: a changed file is swapped in whole; a broken one leaves the running config in
place and is reported; requests in flight are not disturbed."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import aiohttp

from gateway.config.load import load_file
from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml


async def model_ids(server: Server) -> list[str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/v1/models", headers=AUTH) as r,
    ):
        return [m["id"] for m in (await r.json())["data"]]


async def metric(server: Server, line_start: str) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.admin_port}/metrics") as r,
    ):
        for line in (await r.text()).splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def eventually(check: Any, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.05)


async def test_file_change_reloads_and_a_broken_file_is_refused(
    tmp_path: pathlib.Path, mock: Any
) -> None:
    url = f"http://127.0.0.1:{mock[0]}"
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml({"mock": url}, {"first": {"upstreams": ["mock"]}}))
    server = Server(load_file(str(path), env={}))
    await server.start()
    try:
        assert await model_ids(server) == ["first"]
        path.write_text(
            gateway_yaml(
                {"mock": url}, {"first": {"upstreams": ["mock"]}, "second": {"upstreams": ["mock"]}}
            )
        )

        async def has_second() -> bool:
            return await model_ids(server) == ["first", "second"]

        await eventually(has_second)
        ok_before = await metric(server, 'gateway_config_reloads_total{result="ok"}')
        path.write_text("listen: {port: nope}\n")
        assert server.reloader is not None
        outcome = await server.reloader.reload("test")
        assert not outcome.ok
        assert outcome.errors == [f"{path}:1: listen.port: expected a whole number ≥ 0, got 'nope'"]
        assert await model_ids(server) == ["first", "second"]
        assert await metric(server, 'gateway_config_reloads_total{result="failed"}') >= 1
        assert await metric(server, 'gateway_config_reloads_total{result="ok"}') == ok_before
    finally:
        await server.stop()


async def test_streams_in_flight_survive_a_reload(tmp_path: pathlib.Path, mock: Any) -> None:
    url = f"http://127.0.0.1:{mock[0]}"
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml({"mock": url}, {"m": {"upstreams": ["mock"]}}))
    server = Server(load_file(str(path), env={}))
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions",
                json={
                    "model": "m",
                    "stream": True,
                    "messages": [{"role": "user", "content": "say:30"}],
                },
                headers={**AUTH, "x-mock-token-delay": "0.02"},
            )
            assert b"data:" in await response.content.readany()
            path.write_text(gateway_yaml({"mock": url}, {"other": {"upstreams": ["mock"]}}))
            assert server.reloader is not None
            assert (await server.reloader.reload("test")).ok
            body = await response.read()
            assert body.rstrip().endswith(b"data: [DONE]")
            response.close()
        assert await model_ids(server) == ["other"]
    finally:
        await server.stop()


async def test_admin_reload_answers_with_the_outcome(tmp_path: pathlib.Path, mock: Any) -> None:
    url = f"http://127.0.0.1:{mock[0]}"
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml({"mock": url}, {"a": {"upstreams": ["mock"]}}, admin_token="t0k"))
    server = Server(load_file(str(path), env={}))
    await server.start()
    admin = f"http://127.0.0.1:{server.admin_port}/admin/reload"
    auth = {"Authorization": "Bearer t0k"}
    try:
        async with aiohttp.ClientSession() as http:
            path.write_text(
                gateway_yaml(
                    {"mock": url},
                    {"b": {"upstreams": ["mock"]}},
                    admin_token="t0k",
                    extra="listen: {port: 1}\n",
                )
            )
            async with http.post(admin, headers=auth) as r:
                assert r.status == 422  # two listen sections: refused, nothing changes
                assert "appears twice" in (await r.json())["errors"][0]
            path.write_text(
                gateway_yaml({"mock": url}, {"b": {"upstreams": ["mock"]}}, admin_token="t0k")
            )
            async with http.post(admin, headers=auth) as r:
                assert r.status == 200
                assert await r.json() == {"ok": True, "errors": [], "restartRequired": []}
        assert await model_ids(server) == ["b"]
    finally:
        await server.stop()


async def test_a_new_route_prefix_is_reported_as_needing_a_restart(
    tmp_path: pathlib.Path, mock: Any
) -> None:
    url = f"http://127.0.0.1:{mock[0]}"
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml({"mock": url}, {"m": {"upstreams": ["mock"]}}))
    server = Server(load_file(str(path), env={}))
    await server.start()
    try:
        path.write_text(
            gateway_yaml(
                {"mock": url},
                {"m": {"upstreams": ["mock"]}},
                extra="routes: [{prefix: /files/, upstream: mock}]\n",
            )
        )
        assert server.reloader is not None
        outcome = await server.reloader.reload("test")
        assert outcome.ok
        assert outcome.restart_required == ["routes (new or removed prefixes)"]
    finally:
        await server.stop()
