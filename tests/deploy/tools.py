"""What the deploy checks share: finding (or installing) Debian's Prometheus tools, driving a
real gateway so its metrics have samples, scraping it, and reading PromQL.

``promtool`` and ``prometheus`` come from Debian's ``prometheus`` package, which ``scripts/test``
installs. When they are missing here, one attempt is made to install them (as root, with apt);
a test skips only when that is impossible too (and fails under ``CI``, like the Redis tests).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.server import Server
from tests.clients import AUTH

INSTALL_TIMEOUT = 100.0


@functools.cache
def _install_prometheus() -> str:
    """Try once per session to install Debian's prometheus package; what happened, for a skip."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "not root, or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for args in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
        ):
            subprocess.run(args, env=env, capture_output=True, timeout=INSTALL_TIMEOUT, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"apt-get failed: {exc}"
    if os.path.isdir("/run/systemd/system"):  # the package's daemon would hold port 9090
        subprocess.run(
            ["systemctl", "disable", "--now", "prometheus"], capture_output=True, timeout=30
        )
    return "installed"


def tool(name: str) -> str:
    """The path of ``promtool`` or ``prometheus``; installs Debian's package if it can."""
    found = shutil.which(name)
    if found is None:
        outcome = _install_prometheus()
        found = shutil.which(name)
        if found is None:
            reason = (
                f"{name} is missing and Debian's prometheus package cannot be installed here "
                f"({outcome}); scripts/test installs it"
            )
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat(model: str, stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "stream": stream,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hello"}],
    }


async def drive(server: Server, models: tuple[str, ...], failing: str | None = None) -> int:
    """Requests of every kind the metrics describe: answered and streamed (both dialects),
    refused (no key, unknown model), and, with ``failing``, one to a dead upstream; then a
    reload of a config file that does not exist (a failed reload). Returns how many requests
    the public listener answered."""
    base = f"http://127.0.0.1:{server.port}"
    answered = 0
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: dict[str, Any], headers: dict[str, str]) -> int:
            nonlocal answered
            async with http.post(base + path, json=body, headers=headers) as response:
                await response.read()
                answered += 1
                return response.status

        for model in models:
            assert await post("/v1/chat/completions", chat(model), AUTH) == 200
            assert await post("/v1/chat/completions", chat(model, stream=True), AUTH) == 200
            assert await post("/v1/messages", chat(model, stream=True), AUTH) == 200
        assert await post("/v1/chat/completions", chat(models[0]), {}) == 401  # no key
        assert await post("/v1/chat/completions", chat("no-such-model"), AUTH) == 404
        if failing is not None:
            assert await post("/v1/chat/completions", chat(failing), AUTH) in (502, 503)
        admin = f"http://127.0.0.1:{server.admin_port}"
        async with http.post(admin + "/admin/reload") as response:
            assert response.status == 422, "the test config has no file: its reload fails"
    return answered


async def scrape(admin_port: int) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{admin_port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return await response.text()


def exposed(text: str) -> dict[str, set[str]]:
    """Every sample name of a scrape with the label names it carries."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def sample_total(text: str, name: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


# --- PromQL, just enough to check names ---------------------------------------------------------
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_METRIC = re.compile(r"\b(gateway_[a-z0-9_]+)\b")
GENERIC_LABELS = frozenset({"job", "instance", "le", "__name__"})


def promql_metrics(expr: str) -> set[str]:
    """The ``gateway_*`` metric names an expression selects (strings left out)."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def promql_labels(expr: str) -> set[str]:
    """The label names an expression groups or matches by, except the generic ones."""
    bare = _STRING.sub('""', expr)
    names: set[str] = set()
    for group in _GROUPING.findall(bare):
        names.update(n.strip() for n in group.split(",") if n.strip())
    for selector in re.findall(r"\{([^}]*)\}", bare):
        names.update(_MATCHER.findall(selector))
    return names - GENERIC_LABELS


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as plain PromQL: Grafana's variables replaced by what they stand for."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)


def run(
    args: list[str], stdin: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
