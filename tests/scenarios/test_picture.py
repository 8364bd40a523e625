"""A page as a grey-scale PNG, read back by a decoder written from ISO/IEC 15948 (PNG): the
signature, chunks with their length and CRC-32, IHDR (size, 8-bit grey, no interlace), each
row's filter byte and its pixels, every pixel repeated ``scale`` times both ways, IEND last."""

from __future__ import annotations

import binascii
import struct
import zlib

import pytest

from cvm.scenarios.picture import PNG_SIGNATURE, grey_png


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    assert png[:8] == bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    chunks, at = [], 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", png[at + 8 + length : at + 12 + length])
        assert crc == binascii.crc32(kind + body), kind  # the CRC covers type and data
        chunks.append((kind, body))
        at += 12 + length
    assert at == len(png)
    return chunks


def _decode(png: bytes) -> tuple[int, int, list[bytes]]:
    chunks = _chunks(png)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    header, data, end = (body for _, body in chunks)
    assert end == b""
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", header)
    assert (depth, colour, compression, filtering, interlace) == (8, 0, 0, 0, 0)
    raw = zlib.decompress(data)
    assert len(raw) == height * (width + 1)
    rows = [raw[y * (width + 1) : (y + 1) * (width + 1)] for y in range(height)]
    assert all(row[0] == 0 for row in rows)  # filter type None
    return width, height, [row[1:] for row in rows]


def test_the_signature_is_png_s() -> None:
    assert PNG_SIGNATURE == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("scale", [1, 3, 4])
def test_each_pixel_is_its_byte_enlarged_scale_times(scale: int) -> None:
    pixels = bytes((7 * i + 3) % 256 for i in range(5 * 4))  # 5 wide, 4 high
    width, height, rows = _decode(grey_png(pixels, 5, scale))
    assert (width, height) == (5 * scale, 4 * scale)
    for y in range(height):
        for x in range(width):
            assert rows[y][x] == pixels[(y // scale) * 5 + x // scale], (x, y)


def test_the_default_scale_is_four() -> None:
    assert grey_png(bytes(range(64)) * 64, 64) == grey_png(bytes(range(64)) * 64, 64, 4)
    assert _decode(grey_png(bytes(64 * 64), 64))[:2] == (256, 256)

