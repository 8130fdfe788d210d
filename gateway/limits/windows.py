"""Window math: UTC day and month periods as integers, and the time until they roll over; the
verdicts every store gives, and the rate-limit headers a verdict becomes. Pure.

Periods are ``YYYYMMDD`` and ``YYYYMM`` integers of the store's clock. The Redis scripts compute
the same numbers from ``TIME`` (``store/*.lua``); ``tests/limits`` checks both agree.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime, timedelta

from gateway.records import Admission, Refusal, Spent, Verdict

RPM_WINDOW = 60.0


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def day_id(epoch: float) -> int:
    t = _utc(epoch)
    return t.year * 10000 + t.month * 100 + t.day


def month_id(epoch: float) -> int:
    t = _utc(epoch)
    return t.year * 100 + t.month


def seconds_to_midnight(epoch: float) -> float:
    t = _utc(epoch)
    midnight = datetime(t.year, t.month, t.day, tzinfo=UTC) + timedelta(days=1)
    return midnight.timestamp() - epoch


def seconds_to_month_end(epoch: float) -> float:
    t = _utc(epoch)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp() - epoch


class Calendar:
    """``periods(now)`` without a datetime per call: the current UTC day's bounds are computed
    once and reused until ``now`` leaves them (the hot path asks several times per request)."""

    __slots__ = ("_day", "_end", "_month", "_month_end", "_start")

    def __init__(self) -> None:
        self._start = self._end = self._month_end = 0.0
        self._day = self._month = 0

    def periods(self, now: float) -> tuple[int, int, float, float]:
        """(day id, month id, seconds to UTC midnight, seconds to the first of next month)."""
        if not self._start <= now < self._end:
            self._day, self._month = day_id(now), month_id(now)
            self._end = now + seconds_to_midnight(now)
            self._start = self._end - 86400.0
            self._month_end = now + seconds_to_month_end(now)
        return self._day, self._month, self._end - now, self._month_end - now


def day_text(day: int) -> str:
    """20261122 → "2026-11-22"."""
    return f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d}"


def days_back(epoch: float, days: int) -> list[int]:
    """The last ``days`` UTC days up to and including the one of ``epoch``, oldest first."""
    today = _utc(epoch).date()
    return [int((today - timedelta(days=n)).strftime("%Y%m%d")) for n in range(days - 1, -1, -1)]


def retry_seconds(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


def reset_text(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` form: ``6m0s``, ``1s``, ``250ms``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    return _whole_seconds(math.ceil(seconds))


@functools.lru_cache(maxsize=4096)
def _whole_seconds(whole: int) -> str:
    """``reset_text`` of whole seconds (cached: most requests share the few seconds their
    windows and periods reset in; the text cost ~4k instructions)."""
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


_Tokens = tuple[int, int, float]  # a token limit as the headers tell it: (remaining, limit, reset)


def _tighter(tight: _Tokens | None, limit: int, used: int, until: float) -> _Tokens:
    """The tighter of ``tight`` and ``limit`` with ``used`` spent, resetting in ``until``: the
    least remaining, then the least limit, then the soonest reset."""
    tokens = (limit - used, limit, until)
    return tokens if tight is None or tokens < tight else tight


def verdict_of(
    a: Admission,
    refused: Refusal | None,
    retry_after: float,
    window: tuple[int, float],
    spent: Spent,
    periods: tuple[int, int, float, float, float],
    minute_resets: tuple[float, float] = (0.0, 0.0),
) -> Verdict:
    """The verdict every store gives, from what it counted.

    ``window``: admissions in the rpm window that applies (the key's, else the plan's) and the
    time of the oldest; ``spent``: what the counters hold; ``periods``: (day, month, now,
    seconds to midnight, seconds to month end); ``minute_resets``: seconds until the oldest
    tokens of the key's and of the owner's rolling minute leave it. The headers report the
    tightest token limit.
    """
    day, month, now, to_midnight, to_month = periods
    count, oldest = window
    req_limit = a.rpm if a.rpm else a.plan_rpm
    remaining = reset = None
    if req_limit is not None:
        remaining = req_limit - count if req_limit > count else 0  # (max() costs ~1k more)
        reset = (oldest + RPM_WINDOW - now) if count else 0.0
    tight: _Tokens | None = None  # a limit that is not set costs nothing
    if a.daily is not None:
        tight = _tighter(tight, a.daily, spent.day_tokens, to_midnight)
    if a.monthly is not None:
        tight = _tighter(tight, a.monthly, spent.month_tokens, to_month)
    if a.plan_monthly is not None:
        tight = _tighter(tight, a.plan_monthly, spent.owner_month_tokens, to_month)
    if a.tpm is not None:
        tight = _tighter(tight, a.tpm, spent.minute_tokens, minute_resets[0])
    if a.plan_tpm is not None:
        tight = _tighter(tight, a.plan_tpm, spent.owner_minute_tokens, minute_resets[1])
    return Verdict(  # (by position: a keyword call of a record costs a dict per call)
        refused is None,  # admitted
        refused,
        retry_seconds(retry_after) if refused else 0,  # retry_after
        req_limit,  # requests_limit
        remaining,  # requests_remaining
        reset or 0.0,  # requests_reset
        tight[1] if tight else None,  # tokens_limit
        (tight[0] if tight[0] > 0 else 0) if tight else None,  # tokens_remaining, at least 0
        tight[2] if tight else 0.0,  # tokens_reset
        day,
        month,
        now,
        spent,
    )


@functools.lru_cache(maxsize=4096)
def _rfc3339(second: int) -> str:
    """A whole second as Anthropic's reset time (cached: most requests share a few)."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rate_headers(verdict: Verdict, anthropic: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    if verdict.requests_limit is not None:
        headers["x-ratelimit-limit-requests"] = str(verdict.requests_limit)
        headers["x-ratelimit-remaining-requests"] = str(verdict.requests_remaining or 0)
        headers["x-ratelimit-reset-requests"] = reset_text(verdict.requests_reset)
    if verdict.tokens_limit is not None:
        headers["x-ratelimit-limit-tokens"] = str(verdict.tokens_limit)
        headers["x-ratelimit-remaining-tokens"] = str(verdict.tokens_remaining or 0)
        headers["x-ratelimit-reset-tokens"] = reset_text(verdict.tokens_reset)
    if anthropic:
        for kind, limit, remaining, reset in (
            (
                "requests",
                verdict.requests_limit,
                verdict.requests_remaining,
                verdict.requests_reset,
            ),
            ("tokens", verdict.tokens_limit, verdict.tokens_remaining, verdict.tokens_reset),
        ):
            if limit is not None:
                headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
                headers[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining or 0)
                headers[f"anthropic-ratelimit-{kind}-reset"] = _rfc3339(int(verdict.now + reset))
    return headers
