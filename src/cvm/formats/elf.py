"""Sections of an ELF64 little-endian object, as Linux's x86-64 kernel modules are.

The ELF header (``e_shoff`` at 0x28, ``e_shentsize``, ``e_shnum`` and ``e_shstrndx`` at
0x3A..0x3F) locates the section header table; each 64-byte header gives the section's name (an
offset into the section-name string table), its type and its place in the file (System V ABI,
"Object Files"; the x86-64 psABI). Only what finding a section by name needs is read, and each
of those fields is checked against the file's size.
"""

from __future__ import annotations

import struct

from cvm.errors import FormatError

MAGIC = b"\x7fELF"
ELFCLASS64, ELFDATA2LSB = 2, 1
HEADER_SIZE = 64
SECTION_HEADER_SIZE = 64
SHT_NOBITS = 8  # a section that takes no room in the file (.bss)
_SECTION = struct.Struct("<IIQQQQ")  # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size


def _sections(data: bytes, where: str) -> tuple[list[tuple[int, int, int, int]], int]:
    """Each section's (name offset, type, file offset, size), and which is the name table."""
    if len(data) < HEADER_SIZE or data[:4] != MAGIC:
        raise FormatError(f"{where}: not an ELF object")
    if data[4] != ELFCLASS64 or data[5] != ELFDATA2LSB:
        raise FormatError(f"{where}: ELF class {data[4]}, data {data[5]}: only ELF64 "
                          "little-endian is read")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shentsize != SECTION_HEADER_SIZE:
        raise FormatError(f"{where}: section headers of {shentsize} bytes, expected 64")
    if shoff + shnum * SECTION_HEADER_SIZE > len(data) or shoff < HEADER_SIZE:
        raise FormatError(f"{where}: the section header table ({shnum} at {shoff:#x}) is not "
                          f"inside the file's {len(data)} bytes")
    if shstrndx >= shnum:
        raise FormatError(f"{where}: the section name table is section {shstrndx} of {shnum}")
    sections = []
    for index in range(shnum):
        name, kind, _, _, offset, size = _SECTION.unpack_from(
            data, shoff + index * SECTION_HEADER_SIZE)
        if kind != SHT_NOBITS and offset + size > len(data):
            raise FormatError(f"{where}: section {index} ({size} bytes at {offset:#x}) is not "
                              f"inside the file's {len(data)} bytes")
        sections.append((name, kind, offset, size))
    return sections, shstrndx


def _name(table: bytes, offset: int, where: str) -> bytes:
    end = table.find(b"\0", offset)
    if offset >= len(table) or end < 0:
        raise FormatError(f"{where}: a section name at {offset} is outside its table")
    return table[offset:end]


def section(data: bytes, name: str, where: str) -> bytes | None:
    """The bytes of the section called ``name`` (None when the object has none); ``where``
    names the object in errors. Two sections of that name are refused: which one a reader
    takes would be a guess."""
    sections, names = _sections(data, where)
    _, _, table_offset, table_size = sections[names]
    table = data[table_offset:table_offset + table_size]
    wanted = name.encode()
    found = [(offset, size) for label, kind, offset, size in sections
             if kind != SHT_NOBITS and _name(table, label, where) == wanted]
    if len(found) > 1:
        raise FormatError(f"{where}: {len(found)} sections named {name}")
    if not found:
        return None
    offset, size = found[0]
    return data[offset:offset + size]


def modinfo(data: bytes, where: str) -> list[tuple[str, str]]:
    """A kernel module's ``.modinfo`` entries (``key=value``, NUL-terminated, in order), as
    ``modinfo`` lists them."""
    info = section(data, ".modinfo", where)
    if info is None:
        raise FormatError(f"{where}: no .modinfo section")
    entries = []
    for raw in info.split(b"\0"):
        if not raw:
            continue  # the padding between entries
        key, equals, value = raw.decode("utf-8", "replace").partition("=")
        if not equals:
            raise FormatError(f"{where}: .modinfo entry {key!r} has no '='")
        entries.append((key, value))
    return entries
