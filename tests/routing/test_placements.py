"""Where affinity moved a conversation, told to the other gateway processes: the hashes naming
prompts agree across processes, a move is told and a stay is not, another process follows what
it was told, its own messages and others' broadcasts are left alone, and the messages are
batched with one in flight. And the per-request fast path of ``Balancer.affinity`` chooses
exactly as the general one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.config.schema import Upstream
from gateway.routing.affinity import affinity, prompt_prefixes
from gateway.routing.balancer import Balancer
from gateway.routing.placements import BATCH, INTERVAL, MAX_PENDING, PREFIX, Placements
from gateway.routing.ring import Ring
from tests.routing.test_history import turns


def up(name: str) -> Upstream:
    return Upstream(name=name, url=f"http://{name}:1")


POOL = (up("a"), up("b"), up("c"))


def choose(b: Balancer, messages: list[dict[str, str]], pool: tuple[Upstream, ...] = POOL) -> str:
    found = affinity(orjson.dumps({"model": "m", "messages": messages}), 256)
    assert found is not None
    chosen = b.affinity(pool, (), None, 1.25, found[0], found[1])
    assert chosen is not None
    return chosen.name


def test_prompts_and_keys_are_named_alike_in_every_process() -> None:
    """Python's own hash is salted per process: the names must not be."""
    convo = turns("a trip to Bergen", 3)[2]
    here = affinity(orjson.dumps({"messages": convo}), 256)
    code = (
        "import orjson, sys\n"
        "from gateway.routing.affinity import affinity\n"
        "print(orjson.dumps(affinity(sys.stdin.buffer.read(), 256)).decode())"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=orjson.dumps({"messages": convo}),
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        key, prefixes = orjson.loads(out)
        assert here == (key, tuple(prefixes))


def test_a_move_is_told_and_a_stay_is_not() -> None:
    b = Balancer(FakeClock())
    b.placements.sharing = True
    convo = turns("a long document to discuss", 4)
    home = choose(b, convo[0])
    assert b.placements.pending == []  # the ring's worker: every process guesses it
    b.acquire(next(u for u in POOL if u.name == home))
    moved = choose(b, convo[1])
    assert moved != home
    first, second = prompt_prefixes(convo[0])[-1], prompt_prefixes(convo[1])[-1]
    assert b.placements.pending == [second, first, moved]
    b.release(next(u for u in POOL if u.name == home))
    assert choose(b, convo[2]) == moved
    assert len(b.placements.pending) == 3  # stayed where the others were told it is


def test_another_process_follows_what_it_was_told() -> None:
    one, other = Balancer(FakeClock()), Balancer(FakeClock())
    one.placements.sharing = True
    convo = turns("a long document to discuss", 3)
    home = choose(one, convo[0])
    one.acquire(next(u for u in POOL if u.name == home))
    moved = choose(one, convo[1])
    message = one.placements.message()
    assert message is not None and message.startswith(PREFIX)
    assert one.placements.receive(message)  # its own: nothing changes
    assert choose(Balancer(FakeClock()), convo[2]) == home  # untold: the ring
    assert other.placements.receive(message)
    assert choose(other, convo[2]) == moved


def test_other_broadcasts_and_garbage_are_left_alone() -> None:
    b = Balancer(FakeClock())
    assert not b.placements.receive("*")
    assert not b.placements.receive("ab" * 32)  # a key hash: the key cache's
    for bad in (PREFIX, PREFIX + "[1", PREFIX + "[1, 5]", PREFIX + '[1, [1, null, 2, "x"]]'):
        assert b.placements.receive(bad)
    assert len(b.history) == 0


async def test_placements_go_out_in_batches_with_one_in_flight() -> None:
    sent: list[str] = []
    release = asyncio.Event()

    async def publish(message: str) -> None:
        sent.append(message)
        await release.wait()

    placements = Placements(Balancer(FakeClock()).history, origin=7)
    placements.share(publish)
    placements.tell(1, None, "a")
    await asyncio.sleep(0)  # the end of this turn of the loop: the first message goes
    placements.tell(2, 1, "b")
    placements.tell(3, None, "c")
    await asyncio.sleep(0)
    assert sent == [PREFIX + '[7,[1,null,"a"]]']  # one in flight: the rest wait for it
    loop = asyncio.get_running_loop()
    first_at = loop.time()
    release.set()
    while len(sent) < 2:  # the next, INTERVAL after the first at the soonest
        assert loop.time() - first_at < 5, "the second message never went"
        await asyncio.sleep(0.005)
    assert loop.time() - first_at >= INTERVAL * 0.9
    assert sent[1:] == [PREFIX + '[7,[2,1,"b",3,null,"c"]]']


def test_placements_waiting_for_a_slow_store_are_bounded() -> None:
    placements = Placements(Balancer(FakeClock()).history)
    placements.sharing = True  # told, but nothing sends them (as while a PUBLISH hangs)
    for prompt in range(MAX_PENDING + 100):
        placements.tell(prompt, None, "a")
    assert len(placements.pending) == 3 * MAX_PENDING
    sizes = []  # each message BATCH placements at most (a receiver's loop is not held long)
    while (message := placements.message()) is not None:
        sizes.append(len(orjson.loads(message[len(PREFIX) :])[1]) // 3)
    assert sizes == [BATCH] * (MAX_PENDING // BATCH) and placements.pending == []


@settings(max_examples=200, deadline=None)
@given(
    upstreams=st.integers(min_value=1, max_value=9),
    factor=st.floats(min_value=1.0, max_value=3.0),
    ops=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 5)), max_size=200),
)
def test_the_fast_path_chooses_as_the_general_one(
    upstreams: int, factor: float, ops: list[tuple[int, int, int]]
) -> None:
    """Two balancers fed the same arrivals, departures, signals and failures: one chooses by
    ``affinity`` (inlined for the usual case), the other by ``_affinity`` (the general path);
    they choose alike every time, and tell alike."""
    pool = tuple(up(f"w{i}") for i in range(upstreams))
    clocks = [FakeClock(), FakeClock()]
    fast, general = (Balancer(c) for c in clocks)
    for b in (fast, general):
        b.placements.sharing = True
    convos = [turns(f"conversation {c}", 6) for c in range(8)]
    depth = [0] * 8
    held: list[Upstream] = []
    for op, n, extra in ops:  # op 4 to 7: a turn of conversation n
        worker = pool[n % upstreams]
        if op == 0 and held:
            for b in (fast, general):
                b.release(held[n % len(held)])
            held.pop(n % len(held))
        elif op == 1:
            for b, clock in zip((fast, general), clocks, strict=True):
                mine = b.state(worker.name).in_flight
                b.observe(worker.name, 0, mine + extra, 0.0, clock.monotonic() + extra)
        elif op == 2 and extra == 5:
            for b in (fast, general):
                b.failed(worker)
        elif op == 3:
            for clock in clocks:
                clock.advance(extra * 0.5)
        else:
            messages = convos[n][depth[n]]
            depth[n] = min(5, depth[n] + 1)
            found = affinity(orjson.dumps({"messages": messages}), 256)
            assert found is not None
            a = fast.affinity(pool, (), None, factor, found[0], found[1])
            b_ = general._affinity(pool, (), None, factor, found[0], found[1])
            assert a is not None and b_ is not None and a.name == b_.name
            for b in (fast, general):
                b.acquire(a)
            held.append(a)
            assert fast.placements.pending == general.placements.pending


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=12, unique=True))
def test_each_point_keeps_the_start_of_its_walk(names: list[str]) -> None:
    ring = Ring(names, [1.0] * len(names))
    for i, point in enumerate(ring.points):
        assert ring.walks[i] == tuple(ring.walk(point)[:8])
    assert ring.walks[-1] == tuple(ring.walk(ring.points[-1] + 1)[:8])  # past the last: wraps
