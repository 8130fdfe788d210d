"""The commands a new user meets in the first hour, run as the real ``gateway`` command: the
embedded default from any directory and ``gateway init``; ``gateway check``'s one-line answers;
``gateway owners set/show`` against a real gateway; the store watch's warnings."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import subprocess
import sys
from typing import Any

import orjson
import pytest

from gateway.config.load import embedded_text, load_file
from gateway.server import Server
from tests.conftest import GatewayFactory
from tests.test_cli_keys import KEY, target
from tests.web import ADMIN_TOKEN, call, chat, config

ROOT = pathlib.Path(__file__).resolve().parent.parent
GATEWAY = os.path.join(os.path.dirname(sys.executable), "gateway")


def gateway(
    *args: str, cwd: pathlib.Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    done = subprocess.run(
        [GATEWAY, *args], cwd=cwd, env={**clean, **(env or {})}, capture_output=True, timeout=60
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def agateway(*args: str) -> tuple[int, str, str]:
    """``gateway ARGS`` while this event loop keeps serving an in-process gateway."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = await asyncio.create_subprocess_exec(
        GATEWAY, *args, env=clean, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- the embedded default and gateway init -------------------------------------------------------
def test_the_repository_default_is_the_embedded_one() -> None:
    assert (ROOT / "config" / "gateway.yaml").read_text(encoding="utf-8") == embedded_text()


def test_any_directory_has_the_embedded_default_and_init_writes_a_copy(
    tmp_path: pathlib.Path,
) -> None:
    code, out, err = gateway("check", cwd=tmp_path)
    assert (code, err) == (0, "") and "(the embedded default)" in out, out + err
    code, out, err = gateway("init", cwd=tmp_path)
    assert (code, err) == (0, "") and "config/gateway.yaml" in out
    written = tmp_path / "config" / "gateway.yaml"
    assert written.read_text(encoding="utf-8") == embedded_text()
    assert "# " in written.read_text(encoding="utf-8")  # commented, to be edited
    code, out, err = gateway("check", cwd=tmp_path)
    assert (code, out) == (0, "config/gateway.yaml: ok\n"), err
    code, _, err = gateway("init", cwd=tmp_path)
    assert code == 1 and "exists" in err and "--force" in err
    code, _, err = gateway("init", "elsewhere/gw.yaml", cwd=tmp_path)
    assert code == 0, err
    assert gateway("check", "elsewhere/gw.yaml", cwd=tmp_path)[:2] == (0, "elsewhere/gw.yaml: ok\n")


# -- gateway check: one answer per mistake --------------------------------------------------------
def test_a_default_plan_that_names_no_plan_is_an_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "gw.yaml").write_text("default_plan: gold\n")
    code, out, err = gateway("check", "gw.yaml", cwd=tmp_path)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "gw.yaml:1: default_plan: 'gold' is not a plan: with no plans section the only plan is "
        "'free'; define it under plans (plans: {gold: {...}})"
    ]
    (tmp_path / "ok.yaml").write_text("default_plan: free\n")
    assert gateway("check", "ok.yaml", cwd=tmp_path)[0] == 0


def test_an_unset_variable_is_named_once_and_alone() -> None:
    code, out, err = gateway("check", "deploy/gateway.compose.yaml", cwd=ROOT)
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("deploy/gateway.compose.yaml:")
    assert "admin.token: environment variable GATEWAY_ADMIN_TOKEN is not set" in line
    env = {"GATEWAY_ADMIN_TOKEN": "t" * 32}
    assert gateway("check", "deploy/gateway.compose.yaml", cwd=ROOT, env=env)[0] == 0


def test_a_variable_missing_in_two_places_is_named_once(tmp_path: pathlib.Path) -> None:
    (tmp_path / "gw.yaml").write_text(
        'admin: {host: 0.0.0.0, token: "${TOKEN:?set TOKEN}"}\n'
        'upstreams: {u: {url: "${TOKEN:?set TOKEN}"}}\nmodels: {m: {upstreams: [u]}}\n'
    )
    code, _, err = gateway("check", "gw.yaml", cwd=tmp_path)
    assert code == 2
    assert err.splitlines() == [
        "gw.yaml:1: admin.token: environment variable TOKEN is not set: set TOKEN"
    ]


# -- gateway owners ------------------------------------------------------------------------------
PLANS = """
plans:
  free: {max_keys: 1, monthly_tokens: 1000, rpm: 600}
  pro: {max_keys: 10, monthly_tokens: 50000, rpm: 40000}
default_plan: free
"""


