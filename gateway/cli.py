"""The ``gateway`` command: argparse → objects → run. No logic of its own."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

from gateway import __version__, cli_keys, logs
from gateway.config.load import ConfigError, load_file
from gateway.config.sections import workers_problem

DEFAULT_CONFIG = "config/gateway.yaml"


def _config_path(value: str | None) -> str:
    if value:
        return value
    env = os.environ.get("GATEWAY_CONFIG")
    if env:
        return env
    return DEFAULT_CONFIG


def cmd_check(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    try:
        load_file(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    print(f"{path}: ok")
    return 0


def _multiprocess_metrics() -> None:
    """Several workers: point prometheus_client at a shared directory before it is imported,
    so ``/metrics`` on any worker shows the sum of all."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")


def cmd_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    path = _config_path(args.config)
    try:
        config = load_file(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    count = args.workers or config.listen.workers
    problem = workers_problem(count, config.store)
    if problem:
        print(f"{path}: --workers: {problem}", file=sys.stderr)
        return 2
    config = replace(config, listen=replace(config.listen, workers=count))
    logs.setup(config.log.level)
    if count > 1:
        _multiprocess_metrics()
    from gateway import workers  # after the metrics mode is settled

    return workers.run(config, count)


def cmd_mock_worker(args: argparse.Namespace) -> int:
    from gateway import mock_worker

    logs.setup("info")
    options = mock_worker.MockOptions(
        token_delay=args.token_delay, first_token_delay=args.first_token_delay
    )
    mock_worker.run(args.host, args.port, options)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gateway", description="An edge gateway for LLM inference.")
    top.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve")
    run.add_argument("--config", help=f"YAML file (default $GATEWAY_CONFIG or {DEFAULT_CONFIG})")
    run.add_argument("--workers", type=int, help="worker processes (default listen.workers)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a config file; exit 0, or 2 listing every error")
    check.add_argument("--config")
    check.set_defaults(func=cmd_check)

    mock = sub.add_parser("mock-worker", help="a fake OpenAI-compatible inference worker")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8001)
    mock.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    mock.add_argument("--first-token-delay", type=float, default=0.0)
    mock.set_defaults(func=cmd_mock_worker)
    cli_keys.add_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))
