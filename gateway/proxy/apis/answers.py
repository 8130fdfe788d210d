"""What the gateway reads from, and changes in, a worker's answer to a non-chat API: the usage
(tokens, images, audio seconds) each API counts, and the model's public name put back where the
worker wrote its own ``upstream_model``.

Large answers (embeddings are tens of kilobytes of floats) are not parsed whole: the usage object
is found by its key from the end and parsed alone, and the model's name is replaced in the bytes.
Both are exact on JSON: a ``"usage"`` or ``"model"`` key written with its quotes cannot occur
inside a JSON string, where quotes are escaped.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.proxy.govern import count

_USAGE_KEY = b'"usage"'
_SPACE = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class Counted:
    """What one answer counts: tokens (None: not reported), images made, audio seconds."""

    prompt: int | None = None
    completion: int = 0
    images: int = 0
    seconds: float = 0.0

    def usage(self) -> dict[str, int] | None:
        """The usage ``govern.settle`` reads, or None when the worker reported no tokens."""
        if self.prompt is None:
            return None
        return {"prompt_tokens": self.prompt, "completion_tokens": self.completion}


def usage_in(raw: bytes) -> dict[str, Any] | None:
    """The last ``"usage": {...}`` object of a JSON answer, parsed alone (a ``"usage"`` key
    whose value is not an object is passed over); None when there is none."""
    at = len(raw)
    while (at := raw.rfind(_USAGE_KEY, 0, at)) >= 0:
        start = _skip(raw, at + len(_USAGE_KEY))
        if start < len(raw) and raw[start] == ord(":"):
            start = _skip(raw, start + 1)
            end = _object_end(raw, start)
            if end is not None:
                try:
                    usage = orjson.loads(raw[start:end])
                except orjson.JSONDecodeError:
                    return None
                return usage if isinstance(usage, dict) else None
    return None


def _skip(raw: bytes, at: int) -> int:
    while at < len(raw) and raw[at] in _SPACE:
        at += 1
    return at


def _object_end(raw: bytes, start: int) -> int | None:
    """The end (exclusive) of the JSON object starting at ``start``; strings are skipped."""
    if start >= len(raw) or raw[start] != ord("{"):
        return None
    depth, i, size = 0, start, len(raw)
    while i < size:
        byte = raw[i]
        if byte == 0x22:  # a string: skip to its closing quote
            i += 1
            while i < size and raw[i] != 0x22:
                i += 2 if raw[i] == 0x5C else 1
        elif byte == 0x7B:
            depth += 1
        elif byte == 0x7D:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def tokens(raw: bytes) -> Counted:
    """Completions, embeddings, rerank and score: ``usage`` (OpenAI's and vLLM's
    ``prompt_tokens``/``completion_tokens``, or only ``total_tokens``), else Cohere's
    ``meta.billed_units``/``meta.tokens``."""
    usage = usage_in(raw)
    if usage is not None:
        return of_usage(usage)
    meta = _cohere_meta(raw)
    if meta is not None:
        return meta
    return Counted()


def of_usage(usage: dict[str, Any]) -> Counted:
    """Tokens of a ``usage`` object, in any of the forms workers write it."""
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return Counted(count(usage.get("prompt_tokens")), count(usage.get("completion_tokens")))
    if "input_tokens" in usage or "output_tokens" in usage:
        return Counted(count(usage.get("input_tokens")), count(usage.get("output_tokens")))
    if "total_tokens" in usage:
        return Counted(count(usage.get("total_tokens")))
    if usage.get("type") == "duration":
        return Counted(seconds=seconds(usage.get("seconds")))
    return Counted()


def _cohere_meta(raw: bytes) -> Counted | None:
    if b'"meta"' not in raw:
        return None
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    meta = answer.get("meta") if isinstance(answer, dict) else None
    if not isinstance(meta, dict):
        return None
    for key in ("tokens", "billed_units"):
        part = meta.get(key)
        if isinstance(part, dict) and "input_tokens" in part:
            return Counted(count(part.get("input_tokens")), count(part.get("output_tokens")))
    return None


def seconds(value: object) -> float:
    """Audio seconds a worker reported: a finite number ≥ 0, else 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    number = float(value)
    return number if 0 <= number < 1e9 else 0.0  # NaN fails both comparisons


def images(answer: object) -> Counted:
    """An images answer (parsed): the images in ``data``, and tokens when it reports them."""
    if not isinstance(answer, dict):
        return Counted()
    data = answer.get("data")
    made = len(data) if isinstance(data, list) else 0
    usage = answer.get("usage")
    counted = of_usage(usage) if isinstance(usage, dict) else Counted()
    return Counted(counted.prompt, counted.completion, images=made)


def audio(answer: object) -> Counted:
    """A transcription or translation answer (parsed): its ``usage`` (seconds or tokens), else
    the ``duration`` of a verbose answer."""
    if not isinstance(answer, dict):
        return Counted()
    usage = answer.get("usage")
    counted = of_usage(usage) if isinstance(usage, dict) else Counted()
    if not counted.seconds and "duration" in answer:
        return Counted(counted.prompt, counted.completion, seconds=seconds(answer["duration"]))
    return counted


@functools.lru_cache(maxsize=256)
def renamer(upstream_model: str, public: str) -> re.Pattern[bytes] | None:
    """The pattern of ``"model": "<upstream_model>"`` in an answer, when the public name the
    client asked for differs (else None: nothing to do)."""
    if upstream_model == public:
        return None
    return re.compile(rb'"model"\s*:\s*' + re.escape(orjson.dumps(upstream_model)))


def rename(raw: bytes, pattern: re.Pattern[bytes] | None, public: str, first: bool) -> bytes:
    """``raw`` with the worker's model name replaced by ``public``: the first occurrence (a
    whole answer) or every one (a batch of stream events)."""
    if pattern is None:
        return raw
    named = b'"model":' + orjson.dumps(public)
    return pattern.sub(lambda _: named, raw, count=1 if first else 0)
