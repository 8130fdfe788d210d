"""A watch over the whole test session: every full key the gateway issues is remembered, and
everything the gateway logs, writes to the access log or sends as an error body is kept; at the
end of the session none of those texts may contain any of those keys (docs/security.md:
never a secret).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway import logs
from gateway.auth import keys
from gateway.web import admin_api, middlewares


class Watch:
    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.texts: list[str] = []

    def leaks(self) -> list[str]:
        return [
            f"{secret[:12]}… in {text[:160]!r}"
            for text in self.texts
            for secret in self.secrets
            if secret in text
        ]


class _Keep(logging.Handler):
    def __init__(self, watch: Watch) -> None:
        super().__init__(logging.DEBUG)
        self.watch = watch
        self.setFormatter(logs.JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.watch.texts.append(self.format(record))


def install(extra_secrets: set[str]) -> Iterator[Watch]:
    watch = Watch()
    watch.secrets |= extra_secrets
    patch = pytest.MonkeyPatch()
    issue: Callable[..., str] = keys.issue

    def remembering_issue(*args: Any, **kwargs: Any) -> str:
        key = issue(*args, **kwargs)
        watch.secrets.add(key)
        return key

    patch.setattr(keys, "issue", remembering_issue)
    write = logs.AccessLog.write

    def keeping_write(self: logs.AccessLog, entry: dict[str, Any]) -> None:
        write(self, entry)
        watch.texts.append(repr(entry))

    patch.setattr(logs.AccessLog, "write", keeping_write)
    respond = middlewares.error_response

    def keeping_error(err: Any, anthropic: bool) -> Any:
        response = respond(err, anthropic)
        watch.texts.append(bytes(response.body).decode("utf-8", "replace"))
        return response

    patch.setattr(middlewares, "error_response", keeping_error)
    patch.setattr(admin_api, "error_response", keeping_error)
    handler = _Keep(watch)
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        patch.undo()
