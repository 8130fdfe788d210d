"""Where this process last sent each prompt: the memory that consistent hashing lacks. Pure.

Consistent hashing with bounded loads is a function of the key and the loads: once the bound
has moved a conversation off its worker, nothing remembers where its KV cache went, so its
next turn goes back to the crowded worker and waits, or spills to yet another that holds
nothing of it. This remembers, per process, the upstream each prompt was last sent to, named
by the chained hash of its messages (``affinity.prompt_prefixes``, the same in every process:
``routing.placements`` adds the moves other processes made); a later prompt that
extends it (the next turn of the conversation) is sent there while that upstream is under
its bound (vLLM's production-stack router and llm-d's approximate prefix scorer keep the
same kind of index of their own routing).

Bounded: at most ``CAPACITY`` prompts, the least recently used forgotten first; a prompt
found is replaced by the one extending it, so a conversation holds one entry. A client that
fills the memory, or aims a collision at another's entry, only sends requests back to the
ring's choice (or its own where another prompt went), under the bound.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

CAPACITY = 65_536  # prompts remembered per process (about 8 MB when full)


class History:
    """Prompt (its last prefix hash) → the name of the upstream it was last sent to."""

    __slots__ = ("capacity", "sent")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.sent: OrderedDict[int, str] = OrderedDict()
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self.sent)

    def where(self, prefixes: Sequence[int]) -> tuple[int, str] | None:
        """The longest of ``prefixes`` (shortest first) sent before, and where it went."""
        sent = self.sent
        for prefix in reversed(prefixes):
            name = sent.get(prefix)
            if name is not None:
                return prefix, name
        return None

    def record(self, prefixes: Sequence[int], name: str, replaces: int | None = None) -> None:
        """``prefixes``' prompt went to ``name``; ``replaces``: the prefix it extends."""
        sent = self.sent
        prompt = prefixes[-1]
        if replaces is not None and replaces != prompt:
            sent.pop(replaces, None)
        sent[prompt] = name
        sent.move_to_end(prompt)
        if len(sent) > self.capacity:
            sent.popitem(last=False)
