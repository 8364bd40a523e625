"""Pictures of memory: a page of bytes as a grey-scale PNG, and the demo's HTML report.

The PNG encoder writes the three chunks a viewer needs (IHDR, IDAT, IEND; ISO/IEC 15948).
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from collections.abc import Sequence

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


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


Table = tuple[str, Sequence[str], Sequence[Sequence[str]]]


def html_report(
    title: str, panels: Sequence[tuple[str, bytes, bytes, str]], tables: Sequence[Table]
) -> str:
    """A self-contained HTML page: for each (caption, guest page, host page, note) two pictures
    side by side, then each (title, header, rows) table; cells ending in "*" are marked."""
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:0 1em}"
        "img{image-rendering:pixelated;border:1px solid #888}td,th{border:1px solid #ccc;"
        "padding:4px 8px}table{border-collapse:collapse}.bad{background:#fcc}"
        "code{font-size:85%}</style>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for caption, guest, host, note in panels:
        parts.append(f"<h2>{html.escape(caption)}</h2><div>")
        for label, page in (("guest reads", guest), ("host reads", host)):
            data = base64.b64encode(grey_png(page, 64)).decode()
            parts.append(
                f"<figure><img alt='{label}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{label}<br><code>{_hex(page[-16:])}</code></figcaption></figure>"
            )
        parts.append(f"</div><p>{html.escape(note)}</p>")
    for caption, header, rows in tables:
        parts.append(f"<h2>{html.escape(caption)}</h2><table><tr>")
        parts.extend(f"<th>{html.escape(h)}</th>" for h in header)
        parts.append("</tr>")
        for row in rows:
            cells = "".join(
                f"<td class='bad'>{html.escape(c[:-1])}</td>" if c.endswith("*")
                else f"<td>{html.escape(c)}</td>"
                for c in row
            )
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    return "\n".join(parts)
