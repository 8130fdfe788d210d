"""When this process says an upstream went down or came back: its own view of each upstream
(healthy or ejected, as the balancer and health checks see it), debounced. An upstream is
"down" once it has been ejected for ``down_after`` seconds without a break (a single failed
request ejects it for a second; that is no outage), and "up" at the first healthy look after
this process said "down". Whether that becomes an event is decided across processes in the
store (``EventStore.swap``): the first process to say it sends it. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Change = tuple[str, Literal["down", "up"]]


class UpstreamViews:
    def __init__(self) -> None:
        self._views: dict[str, bool] = {}  # name → healthy, as last seen or told
        self._ejected_since: dict[str, float] = {}  # name → monotonic time first seen ejected
        self._down: set[str] = set()  # names this process has said are down

    def tell(self, name: str, healthy: bool) -> None:
        self._views[name] = healthy

    def replace(self, views: Iterable[tuple[str, bool]]) -> None:
        """Every configured upstream's state (names no longer configured are forgotten)."""
        self._views = dict(views)
        for gone in set(self._ejected_since) - set(self._views):
            del self._ejected_since[gone]
        self._down &= set(self._views)

    def since(self, name: str) -> float | None:
        return self._ejected_since.get(name)

    def changes(self, now: float, down_after: float) -> list[Change]:
        """Upstreams to report: "down" on every look while down (the report keeps the shared
        state alive), "up" when one this process reported comes back, until ``said_up``."""
        out: list[Change] = []
        for name, healthy in self._views.items():
            if healthy:
                self._ejected_since.pop(name, None)
                if name in self._down:
                    out.append((name, "up"))
                continue
            since = self._ejected_since.setdefault(name, now)
            if now - since >= down_after:
                self._down.add(name)
                out.append((name, "down"))
        return out

    def said_up(self, name: str) -> None:
        """The "up" of ``name`` reached the store: stop reporting it."""
        self._down.discard(name)
