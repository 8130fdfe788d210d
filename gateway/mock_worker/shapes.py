"""What the mock worker answers on its APIs beside chat, decided without I/O, in vLLM's shapes:
legacy completions (whole and as stream chunks), embeddings (float or base64), rerank and score,
transcripts (json, verbose_json, text, srt, vtt), images, and ``/tokenize`` counts.

Counts agree with chat's: a token is a whitespace-delimited word; a chat message's prompt counts
its words plus 3, so ``/tokenize`` of messages says what a chat request of them reports.
Embeddings and scores are deterministic functions of the text.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from gateway.mock_worker.plan import BadRequest, plan_chat, text_of

EMBEDDING_SIZE = 16  # dimensions unless the request names ``dimensions``
MAX_DIMENSIONS = 8192
# A 1x1 transparent PNG: the image every images request gets.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
WAV_BYTE_RATE = 32_000  # bytes a second assumed for audio that is not a WAV file


def words(text: str) -> int:
    return len(text.split())


def prompts(value: Any) -> list[str]:
    """The prompts of a completions request: a string, strings, token ids, lists of them."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(f"t{v}" for v in value)]
    if isinstance(value, list) and value:
        return [v if isinstance(v, str) else " ".join(f"t{t}" for t in v) for v in value]
    raise BadRequest("`prompt` must be a string, a list of strings or token ids.")


def completion_choices(
    body: dict[str, Any], canned: Sequence[str], default_model: str
) -> list[tuple[int, list[str], str, str]]:
    """Every choice: (index, its tokens, its prompt, its finish reason); ``n`` per prompt."""
    n = body.get("n") or 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise BadRequest("`n` must be an integer from 1 to 128.")
    out = []
    for p, prompt in enumerate(prompts(body.get("prompt"))):
        chat = {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": body.get("max_tokens"),
            "stop": body.get("stop"),
        }
        plan = plan_chat(chat, canned, iter(()), default_model)
        for k in range(n):
            out.append((p * n + k, list(plan.content), prompt, plan.finish_reason))
    return out


def logprobs_of(tokens: list[str], top: Any) -> dict[str, Any] | None:
    if top is None:
        return None
    if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20:
        raise BadRequest("`logprobs` must be an integer from 0 to 20.")
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": [-0.25] * len(tokens),
        "top_logprobs": [{t: -0.25} for t in tokens] if top else None,
        "text_offset": offsets,
    }


def completion_body(body: dict[str, Any], model: str, canned: Sequence[str], usage: bool) -> bytes:
    """The non-streamed ``text_completion`` answer."""
    choices, generated = [], 0
    for index, tokens, prompt, finish in completion_choices(body, canned, model):
        text = "".join(tokens)
        choices.append(
            {
                "index": index,
                "text": (prompt + text) if body.get("echo") is True else text,
                "logprobs": logprobs_of(tokens, body.get("logprobs")),
                "finish_reason": finish,
                "stop_reason": None,
            }
        )
        generated += len(tokens)
    prompt_tokens = sum(words(p) for p in prompts(body.get("prompt")))
    answer: dict[str, Any] = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage:
        answer["usage"] = _usage(prompt_tokens, generated)
    return orjson.dumps(answer)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_chunks(
    body: dict[str, Any], model: str, canned: Sequence[str], usage: bool
) -> Iterator[bytes]:
    """The SSE events of a streamed completion: a chunk per token, a finish chunk per choice,
    the usage chunk when asked (``stream_options.include_usage``), ``[DONE]``."""
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    generated = 0

    def event(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
        chunk = {"id": cid, "object": "text_completion", "created": created, "model": model}
        chunk["choices"] = choices
        if usage:
            chunk["usage"] = None
        chunk.update(extra or {})
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    for index, tokens, prompt, finish in completion_choices(body, canned, model):
        if body.get("echo") is True:
            yield event([_text_choice(index, prompt, None)])
        for token in tokens:
            yield event([_text_choice(index, token, None)])
        generated += len(tokens)
        yield event([_text_choice(index, "", finish)])
    if usage:
        prompt_tokens = sum(words(p) for p in prompts(body.get("prompt")))
        yield event([], {"usage": _usage(prompt_tokens, generated)})
    yield b"data: [DONE]\n\n"


def _text_choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on ``text`` and ``dimensions``."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "replace")).digest()[:8], "big")
    rng = random.Random(seed)
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def embeddings_body(body: dict[str, Any], model: str, usage: bool) -> bytes:
    value = body.get("input")
    if value is None or value == [] or value == "":
        raise BadRequest("`input` is required and must not be empty.")
    texts = prompts(value)
    dimensions = body.get("dimensions") or EMBEDDING_SIZE
    if not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_DIMENSIONS:
        raise BadRequest(f"`dimensions` must be an integer from 1 to {MAX_DIMENSIONS}.")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("`encoding_format` must be 'float' or 'base64'.")
    data = []
    for index, text in enumerate(texts):
        vector = embedding(text, dimensions)
        encoded: Any = vector
        if encoding == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"index": index, "object": "embedding", "embedding": encoded})
    answer: dict[str, Any] = {
        "id": f"embd-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
    }
    if usage:
        tokens = sum(words(t) for t in texts)
        answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps(answer)


def relevance(query: str, document: str) -> float:
    """Shared words over all words (Jaccard), nudged by length so ties are rare."""
    a, b = set(query.lower().split()), set(document.lower().split())
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b) + 1e-6 / (1 + len(document))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return text_of(value.get("content")) or str(value.get("text", ""))
    return ""


