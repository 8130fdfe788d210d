"""The reader of the ``responses`` section (the Responses API's stored responses and hosted
tools) and of a model's ``responses`` mode.

Kept apart from ``config.sections`` (which calls it) for the module-size rule.
"""

from __future__ import annotations

from typing import cast

from gateway.config import fields as lp
from gateway.config.fields import Node, Obj
from gateway.config.schema import Responses, ResponsesMode

MIN_STORED_BYTES = 1024  # a smaller bound would store nothing useful
MAX_STORED_BYTES = 64 * 1_048_576


def read(o: Obj) -> Responses:
    out = Responses(
        **o.settings(
            Responses,
            ttl_days=lp.p_int(1, 3650),
            hosted_tools=lp.p_enum("drop", "reject"),
            max_stored_bytes=lp.p_int(MIN_STORED_BYTES, MAX_STORED_BYTES),
        )
    )
    o.done()
    return out


def mode(node: Node) -> ResponsesMode:
    """``models.<name>.responses``: ``translate`` (into chat) or ``native`` (the worker's own)."""
    return cast(ResponsesMode, lp.p_enum("translate", "native")(node))
