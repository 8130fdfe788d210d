"""``gateway keys ...`` run as a subprocess against a real gateway's admin listener: tables and
JSON, defaults from the config and the environment, errors, and no key where it must not be."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from gateway.auth.keys import sha256_hex
from gateway.server import Server
from tests.conftest import GatewayFactory
from tests.web import ADMIN_TOKEN, chat, config, public

KEY = re.compile(r"sk_gw_k[0-9a-f]{7}_[0-9A-Za-z]{30}")


@pytest.fixture
async def server(gateway_factory: GatewayFactory, mock: tuple[int, Any]) -> Server:
    return await gateway_factory(config(mock[0]))


async def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    """``python -m gateway keys ARGS``; the event loop keeps serving while it runs."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "keys",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, **(env or {})},
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def target(server: Server) -> list[str]:
    return ["--admin-url", f"http://127.0.0.1:{server.admin_port}", "--admin-token", ADMIN_TOKEN]


async def keys(server: Server, *args: str) -> str:
    """A successful command's stdout."""
    code, out, err = await run(*args, *target(server))
    assert (code, err) == (0, ""), err
    return out


async def test_create_list_show_update_revoke_and_delete(server: Server) -> None:
    out = await keys(
        server, "create", "--owner", "acme", "--name", "ci", "--permissions", "chat,vision",
        "--models", "mock-model", "--ip", "127.0.0.0/8", "--ip", "203.0.113.0/24",
        "--rpm", "60", "--concurrency", "4", "--daily", "1000", "--monthly", "20000",
        "--expires-in-days", "30",
    )  # fmt: skip
    (key,) = KEY.findall(out)
    key_id = key.split("_")[2]
    assert "only time the full key is shown" in out
    assert re.search(r"ip whitelist\s+127\.0\.0\.0/8,203\.0\.113\.0/24", out)
    assert await chat(server, key)

    table = (await keys(server, "list", "--owner", "acme")).splitlines()
    assert table[0].split() == [
        "ID", "NAME", "STATUS", "PREFIX", "PERMISSIONS", "RPM", "CREATED", "LAST", "USED"
    ]  # fmt: skip
    assert table[1].startswith(key_id) and table[0].index("STATUS") == table[1].index("ACTIVE")
    assert key not in "\n".join(table)
    listed = orjson.loads(await keys(server, "list", "--owner", "acme", "--json"))
    assert [r["id"] for r in listed] == [key_id] and listed[0]["rpmLimit"] == 60

    shown = await keys(server, "show", key_id)
    assert re.search(r"models\s+mock-model", shown) and re.search(r"daily limit\s+1000", shown)
    updated = await keys(server, "update", key_id, "--name", "renamed", "--rpm", "none")
    assert re.search(r"name\s+renamed", updated) and re.search(r"rpm limit\s+-", updated)

    revoked = await keys(server, "revoke", key_id, "--reason", "leaked in a log")
    assert re.search(r"status\s+REVOKED", revoked)
    assert re.search(r"revoked reason\s+leaked in a log", revoked)
    with pytest.raises(openai.AuthenticationError) as info:
        await chat(server, key)
    assert info.value.code == "key_revoked"
    assert re.search(r"status\s+ACTIVE", await keys(server, "reactivate", key_id))

    assert (await keys(server, "delete", key_id)).strip() == f"Deleted key {key_id}."
    assert (await keys(server, "list", "--owner", "acme")).strip() == "No keys."


