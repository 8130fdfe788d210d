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

Every hash here is the same in every process and on every machine (``routing.placements`` tells
the other processes where a conversation moved, by its prompt's hash), and cheap (zlib, in C:
a tenth of BLAKE2b's cost on a short prompt): a prefix is the CRC-32 and the Adler-32 of the
messages' UTF-8 side by side in 64 bits, each continued message by message; the key is the
CRC-32 of the session or of the prefix text (found on the way when no message of it was cut
or sampled), in the high 32 bits of a ring position. Not a cryptographic hash: a client can
make two prompts collide, which only sends its own request where another prompt went, under
the bound.
"""

from __future__ import annotations

import re
from zlib import adler32, crc32

import orjson

CHARS_PER_TOKEN = 4
# A long message is named by its length, start and end in its prefix hash: half the cost of
# hashing all of it, and a collision only sends a request to a worker under its bound.
_SAMPLE = 128
_SESSION_SUFFIX = re.compile(r"_session_([0-9A-Za-z-]{8,64})$")
_LOADS, _DecodeError = orjson.loads, orjson.JSONDecodeError

# A request's position on the ring, and its prompt's prefixes (one per message, shortest first).
# A plain tuple: a frozen dataclass costs 0.6 µs more to make, per request.
Affinity = tuple[int, tuple[int, ...]]

_SESSION = crc32(b"session\0")  # a session's key is told apart from a prompt's of its text


def affinity(payload: bytes, prefix_tokens: int) -> Affinity | None:
    """The ring position and prompt prefixes of this request, or None when it has neither
    session nor prompt (or is not a JSON object). The position is the CRC-32 of the session,
    or of the prompt's prefix text, in the high 32 bits."""
    try:
        body = _LOADS(payload)
    except _DecodeError:
        return None
    if type(body) is not dict:
        return None
    prefixes, text, crc = _read(body.get("messages"), prefix_tokens * CHARS_PER_TOKEN)
    if "prompt_cache_key" in body or "session_id" in body or "user" in body:
        session = session_of(body)
        if session is not None:
            return crc32(session.encode(), _SESSION) << 32, prefixes
    if crc is not None:  # the text's own CRC, found on the way
        return crc << 32, prefixes
    if text:
        return crc32(text.encode()) << 32, prefixes
    return None


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
    """In one pass over the messages: a hash per message of its role and content continuing
    the ones before it, and the prompt's prefix as text (the system prompt and the messages
    before the first assistant turn: role, then content, per message; at most ``limit``
    characters)."""
    prefixes, text, _ = _read(messages, limit)
    return prefixes, text


def _read(messages: object, limit: int) -> tuple[tuple[int, ...], str, int | None]:
    """``read``, and the CRC-32 of the prefix text when the prefixes' hashing met it whole
    (no message cut or sampled in it), else None."""
    if type(messages) is not list:
        return (), "", None
    prefixes: list[int] = []
    text = ""
    crc, adler, keyed = 0, 1, None
    keying = exact = True
    for message in messages:
        if type(message) is not dict:
            break
        role = message.get("role")
        content = message.get("content")
        if type(content) is not str:
            content = content_text(content)
        part = f"{role}\n{content}\n"
        whole = len(content) <= 2 * _SAMPLE
        if whole:
            data = part.encode()
        else:
            data = f"{role}\n{len(content)}\0{content[:_SAMPLE]}{content[-_SAMPLE:]}\n".encode()
        crc = crc32(data, crc)
        adler = adler32(data, adler)
        prefixes.append(crc << 32 | adler)
        if keying:
            if role == "assistant":
                keying = False
                continue
            text = text + part if text else part
            keying = len(text) < limit
            exact = exact and whole and len(text) <= limit
            keyed = crc
    if not text:
        return tuple(prefixes), "", None
    return tuple(prefixes), text[:limit], keyed if exact else None


def prompt_prefixes(messages: object) -> tuple[int, ...]:
    """A hash per message of its role and content continuing the ones before it."""
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
