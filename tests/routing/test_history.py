"""Affinity's memory of where each prompt went: a conversation the bound moved stays moved while
its new worker is under the bound; the memory is bounded and never takes a worker past its
bound; with it, no worker carries more than ``load_factor`` x mean under any workload."""

from __future__ import annotations

import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.config.schema import ModelRouting, Upstream
from gateway.routing.affinity import affinity, prompt_prefixes
from gateway.routing.balancer import Balancer
from gateway.routing.history import History
from gateway.routing.ring import key_hash

AFFINITY = ModelRouting(policy="affinity", load_factor=1.25)


def up(name: str, weight: float = 1.0) -> Upstream:
    return Upstream(name=name, url=f"http://{name}:1", weight=weight)


def turns(opening: str, count: int) -> list[list[dict[str, str]]]:
    """A conversation's prompts: each turn the one before, its answer and a follow-up."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": opening}]
    out = [list(messages)]
    for n in range(count - 1):
        messages += [
            {"role": "assistant", "content": f"answer {n}"},
            {"role": "user", "content": f"follow-up {n}"},
        ]
        out.append(list(messages))
    return out


def test_a_turn_extends_the_prefixes_of_the_turn_before() -> None:
    one, two = turns("plan a trip", 2)
    assert prompt_prefixes(two)[: len(one)] == prompt_prefixes(one)
    assert prompt_prefixes(two)[-1] != prompt_prefixes(one)[-1]
    other = prompt_prefixes(turns("plan a party", 1)[0])
    assert other[0] == prompt_prefixes(one)[0] and other[1] != prompt_prefixes(one)[1]


def test_odd_messages_give_prefixes_without_failing() -> None:
    assert prompt_prefixes("not a list") == ()
    assert len(prompt_prefixes([{"role": ["x"], "content": {"a": 1}}, {"role": "user"}])) == 2
    assert prompt_prefixes([{"role": "user", "content": "a"}, "stop", {"role": "x"}]) != ()
    found = affinity(orjson.dumps({"messages": turns("x", 2)[1], "user": "u1"}), 256)
    assert found is not None and len(found[1]) == 4  # a session key keeps the prefixes


def test_the_longest_prefix_sent_is_found_and_replaced_by_its_extension() -> None:
    history = History()
    one, two = (prompt_prefixes(t) for t in turns("trip", 2))
    assert history.where(two) is None
    history.record(one, "a")
    assert history.where(two) == (one[-1], "a")
    history.record(two, "b", replaces=one[-1])
    assert history.where(two) == (two[-1], "b") and len(history) == 1
    assert history.where(one) is None  # the shorter prompt's entry gave way to its extension


def test_the_memory_is_bounded_oldest_first() -> None:
    history = History(capacity=3)
    prompts = [prompt_prefixes(turns(f"conversation {i}", 1)[0]) for i in range(5)]
    for prefixes in prompts:
        history.record(prefixes, "a")
    assert len(history) == 3
    assert history.where(prompts[0]) is None and history.where(prompts[4]) is not None


def pick(b: Balancer, pool: list[Upstream], messages: list[dict[str, str]]) -> Upstream:
    found = affinity(orjson.dumps({"model": "m", "messages": messages}), 256)
    assert found is not None
    chosen = b.pick(pool, routing=AFFINITY, key=found[0], prefixes=found[1])
    assert chosen is not None
    return chosen


def test_a_conversation_moved_by_the_bound_stays_where_it_went() -> None:
    b = Balancer(FakeClock())
    pool = [up("a"), up("b"), up("c")]
    convo = turns("a long document to discuss", 4)
    home = pick(b, pool, convo[0])
    b.acquire(home)  # in flight: 1 on the home, its bound with 2 in flight ceil(1.25*2/3) = 1
    moved = pick(b, pool, convo[1])
    assert moved is not home
    b.release(home)
    assert pick(b, pool, convo[2]) is moved  # the home is idle again; the cache is on ``moved``
    assert pick(b, pool, convo[3]) is moved
    # Another process, which never saw the conversation, sends it to the ring's choice.
    assert pick(Balancer(FakeClock()), pool, convo[3]) is home
    # Over its bound, the remembered worker is passed over like any other.
    b.acquire(moved)
    assert pick(b, pool, convo[3]) is not moved


def test_a_remembered_worker_gone_from_the_pool_or_ejected_is_not_chosen() -> None:
    b = Balancer(FakeClock())
    a, c, d = up("a"), up("c"), up("d")
    convo = turns("x", 3)
    first = pick(b, [a, c, d], convo[0])
    rest = [u for u in (a, c, d) if u is not first]
    assert pick(b, rest, convo[1]) in rest
    b.failed(rest[0])
    b.failed(rest[1])
    assert pick(b, [first, *rest], convo[2]) is first  # the others are ejected


@settings(max_examples=150, deadline=None)
@given(
    upstreams=st.integers(min_value=2, max_value=6),
    factor=st.floats(min_value=1.0, max_value=3.0),
    ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30), st.integers(0, 5)), max_size=300),
)
def test_no_worker_over_its_bound_with_history_and_other_processes(
    upstreams: int, factor: float, ops: list[tuple[int, int, int]]
) -> None:
    """Random arrivals (turns of 31 conversations), departures and signals from other gateway
    processes: every choice, this request included, is within ceil(load_factor * mean) of
    the load the balancer sees (its own in flight plus the others' running and waiting)."""
    clock = FakeClock()
    b = Balancer(clock)
    pool = [up(f"w{i}") for i in range(upstreams)]
    convos = [turns(f"conversation {c}", 6) for c in range(31)]
    held: list[Upstream] = []
    depth = [0] * 31
    for op, conversation, extra in ops:
        if op == 0 and held:
            b.release(held.pop(conversation % len(held)))
            continue
        if op == 1:  # another process's requests, as the worker's metrics show them
            worker = pool[conversation % upstreams]
            mine = b.state(worker.name).in_flight
            b.observe(worker.name, 0, mine + extra, 0.0, clock.monotonic() + 3)
            continue
        messages = convos[conversation][depth[conversation]]
        depth[conversation] = min(5, depth[conversation] + 1)
        now = clock.monotonic()
        loads = [b.state(u.name).load(now) for u in pool]
        bound = math.ceil(factor * (sum(loads) + 1) / upstreams - 1e-9)
        found = affinity(orjson.dumps({"messages": messages}), 256)
        assert found is not None
        chosen = b.pick(
            pool,
            routing=ModelRouting(policy="affinity", load_factor=factor),
            key=found[0],
            prefixes=found[1],
        )
        assert chosen is not None
        assert loads[pool.index(chosen)] + 1 <= bound, (loads, chosen.name, bound)
        b.acquire(chosen)
        held.append(chosen)


def test_the_ring_alone_decides_without_prefixes() -> None:
    b = Balancer(FakeClock())
    pool = [up("a"), up("b"), up("c")]
    key = key_hash(b"conversation")
    first = b.pick(pool, routing=AFFINITY, key=key)
    assert all(b.pick(pool, routing=AFFINITY, key=key) is first for _ in range(10))
    assert len(b.history) == 0
