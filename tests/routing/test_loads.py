"""The fleet's loads (``routing.loads``): what each gateway process tells the others of its
requests in flight, and the bound that uses them. Properties over random schedules of
placements, releases and messages between several processes' real balancers; the messages
are the ones the store's broadcast would carry."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.config.schema import Upstream
from gateway.routing.balancer import Balancer
from gateway.routing.loads import AGE, PREFIX, Loads
from gateway.routing.ring import key_hash
from tests.routing.support import until

LOAD_FACTOR = 1.25


def up(name: str) -> Upstream:
    return Upstream(name=name, url=f"http://{name}:1")


def fleet(processes: int, clock: FakeClock) -> list[Balancer]:
    balancers = [Balancer(clock, random.Random(p)) for p in range(processes)]
    for b in balancers:
        b.loads.sharing = True  # as ``share`` does, without a store: messages are carried here
    return balancers


def contest(balancers: list[Balancer], *upstreams: Upstream) -> None:
    """The upstreams are one model's pool in every process: chosen among each other, so their
    counts are told (an upstream alone in its pools is never told)."""
    for b in balancers:
        b.pick(upstreams)


def deliver(sender: Balancer, balancers: list[Balancer]) -> None:
    """``sender``'s next message reaches every other process, and the store took it."""
    message = sender.loads.message()
    if message is None:
        return
    for other in balancers:
        assert other.loads.receive(message)  # its own is recognised and ignored
    sender.loads.delivered()


def true_counts(balancers: list[Balancer], pool: tuple[Upstream, ...]) -> list[int]:
    return [sum(b.count(u.name) for b in balancers) for u in pool]


# A schedule: (what, process, a number) — place a request (the number names its key),
# release one held (the number picks which), or deliver a process's message.
Step = tuple[str, int, int]
steps = st.lists(
    st.tuples(st.sampled_from(["place", "place", "release", "deliver"]), st.integers(0, 2),
              st.integers(0, 10_000)),
    min_size=1,
    max_size=120,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(processes=st.integers(2, 3), upstreams=st.integers(2, 5), schedule=steps)
def test_each_process_bounds_what_it_was_not_told_and_all_agree_once_told(
    processes: int, upstreams: int, schedule: list[Step]
) -> None:
    """At every placement: (0) the chosen worker is under the fleet's bound as the placing
    process saw it (always: the untold guard never overrides it); (1) when some worker was
    under both bounds, the placing process's untold placements on the chosen worker stay
    within ``ceil(load_factor x its untold / n)``; (2) the fleet's true count there exceeds
    what the placing process saw by no more than the others' untold placements there, so the
    true count is within the bound it saw plus those. And once every message is delivered,
    every process's fleet load of every worker is the true count (cross-process agreement)."""
    clock = FakeClock()
    balancers = fleet(processes, clock)
    pool = tuple(up(f"w{i}") for i in range(upstreams))
    held: list[tuple[int, Upstream]] = []
    for what, p, n in schedule:
        p %= processes
        b = balancers[p]
        if what == "deliver":
            deliver(b, balancers)
        elif what == "release" and held:
            owner, upstream = held.pop(n % len(held))
            balancers[owner].release(upstream)
        elif what == "place":
            seen = [b.state(u.name).load(clock.monotonic()) for u in pool]
            untold = [b.state(u.name).unknown for u in pool]
            bound = math.ceil(LOAD_FACTOR * (sum(seen) + 1) / upstreams - 1e-9)
            guard = math.ceil(LOAD_FACTOR * (sum(untold) + 1) / upstreams - 1e-9)
            chosen = b.affinity(pool, (), None, LOAD_FACTOR, key_hash(b"%d" % n), ())
            assert chosen is not None
            b.acquire(chosen)
            held.append((p, chosen))
            w = pool.index(chosen)
            others_untold = sum(o.state(chosen.name).unknown for o in balancers if o is not b)
            true = true_counts(balancers, pool)[w]
            assert seen[w] < bound and true <= bound + others_untold  # (0)
            if any(s < bound and u < guard for s, u in zip(seen, untold, strict=True)):
                assert b.state(chosen.name).unknown <= guard  # (1)
            assert true <= seen[w] + 1 + others_untold  # (2)
    for b in balancers:
        deliver(b, balancers)
    true = true_counts(balancers, pool)
    for b in balancers:
        assert [b.state(u.name).load(clock.monotonic()) for u in pool] == true
        assert all(b.state(u.name).unknown == 0 for u in pool)


# A message: (origin, every count or only some, [(upstream, count), ...]); or time passing.
told = st.lists(
    st.one_of(
        st.tuples(st.integers(1, 3), st.booleans(),
                  st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 9)), max_size=4)),
        st.floats(0.0, 2.0),
    ),
    max_size=40,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(messages=told, own=st.integers(0, 5))
def test_the_fleet_load_is_own_plus_the_others_last_told_until_they_fall_silent(
    messages: list[tuple[int, bool, list[tuple[str, int]]] | float], own: int
) -> None:
    """A receiver's fleet load of an upstream is its own in flight plus, for each other process
    heard from within ``AGE`` seconds, the last count it told (a message of every count
    replaces all of that process's; one of some updates those), whatever the order."""
    clock = FakeClock()
    b = Balancer(clock)
    for _ in range(own):
        b.acquire(up("a"))
    model: dict[int, dict[str, int]] = {}
    heard: dict[int, float] = {}
    for message in messages:
        if isinstance(message, float):
            clock.advance(message)
            b.loads.beat()  # forgets the silent
            for o in [o for o, t in heard.items() if t < clock.monotonic() - AGE]:
                del model[o], heard[o]
            continue
        origin, every, counts = message
        flat: list[object] = [x for pair in counts for x in pair]
        assert b.loads.receive(PREFIX + _json([origin, every, flat]))
        held = {} if every else model.get(origin, {})
        held.update(dict(counts))
        model[origin], heard[origin] = held, clock.monotonic()
    now = clock.monotonic()
    for name in "abcd":
        expected = sum(counts.get(name, 0) for counts in model.values())
        mine = own if name == "a" else 0
        assert b.state(name).told == expected
        assert b.state(name).load(now) == mine + expected  # no signals: own + told


