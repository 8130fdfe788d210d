"""The ``tracing:`` section, and a gateway configured to trace where the optional ``tracing``
extra is not installed: ``gateway check`` and ``gateway run`` name what to install, exit 2, and
start nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.load import ConfigError, parse_text
from gateway.config.schema import Tracing
from gateway.tracing import sdk_installed

BASE = "upstreams: {}\nmodels: {}\n"

# Runs the CLI as if the extra were not installed: every import of opentelemetry fails.
WITHOUT_SDK = """
import sys
class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NoOpenTelemetry())
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_tracing_section() -> None:
    assert parse_text(BASE, "t.yaml", env={}).tracing == Tracing()
    config = parse_text(
        BASE + "tracing: {otlp_endpoint: 'http://collector:4318/', sample_ratio: 0.1,"
        " service_name: edge, max_queue: 100}\n",
        "t.yaml",
        env={},
    )
    assert config.tracing == Tracing("http://collector:4318", 0.1, "edge", 100)
    empty = parse_text(BASE + "tracing: {otlp_endpoint: '${OTEL:-}'}\n", "t.yaml", env={})
    assert empty.tracing.otlp_endpoint is None
    for bad, path in [
        ("{sample_ratio: 1.5}", "tracing.sample_ratio"),
        ("{sample_ratio: -0.1}", "tracing.sample_ratio"),
        ("{otlp_endpoint: 'grpc://c:4317'}", "tracing.otlp_endpoint"),
        ("{max_queue: 0}", "tracing.max_queue"),
        ("{service_name: ''}", "tracing.service_name"),
        ("{headers: {}}", "tracing.headers"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(path)):
            parse_text(BASE + f"tracing: {bad}\n", "t.yaml", env={})


def run_without_sdk(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SDK, *argv], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", ["check", "run"])
def test_tracing_without_the_extra_names_what_to_install(command: str, tmp_path: Path) -> None:
    assert sdk_installed()  # here it is (the dev extra has it); the child process hides it
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "listen: {host: 127.0.0.1, port: 0}\nadmin: {host: 127.0.0.1, port: 0}\n"
        + BASE
        + "tracing:\n  otlp_endpoint: http://127.0.0.1:4318\n"
    )
    args = [command, str(path)] if command == "check" else [command, "--config", str(path)]
    out = run_without_sdk(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    expected = (
        f"{path}:6: tracing.otlp_endpoint: tracing needs the OpenTelemetry SDK and its OTLP/HTTP"
        " exporter, an optional extra that is not installed: pip install"
        " 'llm-edge-gateway[tracing]'"
    )
    assert expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr

    path.write_text(path.read_text().replace("http://127.0.0.1:4318", "''"))  # tracing off
    if command == "check":
        out = run_without_sdk("check", str(path))
        assert out.returncode == 0 and out.stdout.strip() == f"{path}: ok", out
