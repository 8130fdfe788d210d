"""Hot reload: read the config file again, validate it whole, and hand it over, or keep the
running config and say why not (log line, metric, the admin answer).

Triggers: SIGHUP, a change of the file (its mtime and size, polled every second: no inotify
dependency, works on every filesystem), and ``POST /admin/reload``. Settings that belong to
sockets and connections already made (``listen``, ``admin``, ``store``, ``mock_worker``) need a
restart; a reload that changes them applies the rest and names them in ``restart_required``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config.load import ConfigError, load_file
from gateway.config.schema import Config
from gateway.periodic import Periodic

log = logging.getLogger("gateway.reload")

RESTART_SECTIONS = ("listen", "admin", "store", "mock_worker")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    errors: list[str] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)

    def to_api(self) -> dict[str, object]:
        return {"ok": self.ok, "errors": self.errors, "restartRequired": self.restart_required}


def restart_needed(old: Config, new: Config) -> list[str]:
    """The changed settings a reload cannot apply to sockets and connections already made."""
    restart = [name for name in RESTART_SECTIONS if getattr(new, name) != getattr(old, name)]
    if {r.prefix for r in new.routes} != {r.prefix for r in old.routes}:
        restart.append("routes (new or removed prefixes)")
    return restart


def _fingerprint(path: str) -> tuple[float, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime, stat.st_size


class Reloader:
    def __init__(
        self,
        current: Config,
        apply: Callable[[Config], None],
        on_result: Callable[[bool], None] = lambda ok: None,
    ) -> None:
        self.current = current
        self.apply = apply
        self.on_result = on_result
        self._lock = asyncio.Lock()
        self._seen = _fingerprint(current.source)
        self._watch: Periodic | None = None

    async def check(self, trigger: str) -> Config | Outcome:
        """The file read and validated again: the new config, or the refusal (logged and
        counted) that leaves the running one in place."""
        try:
            return await asyncio.to_thread(load_file, self.current.source)
        except ConfigError as exc:
            log.error(
                "reload refused; the running config stays",
                extra={"trigger": trigger, "errors": exc.errors},
            )
            self.on_result(False)
            return Outcome(False, exc.errors)

    async def reload(self, trigger: str) -> Outcome:
        async with self._lock:
            self._seen = _fingerprint(self.current.source)
            new = await self.check(trigger)
            if isinstance(new, Outcome):
                return new
            restart = restart_needed(self.current, new)
            self.apply(new)
            self.current = new
            self.on_result(True)
            log.info("config reloaded", extra={"trigger": trigger, "restart_required": restart})
            return Outcome(True, [], restart)

    def watch(self, interval: float = 1.0) -> None:
        """Poll the file and reload when it changes."""
        self._watch = Periodic(interval, self._check_file).start()

    async def _check_file(self) -> None:
        seen = _fingerprint(self.current.source)
        if seen is not None and seen != self._seen:
            await self.reload("file")

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