async def test_usage_and_regenerate(server: Server) -> None:
    created = orjson.loads(await keys(server, "create", "--owner", "acme", "--json"))
    await chat(server, created["key"])
    out = await keys(server, "regenerate", created["id"])
    (new_key,) = KEY.findall(out)
    assert new_key != created["key"] and "only time" in out
    assert await chat(server, new_key)
    usage = orjson.loads(await keys(server, "usage", created["id"], "--days", "3", "--json"))
    assert usage["days"] == 3 and len(usage["daily"]) == 3
    lines = (await keys(server, "usage", created["id"], "--days", "2")).splitlines()
    assert lines[1].split() == ["DATE", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL", "ERRORS"]
    assert len(lines) == 5 and lines[-1].startswith("total")


async def test_api_errors_go_to_stderr_with_status_1(server: Server) -> None:
    code, out, err = await run("show", "k0000000", *target(server))
    assert (code, out) == (1, "")
    assert "There is no key 'k0000000'" in err and "404" in err
    code, out, err = await run(
        "list", "--owner", "acme", "--admin-url", f"http://127.0.0.1:{server.admin_port}"
    )
    assert code == 1 and "admin.token" in err
    code, _, err = await run("create", "--owner", "acme", "--ip", "nope", *target(server))
    assert code == 1 and "nope" in err
    code, _, err = await run("update", "k0000000", *target(server))
    assert code == 1 and "nothing to change" in err
    code, _, err = await run("usage", "k0000000", "--days", "91", *target(server))
    assert code == 2 and "--days" in err  # argparse refuses it before any request


async def test_a_gateway_that_is_not_there_is_named() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = await run("list", "--owner", "x", "--admin-url", f"http://127.0.0.1:{port}")
    assert (code, out) == (1, "")
    assert f"http://127.0.0.1:{port}" in err and "Traceback" not in err


async def test_defaults_come_from_the_config_and_the_environment(
    server: Server, mock: tuple[int, Any], tmp_path: Path
) -> None:
    await keys(server, "create", "--owner", "acme")
    text = config(mock[0]).replace(
        "admin: {host: 127.0.0.1, port: 0,", f"admin: {{host: 0.0.0.0, port: {server.admin_port},"
    )
    assert f"port: {server.admin_port}" in text
    (tmp_path / "gw.yaml").write_text(text)
    for args, env in [
        (["--config", "gw.yaml"], {}),
        ([], {"GATEWAY_CONFIG": str(tmp_path / "gw.yaml")}),
        (
            [],
            {
                "GATEWAY_ADMIN_URL": f"http://127.0.0.1:{server.admin_port}",
                "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
            },
        ),
    ]:
        code, out, err = await run("list", "--owner", "acme", *args, env=env, cwd=tmp_path)
        assert (code, err) == (0, ""), (args, env)
        assert "ACTIVE" in out
    code, _, err = await run("list", "--owner", "acme", "--config", "missing.yaml", cwd=tmp_path)
    assert code == 1 and "missing.yaml" in err


async def test_no_full_key_appears_outside_create_and_regenerate(
    server: Server, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Everything logged and printed while keys are made, used and managed, the CLI's output
    included, holds neither a full key nor its hash, except the answers that issue the key."""
    caplog.set_level(logging.DEBUG)
    api = public(server)
    first = (await api("POST", "/api/keys", {"name": "api"})).body
    await chat(server, first["key"])
    second = (await api("POST", f"/api/keys/{first['id']}/regenerate")).body
    await chat(server, second["key"])
    with pytest.raises(openai.AuthenticationError):
        await chat(server, first["key"])

    issuing = [await keys(server, "create", "--owner", "acme")]
    (third,) = KEY.findall(issuing[0])
    third_id = third.split("_")[2]
    await chat(server, third)
    issuing.append(await keys(server, "regenerate", third_id))
    (fourth,) = KEY.findall(issuing[1])
    await chat(server, fourth)

    seen = [
        (await api("GET", "/api/keys")).raw.decode(),
        (await api("GET", f"/api/keys/{first['id']}")).raw.decode(),
        (await api("POST", f"/api/keys/{first['id']}/revoke", {"reason": "done"})).raw.decode(),
    ]
    for args in (
        ["list", "--owner", "acme"],
        ["list", "--owner", "acme", "--json"],
        ["show", third_id],
        ["usage", third_id],
        ["revoke", third_id],
    ):
        code, out, err = await run(*args, *target(server))
        assert code == 0, err
        seen += [out, err]
    captured = capfd.readouterr()
    seen += [caplog.text, captured.out, captured.err]
    everything = "\n".join(seen)
    assert len(everything) > 1000  # the logs and outputs were really collected
    for key in (first["key"], second["key"], third, fourth):
        assert key not in everything
        assert sha256_hex(key) not in everything
    assert third in issuing[0] and fourth in issuing[1]


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_the_readme_flow_on_both_stores(
    gateway_factory: GatewayFactory,
    mock: tuple[int, Any],
    store: str,
    request: pytest.FixtureRequest,
) -> None:
    """Create a key with the CLI, call through the openai SDK, revoke it, see the next call
    refused: on the memory store and on Redis."""
    url = "memory://" if store == "memory" else request.getfixturevalue("redis_url")
    server = await gateway_factory(config(mock[0], f"store: {{url: '{url}'}}\n"))
    (key,) = KEY.findall(await keys(server, "create", "--owner", "readme", "--name", "first"))
    assert await chat(server, key)
    await keys(server, "revoke", key.split("_")[2], "--reason", "done with it")
    with pytest.raises(openai.AuthenticationError) as refused:
        await chat(server, key)
    assert refused.value.code == "key_revoked"


async def test_budgets_and_tpm_from_the_command_line(server: Server) -> None:
    """The budget limits are options of create and update: dollars and tokens a minute."""
    out = await keys(
        server, "create", "--owner", "acme", "--tpm", "5000", "--daily-budget", "2.5",
        "--monthly-budget", "40",
    )  # fmt: skip
    (key,) = KEY.findall(out)
    key_id = key.split("_")[2]
    assert re.search(r"tpm limit\s+5000", out) and re.search(r"daily budget usd\s+2\.5", out)
    updated = await keys(server, "update", key_id, "--daily-budget", "none", "--tpm", "100")
    assert re.search(r"daily budget usd\s+-", updated) and re.search(r"tpm limit\s+100", updated)
    shown = orjson.loads(await keys(server, "show", key_id, "--json"))
    assert (shown["tpmLimit"], shown["dailyBudgetUsd"], shown["monthlyBudgetUsd"]) == (
        100,
        None,
        40.0,
    )
