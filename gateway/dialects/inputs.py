"""What a request to a model API carries as input, checked before anything goes upstream: the
image inputs that need the ``vision`` permission (both dialects and the Responses items), and
the fields each non-chat API must have (legacy completions, embeddings, rerank, score, image
generation), each bad one a 400 naming it. Pure: dict in, verdict out.

The checks are those the gateway needs to route, reserve and count (the model, the input it
estimates, ``n``, ``stream``); the worker still validates the rest of the body its own way.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequest

# Content parts and blocks that carry an image: OpenAI chat, Anthropic Messages, Responses, and
# the types vLLM's chat parser reads besides (image embeddings, a video's frames).
IMAGE_PARTS = frozenset(
    {"image_url", "image", "input_image", "image_embeds", "image_pil", "video_url", "video_embeds"}
)
# A part without a ``type`` (or with a ``uuid``: vLLM then ignores the ``type``) is read by vLLM
# by the field it carries, present even as null (a ``uuid`` names cached media).
IMAGE_FIELDS = ("image_url", "image_embeds", "image_pil", "video_url", "video_embeds")
# Content parts that carry audio (the ``audio`` permission, as /v1/audio/* needs): OpenAI's
# ``input_audio``, and vLLM's ``audio_url`` and ``audio_embeds``; by field as for images.
AUDIO_PARTS = frozenset({"input_audio", "audio_url", "audio_embeds"})
AUDIO_FIELDS = ("input_audio", "audio_url", "audio_embeds")
_MEDIA_FIELDS = frozenset(IMAGE_FIELDS + AUDIO_FIELDS)
# The pairs of fields a score request may name its two sides by (vLLM's shapes, oldest last).
SCORE_PAIRS = (
    ("queries", "documents"),
    ("queries", "items"),
    ("data_1", "data_2"),
    ("text_1", "text_2"),
)
# Every side of a rerank or score request (a side may be multimodal ``{"content": [...]}``).
_SIDES = ("query", "documents", "queries", "items", "data_1", "data_2", "text_1", "text_2")
_PAIRS = (("query", "documents"), *SCORE_PAIRS)  # rerank's sides, then score's
MAX_N = 128  # completions or images asked for in one request
# The most tokens one answer may ask for (2**24: past any model's context): a limit beyond it
# is a 400, so a reservation (x MAX_N) stays exact in the Redis store's Lua doubles (2**53).
MAX_OUTPUT_TOKENS = 2**24


VISION, AUDIO = 1, 2  # what a media input needs, as bits
_NEEDS: tuple[tuple[str, ...], ...] = ((), ("vision",), ("audio",), ("vision", "audio"))


def media_permissions(body: object) -> tuple[str, ...]:
    """The permissions the media inputs of a request need beyond its route's: ``vision`` for an
    image (or a video), ``audio`` for audio, in that order; ``()`` for text alone.

    Read where a worker reads media: a chat (OpenAI), Messages (Anthropic) or Responses body's
    ``messages``/``input`` items (an embeddings request's too: vLLM embeds chat ``messages``),
    and the multimodal ``{"content": [...]}`` sides of a rerank or score request.
    """
    return _NEEDS[_media_in(body)]


def has_image_input(body: object) -> bool:
    """Whether a chat (OpenAI), Messages (Anthropic) or Responses body carries an image:
    an ``image_url`` part, an ``image`` block (tool results included) or an ``input_image``.

    Cheap for text-only chats: a message whose content is a string is passed over at once.
    """
    return bool(_media_in(body) & VISION)


def may_carry_image(raw: bytes) -> bool:
    """Whether a request's bytes could hold an image part: they name ``image`` or ``video``,
    or hold a ``\\u`` escape (``"\\u0069mage_url"`` parses to ``"image_url"``). A cheap test
    before ``has_image_input``, so a plain text chat pays a few byte searches."""
    find = raw.find  # (``find``: half the cost of ``in`` with a bytes needle, CPython 3.11)
    return find(b"image") >= 0 or find(b"video") >= 0 or find(b"\\u") >= 0


def may_carry_media(raw: bytes) -> bool:
    """``may_carry_image``, or the bytes name ``audio``: the cheap test before
    ``media_permissions`` (every media type and field name holds one of those words)."""
    find = raw.find
    return find(b"image") >= 0 or find(b"video") >= 0 or find(b"audio") >= 0 or find(b"\\u") >= 0


def media_needed(raw: bytes, body: object) -> tuple[str, ...]:
    """``media_permissions`` of a request, behind the cheap test of its bytes (``raw``): a
    text request pays a few byte searches and no walk."""
    return media_permissions(body) if may_carry_media(raw) else ()


def _media_in(body: object) -> int:
    if type(body) is not dict:
        return 0
    found = 0
    for key in ("messages", "input"):
        items = body.get(key)
        if type(items) is list:
            for item in items:
                found |= _carried(item)
    for side in _SIDES:  # rerank and score: a side's multimodal content, or a list of them
        value = body.get(side)
        for item in value if type(value) is list else (value,):
            found |= _carried(item)
    return found


def _carried(item: object, depth: int = 0) -> int:
    """The media of a message (or input item), of its content (a Responses tool output's
    ``output``), or of the content of a block in it (a tool result): two levels down at most,
    so no nesting a client sends can make the walk deep."""
    if type(item) is not dict:
        return 0
    found = _kind(item)  # a Responses input item may itself be an image
    if depth > 1:
        return found
    for key in ("content", "output"):
        parts = item.get(key)
        if type(parts) is list:
            for part in parts:
                found |= _carried(part, depth + 1)
    return found


def _kind(part: dict[str, Any]) -> int:
    """A part is what its ``type`` says (a client's may be anything). vLLM reads a part without
    a string ``type``, or with a ``uuid`` whatever its ``type``, by the fields it carries (a
    field present as null names media cached under the ``uuid``): so does this."""
    kind = part.get("type")
    found = 0
    if type(kind) is str:
        found = VISION if kind in IMAGE_PARTS else AUDIO if kind in AUDIO_PARTS else 0
        if part.get("uuid") is None:
            return found
    if part.keys().isdisjoint(_MEDIA_FIELDS):  # most parts: one pass over their few keys
        return found
    if any(field in part for field in IMAGE_FIELDS):
        found |= VISION
    if any(field in part for field in AUDIO_FIELDS):
        found |= AUDIO
    return found


def _bad(param: str, problem: str) -> BadRequest:
    return BadRequest(f"'{param}' {problem}", param=param)


def model_of(body: object, what: str) -> dict[str, Any]:
    """``body`` as an object with a ``model`` named, or the 400 saying what it lacks."""
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object: {what}.")
    model = body.get("model")
    if model is None:
        raise _bad("model", "is required: name the model to use.")
    if not isinstance(model, str) or not model:
        raise _bad("model", "must be a non-empty string.")
    return body


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise _bad(name, "must be true or false.")
    return value is True


def whole(body: dict[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    """The whole number ``body[name]`` within ``low`` to ``high``, None when absent or null."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(name, f"must be a whole number ≥ {low}.")
    if high is not None and value > high:
        raise _bad(name, f"must be at most {high}.")
    return value


def _is_tokens(value: object) -> bool:
    return type(value) is list and bool(value) and all(type(t) is int for t in value)


def _texts_or_tokens(value: object, name: str) -> None:
    """A string, or a non-empty list of strings, of token ids, or of lists of token ids."""
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _bad(name, "must be a string or a list of strings or token ids.")
    if not value:
        raise _bad(name, "must not be an empty list: send at least one input.")
    if all(isinstance(v, str) for v in value) or _is_tokens(value):
        return
    if all(_is_tokens(v) for v in value):
        return
    raise _bad(name, "must be a string, or a list of strings, of token ids or of token-id lists.")


def check_completions(body: object) -> dict[str, Any]:
    """A legacy completions request: ``model``, ``prompt``; ``stream``, ``echo``, ``n``,
    ``best_of`` and ``max_tokens`` of the right types."""
    body = model_of(body, "'model' and 'prompt'")
    if "prompt" not in body:
        raise _bad("prompt", "is required: the text (or texts) to complete.")
    _texts_or_tokens(body["prompt"], "prompt")
    _flag(body, "stream")
    _flag(body, "echo")
    whole(body, "n", 1, MAX_N)
    whole(body, "best_of", 1, MAX_N)
    whole(body, "max_tokens", 1, MAX_OUTPUT_TOKENS)
    return body


def completions_wanted(body: dict[str, Any]) -> int:
    """How many completions a checked request asks the worker to generate: ``n`` (or
    ``best_of``) for each of its prompts (a list of texts, or of token lists, is several)."""
    prompt = body.get("prompt")
    prompts = len(prompt) if isinstance(prompt, list) and prompt and not _ints(prompt) else 1
    return max(body.get("n") or 1, body.get("best_of") or 1) * prompts


def _ints(values: list[Any]) -> bool:
    return all(type(v) is int for v in values)


def check_embeddings(body: object) -> dict[str, Any]:
    """An embeddings request: ``model``, ``input`` (a string, strings, token ids or lists of
    them), ``encoding_format`` float or base64, ``dimensions`` ≥ 1."""
    body = model_of(body, "'model' and 'input'")
    if "input" not in body:
        raise _bad("input", "is required: the text (or texts) to embed.")
    _texts_or_tokens(body["input"], "input")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise _bad("encoding_format", "must be 'float' or 'base64'.")
    whole(body, "dimensions", 1)
    return body


def _scored(value: object, name: str) -> None:
    """One side of a rerank or score request: a string, an object (multimodal content) or a
    non-empty list of them."""
    if isinstance(value, (str, dict)):
        return
    if not isinstance(value, list):
        raise _bad(name, "must be a string or a list of strings.")
    if not value:
        raise _bad(name, "must not be an empty list: send at least one.")
    if not all(isinstance(v, (str, dict)) for v in value):
        raise _bad(name, "must be a list of strings (or of content objects).")


def check_rerank(body: object) -> dict[str, Any]:
    """A rerank request (vLLM's and Cohere's shape): ``model``, ``query``, ``documents``."""
    body = model_of(body, "'model', 'query' and 'documents'")
    query = body.get("query")
    if query is None:
        raise _bad("query", "is required: the text to rank the documents against.")
    if not isinstance(query, (str, dict)):
        raise _bad("query", "must be a string.")
    if "documents" not in body:
        raise _bad("documents", "is required: the list of texts to rank.")
    if isinstance(body["documents"], str):
        raise _bad("documents", "must be a list of strings.")
    _scored(body["documents"], "documents")
    whole(body, "top_n", 0)
    return body


def scored_pairs(body: dict[str, Any]) -> tuple[int, int]:
    """A checked rerank or score request's (UTF-8 bytes of one side, pairs scored): the worker
    reads that side once for every item of the other, so its cost grows with their product.
    Bytes, as the body's own estimate counts (a CJK character is a token, not a quarter).

    The largest over every pair of sides the body names: a worker picks its pair by its own
    rules (vLLM's score request by the first of ``SCORE_PAIRS`` it holds, keeping any other
    field as an extra), so a stray short side must not stand for the one it reads."""
    chars, pairs = 0, 1
    for first, second in _PAIRS:
        if first in body and second in body:
            one, other = _inputs(body[first]), _inputs(body[second])
            size = max((len(str(x).encode()) for x in one), default=0)
            count = max(len(one), len(other))  # several against several: pair by pair
            if size * count > chars * pairs:
                chars, pairs = size, count
    return chars, pairs


def _inputs(side: object) -> list[Any]:
    """A side as the worker reads it: a list its items, a multimodal object one input per part
    of its ``content`` (vLLM: "each content item is a separate scoring input"), else one."""
    if isinstance(side, list):
        return side
    if isinstance(side, dict):
        content = side.get("content")
        if isinstance(content, list) and content:
            return content
    return [side]


def check_score(body: object) -> dict[str, Any]:
    """A score request: ``model`` and one pair of sides (``queries``/``documents``,
    ``queries``/``items``, ``data_1``/``data_2`` or ``text_1``/``text_2``)."""
    body = model_of(body, "'model', 'text_1' and 'text_2'")
    for first, second in SCORE_PAIRS:
        if first in body and second in body:
            _scored(body[first], first)
            _scored(body[second], second)
            return body
    raise BadRequest(
        "'text_1' and 'text_2' are required (or 'queries' and 'documents'): the texts to "
        "score against each other.",
        param="text_1",
    )


def check_images(body: object) -> dict[str, Any]:
    """An image generation request: ``model``, ``prompt``, ``n`` from 1 to 128."""
    body = model_of(body, "'model' and 'prompt'")
    prompt = body.get("prompt")
    if prompt is None:
        raise _bad("prompt", "is required: describe the image to make.")
    if not isinstance(prompt, str) or not prompt:
        raise _bad("prompt", "must be a non-empty string.")
    whole(body, "n", 1, MAX_N)
    _flag(body, "stream")
    return body
