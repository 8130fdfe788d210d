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

from collections.abc import Callable, Iterator, Sequence
from typing import cast, overload

import hiredis

Arg = str | bytes | int | float
# hiredis' stub types the argument as a 1-tuple; it takes any number of arguments.
hiredis_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)

KEPT_MAX = 8192  # packed texts kept; emptied when full (a request adds a few unique ones)
# A command of fewer arguments is packed by hiredis whole: a short one (a GET, a stored
# response's SET with its one-off key and record) gains nothing from what is kept here.
FEW = 8


class _Kept(dict["Arg | Run", bytes]):
    """Texts' packed forms, and kept runs'; looking up any other argument packs it without
    keeping it."""

    def __missing__(self, arg: Arg | Run) -> bytes:
        """One argument's packed form: ``$<length>\\r\\n<bytes>\\r\\n``."""
        if type(arg) is str:
            data = arg.encode()  # a lone surrogate raises, as in hiredis
            return self._keep(arg, b"$%d\r\n%s\r\n" % (len(data), data))
        if type(arg) is Run:  # a run a codec keeps (by identity: it equals no text)
            return self._keep(arg, arg.wire)
        if isinstance(arg, bytes):  # as it is (a stored record: never kept, copied once)
            return b"$%d\r\n%s\r\n" % (len(arg), arg)
        return hiredis_pack((cast(Arg, arg),))[4:]  # "*1\r\n" and the argument as hiredis packs it

    def _keep(self, arg: str | Run, packed: bytes) -> bytes:
        if len(self) >= KEPT_MAX:
            self.clear()
        self[arg] = packed
        return packed


_KEPT = _Kept()
_packed = _KEPT.__getitem__


def pack(args: tuple[Arg, ...]) -> bytes:
    """``args`` as one RESP command, byte for byte what ``hiredis.pack_command`` gives."""
    if len(args) < FEW:
        return hiredis_pack(args)
    parts = list(map(_packed, args))
    parts.insert(0, b"*%d\r\n" % len(args))
    return b"".join(parts)


class Run(Sequence[str]):
    """Texts a command sends one after the other, with their packed form, made once: a script
    call's KEYS or ARGV, from parts (texts, and runs a codec keeps: a key's KEYS, its limits,
    looked up by identity among the kept texts). ``size``: the texts in ``parts`` (given when
    a part is a run). Its texts are made only when read (redis-py's calls, not the lane's)."""

    __slots__ = ("_texts", "parts", "size", "wire")

    def __init__(self, parts: Sequence[str | Run], size: int | None = None) -> None:
        self.parts = parts
        self.size = len(parts) if size is None else size
        self.wire = b"".join(map(_packed, parts))
        self._texts: tuple[str, ...] | None = None

    @property
    def texts(self) -> tuple[str, ...]:
        if self._texts is None:
            flat: list[str] = []
            for part in self.parts:
                if type(part) is Run:
                    flat += part.texts
                else:
                    flat.append(cast(str, part))
            self._texts = tuple(flat)
        return self._texts

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self.texts[index]


_EVALSHA = _packed("EVALSHA")


def evalsha(sha: str, keys: Sequence[str], args: Sequence[str]) -> bytes:
    """``EVALSHA sha len(keys) *keys *args`` packed; KEYS and ARGV as runs are joined whole."""
    if type(keys) is Run and type(args) is Run:
        head = b"*%d\r\n" % (3 + keys.size + args.size)
        count = _packed(str(keys.size))
        return b"".join((head, _EVALSHA, _packed(sha), count, keys.wire, args.wire))
    return pack(("EVALSHA", sha, str(len(keys)), *keys, *args))
