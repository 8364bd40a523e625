"""The header of a ``cvm-filestore``: two checksummed copies (version 2), and version 1 to read.

cvm's own format (docs/image-bundle.md "The root file system"), little-endian, in 4096-byte
blocks. Version 2 keeps its header twice, in blocks 0 and 1; each copy is one block:

======  ====  ==============================================================
offset  size  field
======  ====  ==============================================================
0x000   8     magic ``CVMFS002``
0x008   4     version (2)
0x00C   4     block size (4096)
0x010   8     blocks in the store
0x018   8     generation
0x020   4     entries in use
0x024   4     CRC-32 (ISO-HDLC, as ``zlib.crc32``) of the copy with this field zero
0x028   24    reserved (zero)
0x040   4032  63 entries of 64 bytes: name (40, UTF-8, NUL-padded), first block (u64),
              length in bytes (u64), blocks (u64); the entries not in use are zero
======  ====  ==============================================================

Generation ``g`` is written to copy ``g % 2``, so a commit never overwrites the newest copy;
open takes the valid copy with the higher generation. The CRC detects a copy torn by a power
cut; it is not an integrity check against an attacker: the dm-crypt layer below keeps the store
confidential but does not authenticate it, so whoever holds the disk can put back an older
ciphertext of any block, a header copy included, and that copy's CRC still matches.

Version 1 (magic ``CVMFS001``) had one copy, in block 0: the same first 0x24 bytes but the
next free block at 0x18 and no CRC, its entries' last field the blocks the file may grow into.
It is read, never written.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from itertools import pairwise

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, reserved, u32, u64

FILESTORE_MAGIC = b"CVMFS002"
FILESTORE_VERSION = 2
FILESTORE_NAME = "cvm-filestore/2"
V1_MAGIC = b"CVMFS001"
V1_NAME = "cvm-filestore/1"
BLOCK_SIZE = 4096
COPIES = 2
FIRST_DATA_BLOCK = COPIES
NAME_SIZE = 40
ENTRY_SIZE = 64
ENTRIES_OFFSET = 0x40
MAX_ENTRIES = (BLOCK_SIZE - ENTRIES_OFFSET) // ENTRY_SIZE
HEADER_LAYOUT = Layout("cvm-filestore/2 header", ENTRIES_OFFSET, [
    raw("magic", 0x00, 8), u32("version", 0x08), u32("block_size", 0x0C),
    u64("blocks", 0x10), u64("generation", 0x18), u32("entries", 0x20), u32("crc32", 0x24),
    reserved(0x28, 24),
])
CRC_FIELD = HEADER_LAYOUT.span("crc32")
V1_HEADER_LAYOUT = Layout("cvm-filestore/1 header", ENTRIES_OFFSET, [
    raw("magic", 0x00, 8), u32("version", 0x08), u32("block_size", 0x0C),
    u64("blocks", 0x10), u64("next_free", 0x18), u32("entries", 0x20), reserved(0x24, 28),
])
ENTRY_LAYOUT = Layout("cvm-filestore entry", ENTRY_SIZE, [
    raw("name", 0x00, NAME_SIZE), u64("first_block", 0x28), u64("length", 0x30),
    u64("capacity", 0x38),
])


@dataclass(frozen=True)
class FileEntry:
    """One file: its name, its first block, its length and the blocks it holds from there."""

    name: str
    first_block: int
    length: int
    capacity: int


@dataclass(frozen=True)
class StoreHeader:
    """One header: the store's version, size in blocks, generation and files."""

    version: int
    blocks: int
    generation: int
    entries: tuple[FileEntry, ...]

    def to_bytes(self) -> bytes:
        """This header as a version-2 copy (one block, its CRC filled in); only version 2 is
        ever written."""
        block = bytearray(BLOCK_SIZE)
        block[:ENTRIES_OFFSET] = HEADER_LAYOUT.pack({
            "magic": FILESTORE_MAGIC, "version": self.version, "block_size": BLOCK_SIZE,
            "blocks": self.blocks, "generation": self.generation,
            "entries": len(self.entries), "crc32": 0,
        })
        for index, entry in enumerate(self.entries):
            start = ENTRIES_OFFSET + index * ENTRY_SIZE
            block[start : start + ENTRY_SIZE] = ENTRY_LAYOUT.pack({
                "name": check_name(entry.name).ljust(NAME_SIZE, b"\0"),
                "first_block": entry.first_block, "length": entry.length,
                "capacity": entry.capacity,
            })
        block[CRC_FIELD] = zlib.crc32(block).to_bytes(4, "little")
        return bytes(block)


