"""Commands packed in RESP for the lane, as ``hiredis.pack_command`` packs them, but cheaper.

``hiredis.pack_command`` costs about 1,200 instructions an argument (measured under callgrind:
8 % of a governed request, ~52 arguments a request across its admission and settlement). Most
arguments repeat from request to request — a key's KEYS, its limits, the empty text of a limit
it does not have — so the packed form of each text is kept (``_KEPT``, emptied when full) and a
command is the join of its arguments' packed forms. A text seen once (a request id on its
admission) is packed here and kept: its settlement sends it again. Arguments that are not text
(bytes, numbers) are packed by hiredis itself, so every argument packs exactly as it would there
(``tests/store/test_resp.py`` holds the two equal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import hiredis

Arg = str | bytes | int | float
# hiredis' stub types the argument as a 1-tuple; it takes any number of arguments.
hiredis_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)

KEPT_MAX = 8192  # packed texts kept; emptied when full (a request adds a few unique ones)
# A command of fewer arguments is packed by hiredis whole: a short one (a GET, a stored
# response's SET with its one-off key and record) gains nothing from what is kept here.
FEW = 8
_KEPT: dict[str, bytes] = {}


def _packed(arg: Arg) -> bytes:
    """One argument's packed form: ``$<length>\\r\\n<bytes>\\r\\n``."""
    if isinstance(arg, str):
        kept = _KEPT.get(arg)
        if kept is None:
            data = arg.encode()  # a lone surrogate raises, as in hiredis
            kept = b"$%d\r\n%s\r\n" % (len(data), data)
            if len(_KEPT) >= KEPT_MAX:
                _KEPT.clear()
            _KEPT[arg] = kept
        return kept
    if isinstance(arg, bytes):  # as it is (a stored record: never hashed, copied once)
        return b"$%d\r\n%s\r\n" % (len(arg), arg)
    return hiredis_pack((arg,))[4:]  # "*1\r\n" and the argument as hiredis packs it


def pack(args: tuple[Arg, ...]) -> bytes:
    """``args`` as one RESP command, byte for byte what ``hiredis.pack_command`` gives."""
    if len(args) < FEW:
        return hiredis_pack(args)
    get = _KEPT.get  # only a text is looked up: bytes (a large record) are not hashed
    parts = [(get(a) if type(a) is str else None) or _packed(a) for a in args]
    parts.insert(0, b"*%d\r\n" % len(args))
    return b"".join(parts)