def _json(value: object) -> str:
    import orjson

    return orjson.dumps(value).decode()


def test_counts_are_told_once_per_change_and_a_heartbeat_repeats_them() -> None:
    """Only the upstreams whose count changed go out; nothing when nothing changed; ``beat``
    tells every count again while any is not zero, and nothing once all are."""
    clock = FakeClock()
    a, b = fleet(2, clock)
    contest([a, b], up("w0"), up("w1"))
    w0, w1 = up("w0"), up("w1")
    assert a.loads.message() is None
    a.acquire(w0)
    a.acquire(w0)
    deliver(a, [a, b])
    assert (b.state("w0").told, b.state("w1").told) == (2, 0)
    assert a.loads.message() is None  # nothing changed since
    a.acquire(w1)
    message = a.loads.message()
    assert message is not None and '"w1"' in message and '"w0"' not in message
    a.release(w0)
    a.release(w0)
    a.release(w1)
    deliver(a, [a, b])
    assert (b.state("w0").told, b.state("w1").told) == (0, 0)
    sent: list[str] = []

    async def publish(message: str) -> None:
        sent.append(message)

    a.loads.share(publish)
    a.loads.beat()  # nothing held: nothing to repeat
    assert sent == []


def test_a_process_that_falls_silent_is_forgotten() -> None:
    clock = FakeClock()
    a, b = fleet(2, clock)
    contest([a, b], up("w0"), up("w1"))
    a.acquire(up("w0"))
    deliver(a, [a, b])
    assert b.state("w0").told == 1
    clock.advance(AGE - 0.1)
    b.loads.beat()
    assert b.state("w0").told == 1
    clock.advance(0.2)
    b.loads.beat()
    assert b.state("w0").told == 0


def test_what_the_signals_show_beyond_the_gateways_counts_is_kept_over_tells() -> None:
    """Requests from outside these gateways (the worker's running and waiting beyond this
    process's and the others' told) stay in the load as the tells change."""
    clock = FakeClock()
    a, b = fleet(2, clock)
    contest([a, b], up("w0"), up("w1"))
    for _ in range(3):
        a.acquire(up("w0"))
    deliver(a, [a, b])
    b.acquire(up("w0"))
    b.observe("w0", waiting=2, running=4, cache=0.0, until=clock.monotonic() + 1)  # 6 = 3 + 1 + 2
    assert b.state("w0").load(clock.monotonic()) == 6
    a.release(up("w0"))
    deliver(a, [a, b])
    assert b.state("w0").load(clock.monotonic()) == 5  # one fewer from a; the 2 from outside
    clock.advance(2)  # the signals are stale: own + told only
    assert b.state("w0").load(clock.monotonic()) == 3


def test_loads_messages_are_apart_from_the_store_s_other_broadcasts() -> None:
    loads = Loads(Balancer(FakeClock()), FakeClock().monotonic)
    assert not loads.receive("route:[1,[]]")
    assert not loads.receive("*")
    assert loads.receive(PREFIX + "not json")


async def test_a_long_request_is_told_again_each_beat_and_never_forgotten() -> None:
    """A stream that changes nothing for minutes: each ``beat`` tells every count again, so
    the others keep it past ``AGE``; once it ends, the beats stop and nothing is left."""
    clock = FakeClock()
    a, b = fleet(2, clock)
    contest([a, b], up("w0"), up("w1"))
    sent: list[str] = []

    async def publish(message: str) -> None:
        sent.append(message)
        b.loads.receive(message)

    a.loads.share(publish)
    a.acquire(up("w0"))
    await until(lambda: b.state("w0").told == 1, what="told")
    for _ in range(3):
        clock.advance(AGE * 0.6)
        before = len(sent)
        a.loads.beat()
        await until(lambda before=before: len(sent) > before, what="the beat sent")
        b.loads.beat()  # forgets whoever was silent for AGE: not a
        assert b.state("w0").told == 1
    a.release(up("w0"))
    await until(lambda: b.state("w0").told == 0, what="the end told")
    count = len(sent)
    a.loads.beat()
    assert len(sent) == count  # nothing held: no beat


async def test_an_upstream_alone_in_its_pools_is_never_told() -> None:
    """A model with one upstream has nothing to choose: its count decides nothing, so sharing
    it would cost a message per change for nothing (a PUBLISH per ~10 ms of traffic)."""
    clock = FakeClock()
    a = fleet(2, clock)[0]
    sent: list[str] = []

    async def publish(message: str) -> None:
        sent.append(message)

    a.loads.share(publish)
    alone, w1, w2 = up("alone"), up("w1"), up("w2")
    assert a.pick((alone,)) is alone
    a.acquire(alone)
    a.loads.beat()
    assert a.loads.message() is None and sent == []
    a.release(alone)
    chosen = a.pick((w1, w2))  # chosen among others: told from then on
    assert chosen is not None
    a.acquire(chosen)
    await until(lambda: len(sent) == 1, what="the contested count told")
    assert f'"{chosen.name}"' in sent[0] and '"alone"' not in sent[0]
