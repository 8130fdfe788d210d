"""What the routing bench (``bench/routing.py``) replays and under what: the requests in flight,
the load factor, the signals' interval, the policies, the multi-turn workload, and the hit rate
of one worker with an infinite cache (the ideal)."""

from __future__ import annotations

import random

from gpu_worker import BLOCK, block_hashes, prompt_text

IN_FLIGHT = 16
LOAD_FACTOR = 1.25
# A simulated request lasts about half a second (real ones: seconds to minutes): the signals are
# read at the same fraction of a request's life as the default 1 s is of a real one.
SIGNALS_INTERVAL = 0.1
# "policy@load_factor": affinity with a looser bound, to show what the bound costs in hits.
# "+pinned": each conversation through one gateway (as a client keeping its connection does);
# "+random": each request through a gateway drawn at random (a load balancer's spread);
# otherwise every request goes to the other gateway than the one before it.
POLICIES = (
    "least_loaded",
    "round_robin",
    "affinity",
    "affinity@2",
    "least_loaded+pinned",
    "affinity+pinned",
    "least_loaded+random",
    "affinity+random",
)
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()  # noqa: SIM905


def words(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(rng.choice(WORDS) + str(rng.randrange(1000)))
    return " ".join(out)


def workload(conversations: int, turns: int, seed: int = 16) -> list[list[list[dict[str, str]]]]:
    """Each conversation's prompts, turn by turn: 4 shared system prompts, a long opening
    message of its own, then an answer and a follow-up per turn."""
    rng = random.Random(seed)
    systems = [f"You are assistant {i}. " + words(rng, 600) for i in range(4)]
    out = []
    for c in range(conversations):
        messages = [
            {"role": "system", "content": systems[c % len(systems)]},
            {"role": "user", "content": f"Document {c}: " + words(rng, 2000)},
        ]
        prompts = [list(messages)]
        for _ in range(turns - 1):
            messages += [
                {"role": "assistant", "content": words(rng, 400)},
                {"role": "user", "content": words(rng, 200)},
            ]
            prompts.append(list(messages))
        out.append(prompts)
    return out


def ideal_hits(prompts: list[list[dict[str, str]]]) -> tuple[int, int]:
    """(hit tokens, prompt tokens) of one worker with an infinite cache, in this order."""
    seen: set[bytes] = set()
    hits = total = 0
    for messages in prompts:
        text = prompt_text({"messages": messages})
        blocks = block_hashes(text)
        total += max(1, len(text) // 4)
        hit = 0
        for name in blocks:
            if name not in seen:
                break
            hit += 1
        hits += hit * BLOCK
        seen.update(blocks)
    return hits, total
