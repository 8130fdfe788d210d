"""Running the gateway: in this process (one worker) or as N forked worker processes sharing
the port through ``SO_REUSEPORT``, with signals passed on and crashed workers restarted."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import time

from gateway.config.schema import Config
from gateway.server import serve

log = logging.getLogger("gateway.workers")


def _run_loop(config: Config) -> None:
    try:
        import uvloop

        uvloop.run(serve(config))
    except ImportError:  # uvloop is optional on platforms without it
        asyncio.run(serve(config))


def run(config: Config, workers: int) -> int:
    if workers <= 1:
        _run_loop(config)
        return 0
    return _supervise(config, workers)


def _spawn(config: Config) -> int:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        code = 0
        try:
            _run_loop(config)
        except BaseException:
            log.exception("worker failed")
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _supervise(config: Config, workers: int) -> int:
    children = {_spawn(config) for _ in range(workers)}
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    log.info("supervising", extra={"workers": workers, "pids": sorted(children)})
    failed = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        _forget_metrics_of(pid)
        if not stopping:
            failed += 1
            log.error("worker exited; starting another", extra={"pid": pid, "status": status})
            time.sleep(min(5.0, 0.1 * failed))  # a crash loop must not spin the CPU
            if not stopping:  # a SIGTERM during the pause: do not start a worker nobody stops
                children.add(_spawn(config))
    _remove_metrics_dir()
    return 0


def _forget_metrics_of(pid: int) -> None:
    """A dead worker's live gauges must not count in the shared metrics view any more."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _remove_metrics_dir() -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(directory).startswith("gateway-metrics-"):  # ours, made by `gateway run`
        shutil.rmtree(directory, ignore_errors=True)
