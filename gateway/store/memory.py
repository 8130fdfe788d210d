"""The in-process store: every semantic of ``store.base`` for one process, time from the
injected clock. The default for a single process and the reference the Redis scripts follow."""

from __future__ import annotations

import asyncio
import functools
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from gateway.clock import Clock
from gateway.limits import windows
from gateway.limits.minute import MinuteTokens
from gateway.records import (
    LATENCY_BOUNDS_MS,
    Admission,
    KeyRecord,
    Refusal,
    RowSink,
    Settlement,
    Spent,
    UsageDay,
    Verdict,
    latency_bucket,
)
from gateway.store.base import PRESUMED, SETTLED_TTL, USAGE_DAYS, KeyExists, lease_end


@dataclass(slots=True)
class _Usage:
    requests: int = 0
    prompt: int = 0
    completion: int = 0
    errors: int = 0
    latency_total: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))


@dataclass(slots=True)
class _Check:
    """One limit's state for an admission: does it fit, and when would it."""

    reason: Refusal
    fits: bool
    retry_after: float


class _Leases(dict[str, float]):
    """A key's leases: request id → when it ends; ``soonest`` is at or before every end (a
    lease renewed or settled leaves it early), so none has ended while it is in the future."""

    __slots__ = ("soonest",)
    soonest: float


_NO_MINUTE = (0, 0.0)  # the tokens and reset of a key or owner without a tpm limit

# A counter: [its period, tokens, micro-dollars]. A period's tokens and money are always
# written together, so one period dates both; a counter of another period holds nothing.
Periods = tuple[int, int, float, float]  # Calendar.periods: day, month, to midnight, to month end
_EMPTY = (0, 0, 0)  # what a counter of another period (or none) holds
TOKENS, MONEY = 1, 2  # a counter's places


@dataclass(frozen=True, slots=True)
class _Scopes:
    """The names of a key's and its owner's state (rpm logs, rolling minutes, counters)."""

    key: str
    owner: str
    day: str
    month: str
    owner_month: str


@functools.lru_cache(maxsize=4096)
def _scopes(key_id: str, owner: str) -> _Scopes:
    """Built once per key, not per request."""
    return _Scopes(f"k:{key_id}", f"o:{owner}", f"kd:{key_id}", f"km:{key_id}", f"om:{owner}")


class MemoryStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._calendar = windows.Calendar()
        self._keys: dict[str, KeyRecord] = {}
        self._by_hash: dict[str, str] = {}
        self._plans: dict[str, str] = {}
        self._budgets: dict[str, int] = {}  # owners' own monthly budgets (micro-dollars)
        self._logs: dict[str, deque[float]] = {}
        self._leases: dict[str, _Leases] = {}
        self._counters: dict[str, list[int]] = {}  # scope → [period, tokens, micro-dollars]
        self._minutes: dict[str, MinuteTokens] = {}  # the rolling minutes of tokens
        self._settled: dict[str, float] = {}
        self._usage: dict[tuple[str, str, int, str, str], _Usage] = {}
        self._last_used: dict[str, float] = {}
        self._failures: dict[str, tuple[float, int]] = {}
        self._subscribers: list[Callable[[str], None]] = []
        self._next_sweep = 0.0

    # -- keys -------------------------------------------------------------------------------
    def _with_use(self, record: KeyRecord | None) -> KeyRecord | None:
        if record is None or record.id not in self._last_used:
            return record
        return record.evolve(last_used_at=self._last_used[record.id])

    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        key_id = self._by_hash.get(key_hash)
        return self._with_use(self._keys.get(key_id)) if key_id else None

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return self._with_use(self._keys.get(key_id))

    async def list_keys(self, owner: str) -> list[KeyRecord]:
        return [self._with_use(r) or r for r in self._keys.values() if r.owner == owner]

    async def insert_key(self, record: KeyRecord, max_keys: int | None) -> bool:
        if record.id in self._keys or record.key_hash in self._by_hash:
            raise KeyExists(record.id)
        owned = sum(1 for r in self._keys.values() if r.owner == record.owner)
        if max_keys is not None and owned >= max_keys:
            return False
        self._keys[record.id] = record
        self._by_hash[record.key_hash] = record.id
        return True

    async def replace_key(self, record: KeyRecord, old_hash: str | None = None) -> None:
        if old_hash is not None and old_hash != record.key_hash:
            self._by_hash.pop(old_hash, None)
        self._keys[record.id] = record
        self._by_hash[record.key_hash] = record.id

    async def delete_key(self, record: KeyRecord) -> None:
        self._keys.pop(record.id, None)
        self._by_hash.pop(record.key_hash, None)

    async def get_plan(self, owner: str) -> str | None:
        return self._plans.get(owner)

    async def set_plan(self, owner: str, plan: str) -> None:
        self._plans[owner] = plan

    async def get_owner_budget(self, owner: str) -> int | None:
        return self._budgets.get(owner)

    async def set_owner_budget(self, owner: str, micros: int | None) -> None:
        if micros is None:
            self._budgets.pop(owner, None)
        else:
            self._budgets[owner] = micros

    # -- broadcast --------------------------------------------------------------------------
    async def publish(self, message: str) -> None:
        loop = asyncio.get_running_loop()
        for callback in self._subscribers:
            loop.call_soon(callback, message)

    async def subscribe(self, callback: Callable[[str], None]) -> None:
        self._subscribers.append(callback)

    # -- limits -----------------------------------------------------------------------------
    def _log(self, scope: str, now: float) -> deque[float]:
        log = self._logs.get(scope)
        if log is None:
            log = self._logs[scope] = deque()
        while log and log[0] <= now - windows.RPM_WINDOW:
            log.popleft()
        return log

    def _rpm(self, reason: Refusal, scope: str, limit: int, now: float) -> _Check:
        log = self._log(scope, now)
        if len(log) < limit:
            return _Check(reason, True, 0.0)
        if limit <= 0:  # a limit of 0 admits nothing: no entry's leaving makes room
            return _Check(reason, False, windows.RPM_WINDOW)
        leaving = log[len(log) - limit]  # once this one leaves, there is room
        return _Check(reason, False, leaving + windows.RPM_WINDOW - now)

    def _leases_of(self, key_id: str, now: float) -> _Leases:
        """The key's live leases (those that ended are dropped)."""
        leases = self._leases.get(key_id)
        if leases is None:
            leases = self._leases[key_id] = _Leases()
            leases.soonest = math.inf
        elif leases.soonest <= now:  # (a look at every lease only when one may have ended)
            for rid in [r for r, until in leases.items() if until <= now]:
                del leases[rid]
            leases.soonest = min(leases.values(), default=math.inf)
        return leases

    def _held(self, scope: str, period: int) -> Sequence[int]:
        """What the counter of ``scope`` holds in ``period`` (read only)."""
        held = self._counters.get(scope)
        return held if held is not None and held[0] == period else _EMPTY

    def _quota(
        self,
        reason: Refusal,
        held: Sequence[int],
        what: int,
        limit: int,
        reserve: int,
        until: float,
    ) -> _Check:
        return _Check(reason, held[what] + reserve <= limit, until)

    async def admit(self, admission: Admission) -> Verdict:
        return self._admit(admission)

    def admit_now(self, admission: Admission) -> asyncio.Future[Verdict]:
        """The verdict, already decided (nothing here awaits, so nothing can be lost)."""
        done: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        done.set_result(self._admit(admission))
        return done

    def _admit(self, admission: Admission) -> Verdict:
        a, now = admission, self._clock.time()
        s = _scopes(a.key_id, a.owner)
        periods = self._calendar.periods(now)
        leases = self._leases_of(a.key_id, now)
        refused = None
        for check in self._checks(a, s, now, periods, leases):
            if not check.fits:
                refused = check
                break
        else:
            self._take(a, s, now, periods[0], periods[1], leases)
        return self._verdict(a, s, refused, now, periods)

    def _checks(
        self, a: Admission, s: _Scopes, now: float, periods: Periods, leases: _Leases
    ) -> Iterator[_Check]:
        """Each limit that applies, in the order every store checks them (the first that does
        not fit is the refusal); a limit that is not set costs nothing."""
        day, month, to_midnight, to_month = periods
        tokens, cost = a.reserve, a.reserve_cost
        if a.rpm is not None:
            yield self._rpm("rpm", s.key, a.rpm, now)
        if a.concurrency is not None:
            yield _Check("concurrency", len(leases) < a.concurrency, 1.0)
        if a.daily is not None:
            yield self._quota("daily", self._held(s.day, day), TOKENS, a.daily, tokens, to_midnight)
        if a.monthly is not None:
            held = self._held(s.month, month)
            yield self._quota("monthly", held, TOKENS, a.monthly, tokens, to_month)
        if a.tpm is not None:
            yield self._minute("tpm", s.key, a.tpm, tokens, now)
        if a.daily_budget is not None:
            held = self._held(s.day, day)
            yield self._quota("daily_budget", held, MONEY, a.daily_budget, cost, to_midnight)
        if a.monthly_budget is not None:
            held = self._held(s.month, month)
            yield self._quota("monthly_budget", held, MONEY, a.monthly_budget, cost, to_month)
        if a.plan_rpm is not None:
            yield self._rpm("plan_rpm", s.owner, a.plan_rpm, now)
        if a.plan_monthly is not None:
            held = self._held(s.owner_month, month)
            yield self._quota("plan_monthly", held, TOKENS, a.plan_monthly, tokens, to_month)
        if a.plan_tpm is not None:
            yield self._minute("plan_tpm", s.owner, a.plan_tpm, tokens, now)
        if a.plan_budget is not None:
            held = self._held(s.owner_month, month)
            yield self._quota("plan_budget", held, MONEY, a.plan_budget, cost, to_month)

    def _minute(self, reason: Refusal, scope: str, limit: int, reserve: int, now: float) -> _Check:
        minute = self._minutes.get(scope)
        if minute is None:
            minute = self._minutes[scope] = MinuteTokens()
        wait = minute.wait(reserve, limit, now)
        return _Check(reason, wait is None, wait or 0.0)

    def _take(
        self, a: Admission, s: _Scopes, now: float, day: int, month: int, leases: _Leases
    ) -> None:
        if a.rpm is not None:
            self._log(s.key, now).append(now)
        if a.plan_rpm is not None:
            self._log(s.owner, now).append(now)
        if a.tpm is not None:
            self._minutes[s.key].add(a.request_id, a.reserve, now)
        if a.plan_tpm is not None:
            self._minutes[s.owner].add(a.request_id, a.reserve, now)
        leases[a.request_id] = until = lease_end(now)
        if until < leases.soonest:
            leases.soonest = until
        counters, tokens, cost = self._counters, a.reserve, a.reserve_cost
        for scope, period in ((s.day, day), (s.month, month), (s.owner_month, month)):
            held = counters.get(scope)  # (a counter of this period, even at 0: settle moves it)
            if held is not None and held[0] == period:
                held[TOKENS] += tokens
                held[MONEY] += cost
            else:
                counters[scope] = [period, tokens, cost]

    def _verdict(
        self, a: Admission, s: _Scopes, refused: _Check | None, now: float, periods: Periods
    ) -> Verdict:
        day, month, to_midnight, to_month = periods
        window = (0, 0.0)  # the rpm window that applies: its admissions, the oldest's time
        if (a.rpm or a.plan_rpm) is not None:
            log = self._log(s.key if a.rpm else s.owner, now)
            window = (len(log), log[0] if log else 0.0)
        key_minute = self._minute_of(s.key, now) if a.tpm is not None else _NO_MINUTE
        owner_minute = self._minute_of(s.owner, now) if a.plan_tpm is not None else _NO_MINUTE
        kd, km = self._held(s.day, day), self._held(s.month, month)
        om = self._held(s.owner_month, month)
        spent = Spent(  # (by position: a keyword call of a record costs a dict per call)
            kd[TOKENS],  # day_tokens
            km[TOKENS],  # month_tokens
            om[TOKENS],  # owner_month_tokens
            key_minute[0],  # minute_tokens
            owner_minute[0],  # owner_minute_tokens
            kd[MONEY],  # day_cost
            km[MONEY],  # month_cost
            om[MONEY],  # owner_month_cost
        )
        return windows.verdict_of(
            a,
            refused.reason if refused else None,
            refused.retry_after if refused else 0.0,
            window,
            spent,
            (day, month, now, to_midnight, to_month),
            (key_minute[1], owner_minute[1]),
        )

    def _minute_of(self, scope: str, now: float) -> tuple[int, float]:
        """A rolling minute's tokens and the seconds until its oldest leave."""
        minute = self._minutes.get(scope)
        return (minute.trim(now), minute.reset_in(now)) if minute is not None else _NO_MINUTE

    async def settle(self, settlement: Settlement) -> None:
        self._settle(settlement)

    async def settle_many(self, settlements: list[Settlement]) -> None:
        for settlement in settlements:
            self._settle(settlement)

    def _settle(self, settlement: Settlement) -> None:
        s, a, now = settlement, settlement.admission, self._clock.time()
        self._prune(now)
        periods = self._settle_once(s, now)
        if periods is None:
            return
        day, month = periods
        used = s.prompt_tokens + s.completion_tokens
        scopes = _scopes(a.key_id, a.owner)
        if day:  # the admission's periods, if still current, move by used - reserved
            self._move(scopes, day, month, used - a.reserve, s.cost - a.reserve_cost, False)
            if self._minutes:
                for scope in (scopes.key, scopes.owner):
                    minute = self._minutes.get(scope)
                    if minute is not None:
                        minute.settle(a.request_id, used)
        else:  # admitted without the store: charged to the periods current now
            today, this_month, _, _ = self._calendar.periods(now)
            self._move(scopes, today, this_month, used, s.cost, True)
        if s.record:
            self._record(s, now)

    def _settle_once(self, s: Settlement, now: float) -> tuple[int, int] | None:
        """The periods of the admission if this settlement is the first of its request (None
        if not): its lease is still held (the lease is the marker), or, for one admitted
        without the store (day 0), no marker yet. A presumed admission (day ``PRESUMED``, its
        reply lost) is dated by its lease: taken at its expiry less the lease's seconds (in
        ``month``), as it was never renewed."""
        a = s.admission
        if s.day:
            leases = self._leases.get(a.key_id)
            until = leases.pop(a.request_id, None) if leases is not None else None
            if until is None:
                return None
            if s.day != PRESUMED:
                return s.day, s.month
            day, month, _, _ = self._calendar.periods(until - s.month)
            return day, month
        marker = f"{a.owner}\0{a.request_id}"
        if marker in self._settled:
            return None
        self._settled[marker] = now + SETTLED_TTL
        return 0, 0

    def _move(self, s: _Scopes, day: int, month: int, tokens: int, cost: int, reset: bool) -> None:
        """Counters of ``day``/``month`` moved by ``tokens`` and ``cost`` (never below zero); a
        counter of an older period is left alone, or, with ``reset``, restarted at the delta."""
        counters = self._counters
        for scope, period in ((s.day, day), (s.month, month), (s.owner_month, month)):
            held = counters.get(scope)
            if held is not None and held[0] == period:
                moved, charged = held[TOKENS] + tokens, held[MONEY] + cost
                held[TOKENS] = moved if moved > 0 else 0
                held[MONEY] = charged if charged > 0 else 0
            elif reset:
                counters[scope] = [period, max(0, tokens), max(0, cost)]

    def _record(self, s: Settlement, now: float) -> None:
        a = s.admission
        finished = s.finished_at or now
        at = (a.owner, a.key_id, self._calendar.periods(finished)[0], s.model, s.api)
        row = self._usage.get(at)
        if row is None:
            row = self._usage[at] = _Usage()
        row.requests += 1
        row.prompt += s.prompt_tokens
        row.completion += s.completion_tokens
        row.errors += s.error  # (a bool: 0 or 1)
        row.latency_total += s.latency_ms
        row.buckets[latency_bucket(s.latency_ms)] += 1
        self._last_used[a.key_id] = finished

    def _prune(self, now: float) -> None:
        """Amortised: settled ids expire in insertion order (their TTL is constant), so only the
        expired head is looked at; old usage rows are swept once an hour."""
        settled = self._settled
        while settled:
            rid, until = next(iter(settled.items()))
            if until > now:
                break
            del settled[rid]
        if now >= self._next_sweep:
            self._next_sweep = now + 3600.0
            oldest = windows.day_id(now - USAGE_DAYS * 86400.0)
            for k in [k for k in self._usage if k[2] < oldest]:
                del self._usage[k]

    async def renew_leases(self, admissions: list[Admission]) -> None:
        now = self._clock.time()
        until = lease_end(now)
        for a in admissions:
            leases = self._leases.get(a.key_id)
            if leases is not None and leases.get(a.request_id, 0.0) > now:
                leases[a.request_id] = until  # an expired lease stays expired

    async def auth_failure(self, client: str) -> tuple[int, float]:
        return await self.hit(f"authfail:{client}")

    async def hit(self, counter: str) -> tuple[int, float]:
        now = self._clock.time()
        if len(self._failures) > 10_000:  # one entry per client IP seen: keep only live windows
            for name in [n for n, (t, _) in self._failures.items() if now - t >= 60.0]:
                del self._failures[name]
        start, count = self._failures.get(counter, (now, 0))
        if now - start >= 60.0:
            start, count = now, 0
        self._failures[counter] = (start, count + 1)
        return count + 1, start + 60.0 - now

    # -- usage ------------------------------------------------------------------------------
    async def usage(
        self,
        owner: str,
        key_ids: list[str],
        first_day: int,
        last_day: int,
        sink: RowSink | None = None,
    ) -> list[UsageDay]:
        rows = self._rows(owner, set(key_ids), first_day, last_day)
        if sink is None:
            return rows
        sink(rows)
        return []

    def _rows(self, owner: str, wanted: set[str], first_day: int, last_day: int) -> list[UsageDay]:
        return [
            UsageDay(
                date=windows.day_text(day),
                key_id=key_id,
                model=model,
                requests=u.requests,
                prompt_tokens=u.prompt,
                completion_tokens=u.completion,
                errors=u.errors,
                latency_ms_total=u.latency_total,
                latency_buckets=tuple(u.buckets),
                api=api,
            )
            for (o, key_id, day, model, api), u in sorted(self._usage.items(), key=_row_order)
            if o == owner and key_id in wanted and first_day <= day <= last_day
        ]

    # -- lifecycle --------------------------------------------------------------------------
    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._subscribers.clear()


def _row_order(item: tuple[tuple[str, str, int, str, str], _Usage]) -> tuple[object, ...]:
    """Rows by owner, key, day and model, a model's chat usage before its other APIs (the
    Redis store's order)."""
    owner, key_id, day, model, api = item[0]
    return owner, key_id, day, model, api != "chat", api
