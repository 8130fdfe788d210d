"""``attempts.Held``: an answering upstream is given back once, whoever releases it and however
often (a refusal read whole, a stream's end, a ``with`` block's end, an exception in it)."""

from __future__ import annotations

import pytest

from gateway.config.schema import Upstream
from gateway.proxy.attempts import Held


def _held(freed: list[str]) -> Held[str]:
    upstream = Upstream(name="u1", url="http://127.0.0.1:9")
    return Held(upstream, "answer", b"body", lambda u: freed.append(u.name))


def test_released_once_however_often() -> None:
    freed: list[str] = []
    held = _held(freed)
    held.release()
    held.release()
    with held:
        pass
    assert freed == ["u1"]


def test_a_with_block_gives_it_back_on_an_error() -> None:
    freed: list[str] = []
    with pytest.raises(RuntimeError), _held(freed) as held:
        assert held.body == b"body" and freed == []  # held inside the block
        raise RuntimeError("the client left")
    assert freed == ["u1"]
