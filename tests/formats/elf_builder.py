"""A minimal ELF64 little-endian relocatable object with the sections given (tests only)."""

from __future__ import annotations

import struct

SHT_PROGBITS, SHT_STRTAB, SHT_NOBITS = 1, 3, 8


def elf_object(sections: list[tuple[str, bytes]], *, nobits: tuple[str, ...] = (),
               table_first: bool = False) -> bytes:
    """An ELF64 object: a null section, ``sections`` in order (their bytes after the header),
    and ``.shstrtab`` last; a name in ``nobits`` is an SHT_NOBITS section (no bytes in the
    file). The section header table ends the file, or with ``table_first`` follows the ELF
    header (the sections' bytes after it, the name table ending the file)."""
    names = b"\0"
    offsets = []
    for name, _ in [*sections, (".shstrtab", b"")]:
        offsets.append(len(names))
        names += name.encode() + b"\0"
    shnum = len(sections) + 2
    start = 64 + shnum * 64 if table_first else 64
    body = b""
    placed = []
    for (name, data), label in zip(sections, offsets, strict=False):
        placed.append((label, SHT_NOBITS if name in nobits else SHT_PROGBITS,
                       start + len(body), len(data)))
        if name not in nobits:
            body += data
    placed.append((offsets[-1], SHT_STRTAB, start + len(body), len(names)))
    body += names
    shoff = 64 if table_first else 64 + len(body)
    header = (b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
              + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, shnum,
                            shnum - 1))
    table = bytes(64) + b"".join(struct.pack("<IIQQQQIIQQ", label, kind, 0, 0, offset, size,
                                             0, 0, 1, 0)
                                 for label, kind, offset, size in placed)
    return header + table + body if table_first else header + body + table
