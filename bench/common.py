"""What every part of the benchmark shares: paths, the request, the canned answers, the knobs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
RESULTS = BENCH / "RESULTS.md"
PYTHON = ROOT / ".venv" / "bin" / "python"
GATEWAY = ROOT / ".venv" / "bin" / "gateway"
POST_LUA = BENCH / "post.lua"

CHAT_PATH = "/v1/chat/completions"
SSE_PATH = "/sse/v1/chat/completions"  # the canned stream (the gateway's upstream url ends /sse)
REQUEST = {
    "model": "bench-model",
    "messages": [{"role": "user", "content": "Say hello"}],
    "max_tokens": 16,
}
# The gateway's key for this bench, declared as a static key in the generated config (by its
# SHA-256); loopback only, never a secret. bench/post.lua sends the same header (unless
# BENCH_KEY is set in wrk's environment: the issued-key sample of the governed arms).
BENCH_KEY = "sk-bench-loopback-only"
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {BENCH_KEY}"}
STREAM_CHUNKS = 20
LOAD_CPU = "1"  # wrk, the canned nginx, redis (one-worker arms), the paced upstream, the clients
SERVER_CPU = "0"  # the one-worker server under test
BOTH_CPUS = "0,1"
STARTUP_DEADLINE = 20.0
# The governed arms' limits: all set, none ever reached during a run.
GOVERNED_RPM = 100_000_000
GOVERNED_CONCURRENCY = 100_000
CAPPED_SLOTS = 4096  # governed-capped-1w: every upstream capped far above what wrk sends
GOVERNED_TOKENS = 10**12


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass(frozen=True)
class Settings:
    duration: float = env_float("BENCH_DURATION", 10)
    latency_duration: float = env_float("BENCH_LATENCY_DURATION", 5)
    warmup: float = env_float("BENCH_WARMUP", 2)
    stream_duration: float = env_float("BENCH_STREAM_DURATION", 3)
    connections: int = int(env_float("BENCH_CONNECTIONS", 64))
    arms: tuple[str, ...] = tuple(
        a.strip() for a in os.environ.get("BENCH_ARMS", "").split(",") if a.strip()
    )
    pin: bool = os.environ.get("BENCH_PIN", "1") != "0" and (os.cpu_count() or 1) >= 2
    profile: bool = os.environ.get("BENCH_PROFILE", "0") == "1"
    redis_sample: float = env_float("BENCH_REDIS_SAMPLE", 2)
    paced_streams: int = int(env_float("BENCH_PACED_STREAMS", 512))
    paced_chunks: int = int(env_float("BENCH_PACED_CHUNKS", 64))
    paced_interval_ms: float = env_float("BENCH_PACED_INTERVAL_MS", 20)
    paced_rounds: int = int(env_float("BENCH_PACED_ROUNDS", 2))
    litellm: bool = os.environ.get("BENCH_LITELLM", "1") != "0"
    litellm_install_timeout: float = env_float("BENCH_LITELLM_INSTALL_TIMEOUT", 300)
    soak: float = env_float("BENCH_SOAK", 0)
    pairs: int = int(env_float("BENCH_PAIRS", 5))
    pair_duration: float = env_float("BENCH_PAIR_DURATION", 5)


class ArmFailed(Exception):
    """The arm cannot be measured (did not start, answered non-2xx, wrong body...)."""


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# --- canned answers ------------------------------------------------------------------------------


def canned_json() -> str:
    answer = {
        "id": "chatcmpl-bench000000000000000000000001",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "system_fingerprint": "fp_bench0001",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! How can I help you today?",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 10, "total_tokens": 19},
    }
    return json.dumps(answer, separators=(",", ":"))


def canned_sse() -> str:
    base = {
        "id": "chatcmpl-bench000000000000000000000001",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
    }
    events = []
    for i in range(STREAM_CHUNKS):
        delta: dict[str, Any] = {"content": f"tok{i} "}
        if i == 0:
            delta = {"role": "assistant", "content": ""}
        finish = "stop" if i == STREAM_CHUNKS - 1 else None
        if finish:
            delta = {}
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        events.append({**base, "choices": [choice]})
    usage = {"prompt_tokens": 9, "completion_tokens": STREAM_CHUNKS - 2, "total_tokens": 27}
    events.append({**base, "choices": [], "usage": usage})
    lines = [f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events]
    return "".join(lines) + "data: [DONE]\n\n"
