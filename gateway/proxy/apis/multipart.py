"""A multipart form (audio transcription and translation, image edits) read as it arrives and sent
on to the worker as it is read: never held whole.

The gateway needs the ``model`` field before the file: it picks the worker by it, and sends the
worker its own name for the model. Fields the admission is decided by (an image edit's ``n``) must
come before the first file that follows ``model``; after it they are a 400. Clients that write
fields before files (the OpenAI Python SDK, curl ``-F`` in the order given) are streamed from the
first byte of the file on. A client that sends the file first (the OpenAI Node SDK when ``file`` is
written before ``model``) is still served: the parts before ``model`` are spooled to an unnamed
temporary file (within ``network.max_body_bytes``, gone when closed) and sent from there once the
model is known.

What goes upstream is the same form re-encoded with a boundary of the gateway's own: ``model``
first (the worker's name), then every other part in the order sent, each with its name, file name
and ``Content-Type``. Fields (parts without a file name) are held while the head is read, at most
``FIELD_MAX`` bytes each and ``PARTS_MAX`` parts before the first file.

A malformed form is a 400, a body past the limit a 413, a stall of ``network.header_timeout`` a 408
— while the head is read, before any upstream is called; later, while the file streams, the same
errors end the upload and answer the client (``failure``).
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import AsyncIterator, Awaitable
from typing import IO, TypeVar

from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.errors import BadRequest, GatewayError, RequestTimeout, shown
from gateway.proxy.bodies import too_large

CHUNK = 64 * 1024
FIELD_MAX = 1 << 20  # bytes of one field (not a file) held while the head is read
PARTS_MAX = 256  # parts read before the first file
KNOWN = ("model", "stream", "response_format", "n")  # fields the gateway reads itself
T = TypeVar("T")

# What aiohttp's multipart reader raises on a malformed form (or a warning made an error).
_MALFORMED = (ValueError, AssertionError, RuntimeError, LookupError, HttpProcessingError, Warning)


class Aborted(Exception):
    """Ends the upload to the worker; the reason is ``Form.failure``."""


def _quoted(value: str) -> str:
    """A name or file name inside a quoted Content-Disposition parameter (as browsers write
    them: ``"``, CR and LF percent-encoded)."""
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _header_value(value: str) -> str:
    return "".join(c for c in value if c >= " " and c != "\x7f")


def part_head(boundary: str, name: str, filename: str | None, part: BodyPartReader | None) -> bytes:
    """The delimiter and headers of one part as the worker gets it."""
    disposition = f'form-data; name="{_quoted(name)}"'
    if filename is not None:
        disposition += f'; filename="{_quoted(filename)}"'
    lines = [f"--{boundary}", f"Content-Disposition: {disposition}"]
    if part is not None:
        for header in ("Content-Type", "Content-Transfer-Encoding"):
            if header in part.headers:
                lines.append(f"{header}: {_header_value(part.headers[header])}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


class Form:
    """One request's form: ``read_head`` first, then ``body`` streams it to the worker."""

    def __init__(
        self,
        request: web.Request,
        files: frozenset[str],
        limit: int,
        idle: float | tuple[float, float],
        before_file: frozenset[str] = frozenset(),
    ):
        if request.content_type != "multipart/form-data":
            raise BadRequest(
                "Send the request as multipart/form-data, with a 'model' field and the file.",
            )
        self._content: StreamReader = request.content
        try:
            self._reader = MultipartReader(request.headers, request.content, max_headers=32)
        except _MALFORMED:
            raise BadRequest(
                "The Content-Type of a multipart/form-data request needs a boundary (at most "
                "70 characters)."
            ) from None
        # A stall of ``idle`` is cut, and a form not whole within ``total`` (from now) too: a
        # trickle that never stalls holds the worker's connection and slot as long as it lasts.
        self._idle, total = idle if isinstance(idle, tuple) else (idle, None)
        self._deadline = None if total is None else asyncio.get_running_loop().time() + total
        self._total = total
        self._files, self._limit = files, limit
        self._before_file = before_file  # fields the admission is decided by: never after it
        self.fields: dict[str, str] = {}  # the fields the gateway reads (KNOWN), as text
        self.has_file = False
        self.boundary = "gateway-" + secrets.token_hex(16)
        self.failure: GatewayError | None = None
        self.sent = False  # the upload began: it cannot be sent again
        self._held: list[bytes] = []  # encoded parts before the first file, model aside
        self._spool: IO[bytes] | None = None
        self._next: BodyPartReader | None = None  # the first part not read yet
        self._done = False  # the closing delimiter was read
        self._parts = 0

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    async def read_head(self) -> None:
        """Read up to the first file once ``model`` is known (files before it are spooled),
        or to the end of the form."""
        while (part := await self._part()) is not None:
            name, filename = self._names(part)
            if filename is not None or name in self._files:
                self.has_file = True
                if "model" in self.fields:
                    self._next = part
                    return
                await self._spool_part(part, name, filename)
                continue
            self._parts += 1
            if self._parts > PARTS_MAX:
                raise BadRequest(f"The form has more than {PARTS_MAX} fields before its file.")
            value = await self._field(part, name)
            if name in KNOWN:
                if name in self.fields:  # which one would the worker take?
                    raise BadRequest(f"The form field '{shown(name)}' appears twice; send it once.")
                self.fields[name] = value.decode("utf-8", "replace")
            if name == "model":
                continue  # (parts spooled before it: fields after it still join the spool)
            encoded = part_head(self.boundary, name, None, part) + value + b"\r\n"
            if self._spool is not None:
                self._spool.write(encoded)
            else:
                self._held.append(encoded)

    def model(self) -> str:
        """The ``model`` field, or the 400 saying it is missing."""
        value = self.fields.get("model")
        if value is None:
            raise BadRequest(
                "'model' is required: send it as a form field naming the model.", param="model"
            )
        if not value or len(value) > 256:
            raise BadRequest(f"'model' must be a model name, not '{shown(value)}'.", param="model")
        return value

    def require_file(self, field: str) -> None:
        if not self.has_file:
            raise BadRequest(
                f"'{field}' is required: send the file as a form part with a file name.",
                param=field,
            )

    async def body(self, upstream_model: str) -> AsyncIterator[bytes]:
        """The form as the worker gets it, read from the client as it is sent."""
        self.sent = True
        try:
            yield part_head(self.boundary, "model", None, None) + upstream_model.encode() + b"\r\n"
            for encoded in self._held:
                yield encoded
            self._held.clear()
            if self._spool is not None:
                self._spool.seek(0)
                while chunk := self._spool.read(CHUNK):
                    yield chunk
            part, self._next = self._next, None
            if part is None:
                part = await self._part()
            while part is not None:
                name, filename = self._names(part)
                if name in self.fields:  # the worker must see what the gateway decided by
                    raise BadRequest(f"The form field '{shown(name)}' appears twice; send it once.")
                if name in self._before_file and filename is None:
                    raise BadRequest(
                        f"The form field '{shown(name)}' must come before the file: the gateway "
                        "reserves by it.",
                        param=shown(name),
                    )
                yield part_head(self.boundary, name, filename, part)
                while chunk := await self._guard(part.read_chunk(CHUNK)):
                    yield chunk
                yield b"\r\n"
                part = await self._part()
            yield f"--{self.boundary}--\r\n".encode()
        except GatewayError as err:
            self.failure = err
            raise Aborted from None

    # -- reading ------------------------------------------------------------------------
    async def _guard(self, step: Awaitable[T]) -> T:
        """One read from the client: a stall is a 408, a malformed form a 400, past the limit
        a 413."""
        wait, overdue = self._idle, False
        if self._deadline is not None:
            left = self._deadline - asyncio.get_running_loop().time()
            wait, overdue = min(wait, left), left <= wait
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                result = await step
        except TimeoutError:
            raise self._late(overdue) from None
        except (*_MALFORMED, OSError) as exc:
            raise BadRequest(
                f"The multipart form is malformed ({type(exc).__name__}); send "
                "multipart/form-data with a 'model' field and the file."
            ) from None
        if self._content.total_bytes > self._limit:
            raise too_large(self._limit)
        return result

    @property
    def complete(self) -> bool:
        """Whether the whole form was read from the client."""
        return self._done

    def _late(self, overdue: bool) -> RequestTimeout:
        """The 408 of a form that stalled, or (``overdue``) did not arrive in time."""
        if overdue and self._total is not None:
            return RequestTimeout(
                f"The request body did not arrive within {self._total:g} s; send it faster, "
                "or less."
            )
        return RequestTimeout(
            f"The request body stalled for {self._idle:g} s; send it without pauses."
        )

    async def _part(self) -> BodyPartReader | None:
        if self._done:
            return None
        part = await self._guard(self._reader.next())
        if part is None:
            self._done = True
            return None
        if not isinstance(part, BodyPartReader):
            raise BadRequest("A form part may not be multipart itself; send each file as a part.")
        return part

    def _names(self, part: BodyPartReader) -> tuple[str, str | None]:
        try:
            name, filename = part.name, part.filename
        except _MALFORMED:
            name = filename = None
        if not name:
            raise BadRequest(
                "Every form part needs a Content-Disposition with its name, e.g. "
                'form-data; name="file"; filename="audio.wav".'
            )
        return name, filename

    async def _field(self, part: BodyPartReader, name: str) -> bytes:
        data = bytearray()
        while chunk := await self._guard(part.read_chunk(CHUNK)):
            data += chunk
            if len(data) > FIELD_MAX:
                raise BadRequest(
                    f"The form field '{shown(name)}' is larger than {FIELD_MAX} bytes; send "
                    "files as parts with a file name.",
                    param=shown(name),
                )
        return bytes(data)

    async def _spool_part(self, part: BodyPartReader, name: str, filename: str | None) -> None:
        """A part that came before ``model``: to the temporary file, for later."""
        if self._spool is None:
            # Closed by ``close`` (the handler's finally), not by a with block: it outlives
            # this call, until the upload to the worker has read it.
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115
            for encoded in self._held:
                self._spool.write(encoded)
            self._held.clear()
        self._spool.write(part_head(self.boundary, name, filename, part))
        while chunk := await self._guard(part.read_chunk(CHUNK)):
            self._spool.write(chunk)
        self._spool.write(b"\r\n")
