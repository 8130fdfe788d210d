"""The rolling minute of tokens (``tpmLimit``, a plan's ``tpm``): the tokens of the requests
admitted in the last 60 s, each counted from its admission for 60 s. A request counts its
reservation when admitted and what it really used once settled (if it is still in the window).
Pure; the memory store keeps one per key and per owner, and ``admit.lua`` does the same in
Redis (a ZSET of admission times and a HASH of tokens with their running sum).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gateway.limits.windows import RPM_WINDOW


@dataclass(slots=True)
class MinuteTokens:
    entries: deque[tuple[float, str]] = field(default_factory=deque)  # (admitted at, id)
    tokens: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def trim(self, now: float) -> int:
        """Drop what left the window; the tokens still in it."""
        entries = self.entries
        while entries and entries[0][0] <= now - RPM_WINDOW:
            _, rid = entries.popleft()
            self.total -= self.tokens.pop(rid, 0)
        return self.total

    def wait(self, reserve: int, limit: int, now: float) -> float | None:
        """None when ``reserve`` more tokens fit under ``limit``, else the seconds until enough
        have left the window (a whole window for a reservation larger than the limit)."""
        excess = self.trim(now) + reserve - limit
        if excess <= 0:
            return None
        if reserve > limit:
            return RPM_WINDOW
        for at, rid in self.entries:
            excess -= self.tokens.get(rid, 0)
            if excess <= 0:
                return at + RPM_WINDOW - now
        return RPM_WINDOW

    def reset_in(self, now: float) -> float:
        """Seconds until the oldest tokens in the window leave it (0 when it is empty)."""
        return self.entries[0][0] + RPM_WINDOW - now if self.entries else 0.0

    def add(self, rid: str, tokens: int, now: float) -> None:
        self.entries.append((now, rid))
        self.tokens[rid] = tokens
        self.total += tokens

    def settle(self, rid: str, used: int) -> None:
        """A request's reservation becomes what it used, if it is still in the window."""
        held = self.tokens.get(rid)
        if held is not None:
            self.tokens[rid] = used
            self.total += used - held
