"""Screenshots of the console for the README and docs/console.md: taken by the browser test,
made smaller without loss (the same pixels, the image data recompressed at zlib's best level),
and written to docs/images/ when missing or asked for (``GATEWAY_SCREENSHOTS=1``)."""

from __future__ import annotations

import os
import pathlib
import struct
import zlib

IMAGES = pathlib.Path(__file__).resolve().parents[2] / "docs" / "images"
SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks as (type, data), checked: signature, lengths and CRCs."""
    assert png.startswith(SIGNATURE), "not a PNG"
    out, at = [], len(SIGNATURE)
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", png[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + data) == crc, f"bad CRC in {kind!r}"
        out.append((kind, data))
        at += 12 + length
    assert out[0][0] == b"IHDR" and out[-1][0] == b"IEND", "not a whole PNG"
    return out


def size(png: bytes) -> tuple[int, int]:
    """Width and height (pixels) of a PNG."""
    width, height = struct.unpack(">II", chunks(png)[0][1][:8])
    return int(width), int(height)


def smaller(png: bytes) -> bytes:
    """The same image with its data recompressed at zlib's best level, one IDAT chunk, and
    nothing but the chunks that draw it (IHDR, PLTE, tRNS, IDAT, IEND)."""
    parts = chunks(png)
    pixels = zlib.decompress(b"".join(data for kind, data in parts if kind == b"IDAT"))
    out = [SIGNATURE]
    for kind, data in parts:
        if kind == b"IDAT":
            continue
        if kind == b"IEND":
            out.append(_chunk(b"IDAT", zlib.compress(pixels, 9)))
        if kind in (b"IHDR", b"PLTE", b"tRNS", b"IEND"):
            out.append(_chunk(kind, data))
    return b"".join(out)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def save(name: str, png: bytes, elsewhere: pathlib.Path) -> pathlib.Path:
    """Write ``docs/images/<name>`` when it is missing or ``GATEWAY_SCREENSHOTS=1`` asks for
    fresh ones (and the bytes changed); else into ``elsewhere``: key ids, ports and times differ
    from run to run, and a test run must not leave the checkout changed."""
    refresh = os.environ.get("GATEWAY_SCREENSHOTS") == "1"
    path = IMAGES / name
    if path.exists() and not refresh:
        path = elsewhere / name
    if not path.exists() or path.read_bytes() != png:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
    return path