def rerank_body(body: dict[str, Any], model: str, usage: bool) -> bytes:
    query, documents = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not isinstance(documents, list) or not documents:
        raise BadRequest("`query` (a string) and `documents` (a non-empty list) are required.")
    texts = [_text(d) for d in documents]
    ranked = sorted(range(len(texts)), key=lambda i: -relevance(query, texts[i]))
    top = body.get("top_n") or len(texts)
    results = [
        {"index": i, "document": {"text": texts[i]}, "relevance_score": relevance(query, texts[i])}
        for i in ranked[:top]
    ]
    answer: dict[str, Any] = {"id": f"rerank-{uuid.uuid4().hex}", "model": model}
    if usage:
        answer["usage"] = {"total_tokens": words(query) * len(texts) + sum(map(words, texts))}
    answer["results"] = results
    return orjson.dumps(answer)


def score_body(body: dict[str, Any], model: str, usage: bool) -> bytes:
    for first, second in (("queries", "documents"), ("queries", "items"), ("data_1", "data_2")):
        if first in body and second in body:
            left, right = body[first], body[second]
            break
    else:
        left, right = body.get("text_1"), body.get("text_2")
    lefts = [_text(v) for v in (left if isinstance(left, list) else [left])]
    rights = [_text(v) for v in (right if isinstance(right, list) else [right])]
    if not lefts or not rights or (len(lefts) != 1 and len(lefts) != len(rights)):
        raise BadRequest("`text_1` must be one text or as many as `text_2`.")
    pairs = list(zip(lefts * len(rights) if len(lefts) == 1 else lefts, rights, strict=True))
    data = [
        {"index": i, "object": "score", "score": relevance(a, b)} for i, (a, b) in enumerate(pairs)
    ]
    answer: dict[str, Any] = {
        "id": f"score-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
    }
    if usage:
        tokens = sum(words(a) + words(b) for a, b in pairs)
        answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
    return orjson.dumps(answer)


def audio_seconds(data: bytes) -> float:
    """The length of a PCM WAV file from its header; else at ``WAV_BYTE_RATE``."""
    if len(data) >= 44 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        byte_rate = int.from_bytes(data[28:32], "little")
        if byte_rate > 0:
            return max(0.0, (len(data) - 44) / byte_rate)
    return len(data) / WAV_BYTE_RATE


def transcript(filename: str, data: bytes, task: str) -> tuple[str, float]:
    seconds = audio_seconds(data)
    verb = "Transcribed" if task == "transcribe" else "Translated"
    return f"{verb} {filename}: {seconds:.2f} seconds of audio.", seconds


def transcript_answer(text: str, seconds: float, task: str, fmt: str) -> tuple[bytes, str]:
    """The answer body and its content type for ``response_format`` ``fmt``."""
    if fmt == "json":
        usage = {"type": "duration", "seconds": math.ceil(seconds)}
        return orjson.dumps({"text": text, "usage": usage}), "application/json"
    if fmt == "verbose_json":
        segment = {"id": 0, "start": 0.0, "end": round(seconds, 3), "text": text}
        answer = {"task": task, "language": "en", "duration": round(seconds, 3), "text": text}
        return orjson.dumps({**answer, "segments": [segment]}), "application/json"
    end = _clock(seconds)
    if fmt == "srt":
        return f"1\n00:00:00,000 --> {end.replace('.', ',')}\n{text}\n\n".encode(), "text/plain"
    if fmt == "vtt":
        return f"WEBVTT\n\n00:00:00.000 --> {end}\n{text}\n\n".encode(), "text/plain"
    if fmt == "text":
        return (text + "\n").encode(), "text/plain"
    raise BadRequest("`response_format` must be json, text, srt, verbose_json or vtt.")


def _clock(seconds: float) -> str:
    millis = round(seconds * 1000)
    h, rest = divmod(millis, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def transcript_chunks(text: str, model: str, seconds: float) -> Iterator[bytes]:
    """A streamed transcription as vLLM sends it: a ``transcription.chunk`` per word, then the
    usage, then ``[DONE]``."""
    cid, created = f"trsc-{uuid.uuid4().hex}", int(time.time())
    for word in text.split(" "):
        delta = {"content": word + " "}
        chunk = {"id": cid, "object": "transcription.chunk", "created": created, "model": model}
        chunk["choices"] = [{"delta": delta}]
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    yield b"data: " + orjson.dumps({"id": cid, "object": "transcription.chunk", "usage": usage})
    yield b"\n\ndata: [DONE]\n\n"


def images_body(n: Any, fmt: Any) -> bytes:
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        raise BadRequest("`n` must be an integer from 1 to 10.")
    if fmt not in (None, "b64_json", "url"):
        raise BadRequest("`response_format` must be 'url' or 'b64_json'.")
    encoded = base64.b64encode(PNG).decode()
    data = [
        {"url": f"https://mock.invalid/images/{uuid.uuid4().hex}.png"}
        if fmt == "url"
        else {"b64_json": encoded}
        for _ in range(n)
    ]
    return orjson.dumps({"created": int(time.time()), "data": data})


def tokenize_body(body: dict[str, Any]) -> bytes:
    """vLLM's ``{"count", "max_model_len", "tokens"}`` for ``prompt`` or ``messages``;
    llama.cpp's ``{"tokens"}`` for ``content``."""
    if "messages" in body:
        messages = body["messages"]
        if not isinstance(messages, list):
            raise BadRequest("`messages` must be a list.")
        count = sum(words(text_of(m.get("content"))) + 3 for m in messages if isinstance(m, dict))
    elif "prompt" in body:
        count = sum(words(p) for p in prompts(body["prompt"]))
    elif isinstance(body.get("content"), str):
        return orjson.dumps({"tokens": list(range(words(body["content"])))})
    else:
        raise BadRequest("`prompt` or `messages` is required.")
    return orjson.dumps({"count": count, "max_model_len": 32768, "tokens": list(range(count))})