@pytest.fixture
async def server(gateway_factory: GatewayFactory, mock: tuple[int, Any]) -> Server:
    return await gateway_factory(config(mock[0], PLANS))


async def test_owners_set_and_show_through_the_admin_api(server: Server) -> None:
    code, out, err = await agateway("owners", "show", "acme", *target(server))
    assert code == 0, err
    assert "free (the default_plan)" in out and "0 of 1 keys" in out

    code, out, err = await agateway("owners", "set", "acme", "--plan", "pro", *target(server))
    assert (code, out, err) == (0, "Owner acme is now on plan pro.\n", "")
    for _ in range(2):
        code, out, err = await agateway("keys", "create", "--owner", "acme", *target(server))
        assert code == 0, err
    await chat(server, KEY.findall(out)[0])

    code, out, err = await agateway("owners", "show", "acme", "--json", *target(server))
    view = orjson.loads(out)
    assert view["plan"] == "pro" and view["planSource"] == "owner"
    assert view["limits"] == {
        "maxKeys": 10,
        "monthlyTokens": 50000,
        "rpm": 40000,
        "tpm": None,
        "monthlyBudgetUsd": None,
        "budgetSource": "plan",
        "overage": "block",
    }
    assert view["keys"] == {"total": 2, "active": 2}
    assert view["usage"]["requests"] == 1 and view["usage"]["tokens"] > 0
    code, out, _ = await agateway("owners", "show", "acme", *target(server))
    assert "pro (set for this owner)" in out and "2 of 10 keys, 2 active" in out
    assert "of 50,000 tokens in " in out and "40,000 requests a minute" in out


async def test_owners_errors_say_what_to_do(server: Server) -> None:
    code, out, err = await agateway("owners", "set", "acme", "--plan", "gold", *target(server))
    assert code == 1 and out == ""
    assert "'plan' must be one of free, pro" in err and "Traceback" not in err
    no_token = await call(server.admin_port, "GET", "/admin/owners/acme")
    assert no_token.status == 401 and no_token.code == "invalid_admin_token"
    with_token = await call(
        server.admin_port,
        "GET",
        "/admin/owners/acme",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert with_token.status == 200 and with_token.body["plan"] == "free"


# -- the store watch ------------------------------------------------------------------------------
async def test_an_unreachable_store_is_a_warning_at_start_and_on_every_change(
    gateway_factory: GatewayFactory, mock: tuple[int, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from tests.redis_server import free_port

    caplog.set_level(logging.INFO, logger="gateway.store")
    port = free_port()
    server = await gateway_factory(
        config(
            mock[0], f"store: {{url: 'redis://user:sekrit@127.0.0.1:{port}/0', timeout_ms: 100}}\n"
        )
    )
    warned = [r for r in caplog.records if r.name == "gateway.store"]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    message = warned[0].getMessage()
    assert f"store unreachable: redis://127.0.0.1:{port}/0" in message
    assert "503 store_unavailable" in message and "sekrit" not in message

    from gateway.web.admin import StoreWatch

    watch = StoreWatch(server.runtime)
    watch.reachable = False  # as the app's watch left it
    store = server.runtime.store
    ping = store.ping
    calls: list[str] = []

    async def fine() -> None:
        calls.append("ping")

    store.ping = fine  # type: ignore[method-assign]
    await watch.check()
    await watch.check()  # no change, no line
    store.ping = ping  # type: ignore[method-assign]
    await watch.check()
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.store"][1:]
    assert lines[0] == f"store reachable again: redis://127.0.0.1:{port}/0"
    assert lines[1].startswith("store unreachable") and len(lines) == 2


def test_the_redis_example_loads_with_its_token_and_names_it_without(
    tmp_path: pathlib.Path,
) -> None:
    example = "config/examples/redis-multiworker.yaml"
    config_ = load_file(str(ROOT / example), {"GATEWAY_ADMIN_TOKEN": "t" * 32})
    assert config_.listen.workers == 4 and config_.listen.host == "127.0.0.1"
    assert config_.upstreams["mock"].url == "http://127.0.0.1:8001"  # `gateway mock-worker`
    code, _, err = gateway("check", example, cwd=ROOT)
    assert code == 2 and len(err.splitlines()) == 1 and "GATEWAY_ADMIN_TOKEN" in err
