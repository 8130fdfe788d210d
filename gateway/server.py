"""One gateway process: its listeners, its lifecycle and its shutdown.

``Server.start`` serves the public and the admin listener on the sockets it is given (a worker's,
bound by the supervisor: see ``ports``) or binds them itself, exclusively, before anything else
starts; then the bundled mock worker when configured. ``Server.stop`` drains: readiness fails at
once, the listeners close, in-flight requests and streams get ``listen.drain_timeout`` seconds to
finish.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import ssl
import sys

from aiohttp import web

from gateway import ports
from gateway.app import build_runtime, create_admin_app, create_app
from gateway.clock import Clock
from gateway.config.reload import Outcome, Reloader, restart_needed
from gateway.config.schema import PERMISSIONS, Config
from gateway.runtime import Runtime
from gateway.web.protocol import QuietAppRunner

log = logging.getLogger("gateway.server")


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    tls = config.listen.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    return context


def _port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])


def tune_gc() -> None:
    """Everything built at start-up lives as long as the process: move it out of the collector's
    sight (``gc.freeze``), and collect the young generation less often than CPython's 700
    allocations, since a request's garbage is freed by reference counting anyway. The older
    generations keep their default pace: a collection scans every object of its generation, and
    with hundreds of open streams a rare, large gen-1 pass (20,000 x 50 before) stalled every
    stream for ~10 ms (bench: 512 paced streams, added gap p99 11.8 → 3.4 ms; ~2% CPU per
    request at saturation)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(2_000, 10, 10)
    release_free_memory()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system once start-up is done (glibc's
    ``malloc_trim``): the imports and the config's parsing leave freed blocks the idle process
    would otherwise keep resident (~0.5 MB). A no-op off Linux/glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return
    trim(0)


def warn_without_c_parser() -> None:
    """The pure-Python HTTP parser is slower and more lenient; say so at start."""
    from aiohttp import http_parser

    fast = getattr(http_parser, "HttpRequestParserC", None)
    if fast is None or http_parser.HttpRequestParser is not fast:
        log.warning(
            "aiohttp's C HTTP parser is not in use (AIOHTTP_NO_EXTENSIONS set, or no wheel "
            "for this platform): expect lower throughput and laxer request parsing"
        )


