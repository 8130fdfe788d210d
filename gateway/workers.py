"""Running the gateway: in this process (one worker) or as N forked worker processes, with
signals passed on and crashed workers restarted.

The ports are bound before (``ports``, called by ``gateway run``): exclusively for one process;
for N workers, one ``SO_REUSEPORT`` socket per worker and listener, bound by the supervisor after
checking that no other program holds the port, and kept by it for the workers it restarts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import time

from gateway import ports
from gateway.config.schema import Config
from gateway.server import serve

log = logging.getLogger("gateway.workers")


def _run_loop(config: Config, listeners: ports.Listeners) -> None:
    try:
        import uvloop

        uvloop.run(serve(config, listeners))
    except ImportError:  # uvloop is optional on platforms without it
        asyncio.run(serve(config, listeners))


def run(config: Config, listeners: list[ports.Listeners]) -> int:
    """Serve on the bound sockets (``ports``: one worker's, or one group per worker) until
    SIGTERM/SIGINT and the drain."""
    if len(listeners) <= 1:
        _run_loop(config, listeners[0])
        return 0
    return _supervise(config, listeners)


def _spawn(config: Config, groups: list[ports.Listeners], mine: ports.Listeners) -> int:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        code = 0
        try:
            ports.keep_only(groups, mine)
            _run_loop(config, mine)
        except BaseException:
            log.exception("worker failed")
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _supervise(config: Config, groups: list[ports.Listeners]) -> int:
    children = {_spawn(config, groups, group): group for group in groups}
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT) and not stopping:
            stopping = True
            for group in groups:  # the workers' own copies close as they drain
                group.close()
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    log.info("supervising", extra={"workers": len(groups), "pids": sorted(children)})
    failed = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        group = children.pop(pid, None)
        _forget_metrics_of(pid)
        if not stopping and group is not None:
            failed += 1
            log.error("worker exited; starting another", extra={"pid": pid, "status": status})
            time.sleep(min(5.0, 0.1 * failed))  # a crash loop must not spin the CPU
            if not stopping:  # a SIGTERM during the pause: do not start a worker nobody stops
                children[_spawn(config, groups, group)] = group  # on the sockets it left
    for group in groups:
        group.close()
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
