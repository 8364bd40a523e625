"""Pictures of memory: a page of bytes as a grey-scale PNG.

The PNG encoder writes the three chunks a viewer needs (IHDR, IDAT, IEND; ISO/IEC 15948).
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def grey_png(pixels: bytes, width: int, scale: int = 4) -> bytes:
    """``pixels`` (one byte each, rows of ``width``) as an 8-bit grey PNG, enlarged ``scale``x."""
    height = len(pixels) // width
    rows = []
    for y in range(height):
        row = b"".join(bytes([p]) * scale for p in pixels[y * width : (y + 1) * width])
        rows.extend([b"\0" + row] * scale)
    header = struct.pack(">IIBBBBB", width * scale, height * scale, 8, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + _chunk(b"IEND", b"")
    )