def blocks_for(size: int) -> int:
    """The blocks a file of ``size`` bytes takes (an empty file one)."""
    return max(1, -(-size // BLOCK_SIZE))


def check_name(name: str) -> bytes:
    """``name`` in UTF-8; UsageError unless it is an absolute path of at most 40 bytes."""
    encoded = name.encode("utf-8")
    if not name.startswith("/") or not 1 < len(encoded) <= NAME_SIZE or "\0" in name:
        raise UsageError(f"file store: name {name!r} must be an absolute path of at most "
                         f"{NAME_SIZE} bytes")
    return encoded


def _entry(block: bytes, index: int) -> FileEntry:
    start = ENTRIES_OFFSET + index * ENTRY_SIZE
    fields = ENTRY_LAYOUT.unpack(block[start : start + ENTRY_SIZE])
    try:
        name = bytes(fields["name"]).rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"entry {index} has a name that is not UTF-8") from None
    return FileEntry(name, int(fields["first_block"]), int(fields["length"]),
                     int(fields["capacity"]))


def parse_copy(block: bytes, copy: int, device_size: int) -> StoreHeader:
    """The version-2 header in ``block``, read from block ``copy``; FormatError (without the
    "file store:" prefix: the caller names the copy) unless it is whole and consistent."""
    if block[: len(FILESTORE_MAGIC)] != FILESTORE_MAGIC:
        raise FormatError("no cvm-filestore/2 magic")
    unsummed = block[: CRC_FIELD.start] + bytes(4) + block[CRC_FIELD.stop :]
    if zlib.crc32(unsummed) != int.from_bytes(block[CRC_FIELD], "little"):
        raise FormatError("CRC-32 mismatch (torn or corrupt)")
    header = HEADER_LAYOUT.unpack(block[:ENTRIES_OFFSET])
    if header["version"] != FILESTORE_VERSION or header["block_size"] != BLOCK_SIZE:
        raise FormatError("unsupported version or block size")
    blocks, generation, count = (int(header[k]) for k in ("blocks", "generation", "entries"))
    if generation % COPIES != copy:
        raise FormatError(f"generation {generation} does not belong in block {copy}")
    if not FIRST_DATA_BLOCK <= blocks <= device_size // BLOCK_SIZE:
        raise FormatError(f"{blocks} blocks do not fit the {device_size}-byte device")
    if count > MAX_ENTRIES:
        raise FormatError(f"{count} entries, at most {MAX_ENTRIES}")
    if any(block[ENTRIES_OFFSET + count * ENTRY_SIZE :]):
        raise FormatError(f"the entries after the {count} in use are not zero")
    entries = tuple(_entry(block, index) for index in range(count))
    names = set()
    for index, entry in enumerate(entries):
        try:
            check_name(entry.name)
        except UsageError:
            raise FormatError(f"entry {index} has no valid name") from None
        if entry.name in names:
            raise FormatError(f"entry {index} ({entry.name}) repeats a name")
        names.add(entry.name)
        if (entry.first_block < FIRST_DATA_BLOCK or entry.first_block + entry.capacity > blocks
                or entry.capacity != blocks_for(entry.length)):
            raise FormatError(f"entry {index} ({entry.name}) lies outside the store")
    ordered = sorted(entries, key=lambda e: e.first_block)
    for before, after in pairwise(ordered):
        if before.first_block + before.capacity > after.first_block:
            raise FormatError(f"{before.name} and {after.name} share blocks")
    return StoreHeader(FILESTORE_VERSION, blocks, generation, entries)


def parse_v1(block: bytes, device_size: int) -> StoreHeader:
    """The version-1 header in block 0; FormatError unless it is consistent."""
    header = V1_HEADER_LAYOUT.unpack(block[:ENTRIES_OFFSET])
    if header["version"] != 1 or header["block_size"] != BLOCK_SIZE:
        raise FormatError("file store: unsupported version or block size")
    blocks, next_free, count = (int(header[k]) for k in ("blocks", "next_free", "entries"))
    if blocks * BLOCK_SIZE > device_size or not 1 <= next_free <= blocks:
        raise FormatError(f"file store: {blocks} blocks, next free {next_free} do not fit "
                          f"the {device_size}-byte device")
    if count > MAX_ENTRIES:
        raise FormatError(f"file store: {count} entries, at most {MAX_ENTRIES}")
    entries = []
    for index in range(count):
        try:
            entry = _entry(block, index)
        except FormatError as error:
            raise FormatError(f"file store: {error}") from None
        if (entry.first_block < 1 or entry.first_block + entry.capacity > next_free
                or entry.length > entry.capacity * BLOCK_SIZE):
            raise FormatError(f"file store: entry {index} ({entry.name}) lies outside the "
                              "store")
        entries.append(entry)
    return StoreHeader(1, blocks, 0, tuple(entries))