class Server:
    """The listeners of one process around one ``Runtime``."""

    def __init__(
        self, config: Config, clock: Clock | None = None, listeners: ports.Listeners | None = None
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.runtime: Runtime = build_runtime(config, clock)
        self._public: web.AppRunner | None = None
        self._admin: web.AppRunner | None = None
        self._mock: web.AppRunner | None = None
        self.port = 0
        self.admin_port = 0
        self.mock_port = 0
        self.reloader: Reloader | None = None

    async def start(self) -> None:
        config = self.config
        if self.listeners is None:  # first: a port in use must fail before anything started
            self.listeners = ports.bind_process(config)
        warn_without_c_parser()
        if config.mock_worker is not None:
            from gateway import mock_worker

            options = mock_worker.MockOptions(token_delay=config.mock_worker.token_delay)
            self._mock, self.mock_port = await mock_worker.start(
                options, config.mock_worker.host, config.mock_worker.port
            )
        public = QuietAppRunner(
            create_app(self.runtime),
            handler_cancellation=True,
            access_log=None,
            max_field_size=16384,  # a 10 KB bogus key still gets a 401 in JSON, not a parser 400
            # aiohttp arms this at connect and closes a connection still waiting for a whole
            # request head when it fires: it is the header timeout (slowloris), and the idle
            # keep-alive timeout too.
            keepalive_timeout=config.network.header_timeout,
            shutdown_timeout=config.listen.drain_timeout + 1.0,  # streams end at drain_timeout
        )
        await public.setup()
        self._public = public
        context = _ssl_context(config)
        for sock in self.listeners.public:
            await web.SockSite(public, sock, backlog=ports.BACKLOG, ssl_context=context).start()
        self.port = _port(public)
        admin = web.AppRunner(create_admin_app(self.runtime), access_log=None)
        await admin.setup()
        self._admin = admin
        for sock in self.listeners.admin:
            await web.SockSite(admin, sock).start()
        self.admin_port = _port(admin)
        if config.keys.demo:
            await self._issue_demo_key()
        metrics = self.runtime.metrics
        self.reloader = Reloader(
            config,
            self.runtime.apply,
            lambda ok: metrics.reloads.labels("ok" if ok else "failed").inc(),
        )
        self.runtime.reload = (
            self.reloader.reload if config.listen.workers <= 1 else (self._reload_every_worker)
        )
        self.reloader.watch()  # a source that is not a file (tests) never changes

    async def _issue_demo_key(self) -> None:
        """The embedded default's key: owner ``demo`` on the roomiest plan (said so, since other
        owners start on ``default_plan``), printed once to stdout (never to the log)."""
        lifecycle = self.runtime.lifecycle
        plans = self.config.plans
        roomy = next((p for p in plans.values() if p.monthly_tokens is None), None)
        plan = self.config.default_plan
        if roomy is not None:
            plan = await lifecycle.set_plan("demo", roomy.name)
        # every API the demo serves: chat, embeddings, audio, images (and vision)
        demo = {"name": "Demo key", "permissions": sorted(PERMISSIONS)}
        _, key = await lifecycle.create("demo", demo)
        base = f"http://{self.config.listen.host}:{self.port}"
        print(
            f"\nDemo key (owner demo on plan {plan!r}; other owners start on "
            f"{self.config.default_plan!r}; in memory, gone at exit):\n  {key}\n"
            f"Try it:\n  curl -N {base}/v1/chat/completions -H 'Authorization: Bearer {key}' "
            '-H \'Content-Type: application/json\' \\\n    -d \'{"model": "mock-model", '
            '"stream": true, "messages": [{"role": "user", "content": "Hello"}]}\'\n',
            flush=True,
        )

    async def stop(self) -> None:
        """Drain: readiness fails at once (the admin listener stays up to say so), the public
        listener closes and gives in-flight requests ``drain_timeout`` to finish, usage is
        flushed; then the admin listener and the mock worker close."""
        self.runtime.draining = True
        if self.reloader is not None:
            await self.reloader.stop()
        deadline = asyncio.get_running_loop().call_later(
            self.config.listen.drain_timeout, self._end_streams
        )
        try:
            await self._close()
        finally:
            deadline.cancel()

    async def _reload_every_worker(self, trigger: str) -> Outcome:
        """Several workers: validate here, then SIGHUP the supervisor, which passes it to every
        worker (this one included), so all of them swap the same file in."""
        assert self.reloader is not None
        new = await self.reloader.check(trigger)
        if isinstance(new, Outcome):
            return new
        os.kill(os.getppid(), signal.SIGHUP)
        return Outcome(True, [], restart_needed(self.reloader.current, new))

    def _end_streams(self) -> None:
        """The drain time is over: streams still relaying are ended with an error event (the
        handler writes it on cancellation), before aiohttp closes their connections."""
        for task in list(self.runtime.streams):
            task.cancel()

    async def _close(self) -> None:
        for runner in (self._public, self._admin, self._mock):
            if runner is not None:
                await runner.cleanup()
        self._public = self._admin = self._mock = None


async def serve(
    config: Config, listeners: ports.Listeners | None = None, announce: bool = True
) -> None:
    """Run until SIGTERM or SIGINT, then drain and return."""
    server = Server(config, listeners=listeners)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[object]] = set()

    def on_hangup() -> None:
        if server.reloader is not None:
            task = asyncio.create_task(server.reloader.reload("signal"))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    tune_gc()
    if announce:
        log.info(
            "listening",
            extra={"port": server.port, "admin_port": server.admin_port, "config": config.source},
        )
    await stop.wait()
    log.info("draining", extra={"drain_timeout": config.listen.drain_timeout})
    await server.stop()
