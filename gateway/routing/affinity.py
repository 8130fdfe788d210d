"""The affinity key of a chat request: which requests should land on the same worker. Pure.

An explicit session wins: ``prompt_cache_key``, else ``session_id``, else ``user`` (the OpenAI
field; an Anthropic ``metadata.user_id`` arrives as ``user``, and Claude Code's, a JSON object
or a ``…_session_<uuid>`` string, yields its session id). Otherwise the key is the canonical
text of the prompt's prefix: the system prompt and the messages before the first assistant
turn, cut at ``affinity_prefix_tokens`` times 4 characters. Stopping before the first answer keeps
one key for every turn of a conversation (turn 5 starts with the same system prompt and opening
message as turn 1), so the worker that holds its KV cache keeps getting it.

Computed from the body the upstream receives (OpenAI chat JSON, whichever dialect the client
spoke), so both dialects key alike.

With the key come the prompt's prefixes: a hash per message, each chaining the ones before it,
so that turn 5's prefixes include turn 4's whole prompt. ``routing.history`` remembers where
each prompt went, and a prompt extending one sent before follows it (its KV cache is there).
These are Python's salted hashes: per process, like the memory they index.
"""

from __future__ import annotations

import re

import orjson

from gateway.routing.ring import key_hash

CHARS_PER_TOKEN = 4
# A long message is named by its length, start and end in its prefix hash: half the cost of
# hashing all of it, and a collision only sends a request to a worker under its bound.
_SAMPLE = 128
_SESSION_SUFFIX = re.compile(r"_session_([0-9A-Za-z-]{8,64})$")


# A request's position on the ring, and its prompt's prefixes (one per message, shortest first).
# A plain tuple: a frozen dataclass costs 0.6 µs more to make, per request.
Affinity = tuple[int, tuple[int, ...]]


def affinity(payload: bytes, prefix_tokens: int) -> Affinity | None:
    """The ring position and prompt prefixes of this request, or None when it has neither
    session nor prompt (or is not a JSON object)."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    prefixes, text = read(body.get("messages"), prefix_tokens * CHARS_PER_TOKEN)
    session = session_of(body)
    if session is not None:
        key = key_hash(b"session\0" + session.encode("utf-8", "surrogatepass"))
    elif text:
        key = key_hash(b"prefix\0" + text.encode("utf-8", "surrogatepass"))
    else:
        return None
    return key, prefixes


def affinity_key(payload: bytes, prefix_tokens: int) -> int | None:
    """The ring position of this request, or None when it has neither session nor prompt."""
    found = affinity(payload, prefix_tokens)
    return found[0] if found is not None else None


def session_of(body: dict[str, object]) -> str | None:
    """The session the client named, if any."""
    for field in ("prompt_cache_key", "session_id"):
        value = body.get(field)
        if isinstance(value, str) and value:
            return value
    user = body.get("user")
    if not isinstance(user, str) or not user:
        return None
    return claude_code_session(user) or user


def claude_code_session(user_id: str) -> str | None:
    """Claude Code's ``metadata.user_id`` names the user and the session; the session is what
    shares a prompt. It is a JSON object with ``session_id`` or ``user_…_session_<uuid>``."""
    if user_id.startswith("{"):
        try:
            parsed = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            return None
        session = parsed.get("session_id") if isinstance(parsed, dict) else None
        return session if isinstance(session, str) and session else None
    found = _SESSION_SUFFIX.search(user_id)
    return found.group(1) if found else None


def read(messages: object, limit: int) -> tuple[tuple[int, ...], str]:
    """In one pass over the messages: a hash per message of its role and content chained with
    the ones before it, and the prompt's prefix as text (the system prompt and the messages
    before the first assistant turn: role, then content, per message; at most ``limit``
    characters)."""
    if not isinstance(messages, list):
        return (), ""
    prefixes: list[int] = []
    parts: list[str] = []
    chained = size = 0
    keying = True
    for message in messages:
        if not isinstance(message, dict):
            break
        role, content = message.get("role"), message.get("content")
        text = content if isinstance(content, str) else content_text(content)
        named = text if len(text) <= 2 * _SAMPLE else (len(text), text[:_SAMPLE], text[-_SAMPLE:])
        chained = hash((chained, role if isinstance(role, str) else None, named))
        prefixes.append(chained)
        if keying:
            if role == "assistant":
                keying = False
                continue
            part = f"{role}\n{text}\n"
            parts.append(part)
            size += len(part)
            keying = size < limit
    return tuple(prefixes), "".join(parts)[:limit]


def prompt_prefixes(messages: object) -> tuple[int, ...]:
    """A hash per message of its role and content chained with the ones before it."""
    return read(messages, 0)[0]


def prefix_text(messages: object, limit: int) -> str:
    """The system prompt and the messages before the first assistant turn as one text (role,
    then content, per message), at most ``limit`` characters."""
    return read(messages, limit)[1]


def content_text(content: object) -> str:
    """A message's content as text: a string as is, parts by their text (other parts, e.g. an
    image, by their JSON, which is the same for the same part)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return "" if content is None else orjson.dumps(content).decode()
    out = []
    for part in content:
        text = part.get("text") if isinstance(part, dict) else None
        out.append(text if isinstance(text, str) else orjson.dumps(part).decode())
    return "".join(out)
