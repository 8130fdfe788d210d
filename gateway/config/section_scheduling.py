"""The reader of the ``scheduling`` section (the queue in front of full models) and of a plan's
place in it (``share``, ``priority``, ``max_queued``).

Kept apart from ``config.sections`` (which calls it) for the module-size rule.
"""

from __future__ import annotations

from typing import Any

from gateway.config import fields as lp
from gateway.config.fields import Node, Obj
from gateway.config.schema import Plan, Scheduling

MAX_WAIT = 3600.0  # an hour: past it a client should be told to come back, not kept


def read(o: Obj) -> Scheduling:
    out = Scheduling(**o.settings(Scheduling, max_wait=_wait, max_queue=lp.p_int(0)))
    o.done()
    return out


def plan_settings(p: Obj) -> dict[str, Any]:
    """A plan's ``share``, ``priority`` and ``max_queued``, as keywords of ``Plan``."""
    return p.settings(
        Plan,
        share=lp.p_float(0.0, exclusive=True),
        priority=lp.p_int(-1000, 1000),
        max_queued=lp.p_optional(lp.p_int(0)),
    )


def _wait(node: Node) -> float:
    value = lp.p_float(0.0)(node)
    if value > MAX_WAIT:
        raise lp.Invalid(f"must be at most {MAX_WAIT:g} seconds, got {value:g}")
    return value
