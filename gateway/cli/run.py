"""``gateway run``: load the config (``locate``), settle the worker count, bind the ports
(``ports``), settle the metrics mode, then serve (``workers``). A config error, or a port that
cannot be had, is reported before anything started (a port in one line naming its setting), exit
status 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import replace

from gateway import logs, ports
from gateway.config.load import DEFAULT_PATH, ConfigError, Source, load_file, locate
from gateway.config.sections import workers_problem

log = logging.getLogger("gateway.cli")
# What the default config (embedded, or config/gateway.yaml) reads each port from.
_PORT_VARIABLES = {
    "listen.port": "GATEWAY_PORT",
    "admin.port": "GATEWAY_ADMIN_PORT",
    "mock_worker.port": "GATEWAY_MOCK_PORT",
}


def _multiprocess_metrics() -> None:
    """Several workers: point prometheus_client at a shared directory before it is imported,
    so ``/metrics`` on any worker shows the sum of all."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")


def _announce(source: Source, workers: int) -> None:
    if source.embedded:
        log.info(
            f"no config given (--config, $GATEWAY_CONFIG) and no {DEFAULT_PATH} here: serving "
            "the embedded default; `gateway init` writes a copy to edit",
            extra={"config": source.path, "workers": workers},
        )
    else:
        log.info("starting", extra={"config": source.path, "workers": workers})


def _port_problem(source: Source, exc: ports.BindError) -> str:
    text = f"gateway run: {source.path}: {exc}"
    variable = _PORT_VARIABLES.get(exc.setting)
    if variable and (source.embedded or source.path == DEFAULT_PATH):
        text += f" (this config reads it from ${variable})"
    return text


def cmd_run(args: argparse.Namespace) -> int:
    source = locate(args.config)
    try:
        config = load_file(source.path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    count = args.workers or config.listen.workers
    problem = workers_problem(count, config.store)
    if problem:
        print(f"{source.path}: --workers: {problem}", file=sys.stderr)
        return 2
    config = replace(config, listen=replace(config.listen, workers=count))
    try:  # before anything starts or logs: a port in use is the one line said
        bound = [ports.bind_process(config)] if count == 1 else ports.bind_workers(config, count)
    except ports.BindError as exc:
        print(_port_problem(source, exc), file=sys.stderr)
        return 2
    logs.setup(config.log.level)
    _announce(source, count)
    if count > 1:
        _multiprocess_metrics()
    from gateway import workers  # after the metrics mode is settled

    return workers.run(config, bound)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="serve")
    run.add_argument(
        "--config",
        help=f"YAML file (default $GATEWAY_CONFIG, else {DEFAULT_PATH}, else the embedded default)",
    )
    run.add_argument("--workers", type=int, help="worker processes (default listen.workers)")
    run.set_defaults(func=cmd_run)
