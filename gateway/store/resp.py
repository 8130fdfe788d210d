"""Commands packed in RESP for the lane, as ``hiredis.pack_command`` packs them, but cheaper.

``hiredis.pack_command`` costs about 1,200 instructions an argument (measured under callgrind:
8 % of a governed request, ~52 arguments a request across its admission and settlement). Most
arguments repeat from request to request — a key's KEYS, its limits, the empty text of a limit
it does not have — so the packed form of each text is kept (``_KEPT``, emptied when full) and a
command is the join of its arguments' packed forms, looked up in one C-level pass (``map`` over
the table's ``__getitem__``; a text not kept is packed by the table's ``__missing__``). A text
seen once (a request id on its admission) is packed there and kept: its settlement sends it
again. Arguments that are not text (bytes, numbers) are packed there too but never kept (1 and
1.0 hash alike, and a stored record is never kept), so every argument packs exactly as it would
in hiredis (``tests/store/test_resp.py`` holds the two equal).
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


class _Kept(dict[Arg, bytes]):
    """Texts' packed forms; looking up any other argument packs it without keeping it."""

    def __missing__(self, arg: Arg) -> bytes:
        """One argument's packed form: ``$<length>\\r\\n<bytes>\\r\\n``."""
        if type(arg) is str:
            data = arg.encode()  # a lone surrogate raises, as in hiredis
            packed = b"$%d\r\n%s\r\n" % (len(data), data)
            if len(self) >= KEPT_MAX:
                self.clear()
            self[arg] = packed
            return packed
        if isinstance(arg, bytes):  # as it is (a stored record: never kept, copied once)
            return b"$%d\r\n%s\r\n" % (len(arg), arg)
        return hiredis_pack((arg,))[4:]  # "*1\r\n" and the argument as hiredis packs it


_KEPT = _Kept()
_packed = _KEPT.__getitem__


def pack(args: tuple[Arg, ...]) -> bytes:
    """``args`` as one RESP command, byte for byte what ``hiredis.pack_command`` gives."""
    if len(args) < FEW:
        return hiredis_pack(args)
    parts = list(map(_packed, args))
    parts.insert(0, b"*%d\r\n" % len(args))
    return b"".join(parts)
