"""``cvm-filestore/1``: the small file store on a confidential VM's encrypted root.

cvm's own format (documented in docs/image-bundle.md), little-endian, in 4096-byte blocks over
any block device that offers ``read(offset, size)``, ``write(offset, data)`` and ``size`` — on
a VM, the dm-crypt mapping of the LUKS2 root, so only ciphertext reaches the disk. Block 0:

======  ====  ==============================================================
offset  size  field
======  ====  ==============================================================
0x000   8     magic ``CVMFS001``
0x008   4     version (1)
0x00C   4     block size (4096)
0x010   8     blocks in the store
0x018   8     next free block
0x020   4     entries in use
0x024   28    reserved (zero)
0x040   4032  63 entries of 64 bytes: name (40, UTF-8, NUL-padded), first block (u64),
              length in bytes (u64), capacity in blocks (u64)
======  ====  ==============================================================

File data sits in whole blocks after block 0. Writing a file that outgrows its capacity moves it
to fresh blocks at the end (the old blocks are not reused: the store is for a workload's few
files, not a general file system).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cvm.errors import FormatError, StateError, UsageError
from cvm.wire import Layout, raw, reserved, u32, u64

FILESTORE_MAGIC = b"CVMFS001"
FILESTORE_VERSION = 1
FILESTORE_NAME = "cvm-filestore/1"
BLOCK_SIZE = 4096
NAME_SIZE = 40
ENTRY_SIZE = 64
ENTRIES_OFFSET = 0x40
MAX_ENTRIES = (BLOCK_SIZE - ENTRIES_OFFSET) // ENTRY_SIZE
HEADER_LAYOUT = Layout("cvm-filestore header", ENTRIES_OFFSET, [
    raw("magic", 0x00, 8), u32("version", 0x08), u32("block_size", 0x0C),
    u64("blocks", 0x10), u64("next_free", 0x18), u32("entries", 0x20),
    reserved(0x24, 28),
])
ENTRY_LAYOUT = Layout("cvm-filestore entry", ENTRY_SIZE, [
    raw("name", 0x00, NAME_SIZE), u64("first_block", 0x28), u64("length", 0x30),
    u64("capacity", 0x38),
])


class BlockDevice(Protocol):
    """What the store needs of its device (a :class:`cvm.disk.dm_crypt.CryptDevice`)."""

    def size(self) -> int: ...

    def read(self, offset: int, size: int) -> bytes | bytearray: ...

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...


class MemoryDevice:
    """A block device in memory (the owner builds the root's plaintext here, then encrypts it)."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)

    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > len(self.data):
            raise UsageError(f"range {offset}+{size} lies outside the {len(self.data)}-byte device")
        return bytes(self.data[offset : offset + size])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if offset < 0 or offset + len(data) > len(self.data):
            raise UsageError(f"range {offset}+{len(data)} lies outside the "
                             f"{len(self.data)}-byte device")
        self.data[offset : offset + len(data)] = data


@dataclass(frozen=True)
class FileEntry:
    """One file: its name, where its blocks start, its length and how many blocks it has."""

    name: str
    first_block: int
    length: int
    capacity: int


def _blocks(size: int) -> int:
    return max(1, -(-size // BLOCK_SIZE))


def _check_name(name: str) -> bytes:
    encoded = name.encode("utf-8")
    if not name.startswith("/") or not 1 < len(encoded) <= NAME_SIZE or "\0" in name:
        raise UsageError(f"file store: name {name!r} must be an absolute path of at most "
                         f"{NAME_SIZE} bytes")
    return encoded


class FileStore:
    """A ``cvm-filestore/1`` on ``device``: list, read and write whole files."""

    def __init__(self, device: BlockDevice, blocks: int, next_free: int,
                 entries: list[FileEntry]) -> None:
        self.device = device
        self.blocks = blocks
        self.next_free = next_free
        self.entries = entries

    @classmethod
    def format(cls, device: BlockDevice) -> FileStore:
        """An empty store over the whole device."""
        blocks = device.size() // BLOCK_SIZE
        if blocks < 2:
            raise UsageError("file store: the device holds fewer than two blocks")
        store = cls(device, blocks, 1, [])
        store._commit()
        return store

    @classmethod
    def open(cls, device: BlockDevice) -> FileStore:
        """Read block 0; FormatError unless it is a consistent ``cvm-filestore/1``."""
        if device.size() < BLOCK_SIZE:
            raise FormatError("file store: the device is smaller than one block")
        block = bytes(device.read(0, BLOCK_SIZE))
        if block[: len(FILESTORE_MAGIC)] != FILESTORE_MAGIC:
            raise FormatError("file store: bad magic (not a cvm-filestore; wrong key?)")
        header = HEADER_LAYOUT.unpack(block[:ENTRIES_OFFSET])
        if header["version"] != FILESTORE_VERSION or header["block_size"] != BLOCK_SIZE:
            raise FormatError("file store: unsupported version or block size")
        blocks, next_free, count = (int(header[k]) for k in ("blocks", "next_free", "entries"))
        if blocks * BLOCK_SIZE > device.size() or not 1 <= next_free <= blocks:
            raise FormatError(f"file store: {blocks} blocks, next free {next_free} do not fit "
                              f"the {device.size()}-byte device")
        if count > MAX_ENTRIES:
            raise FormatError(f"file store: {count} entries, at most {MAX_ENTRIES}")
        entries = []
        for index in range(count):
            start = ENTRIES_OFFSET + index * ENTRY_SIZE
            fields = ENTRY_LAYOUT.unpack(block[start : start + ENTRY_SIZE])
            name_bytes = bytes(fields["name"]).rstrip(b"\0")
            try:
                name = name_bytes.decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(f"file store: entry {index} has a name that is not "
                                  "UTF-8") from None
            entry = FileEntry(name, int(fields["first_block"]), int(fields["length"]),
                              int(fields["capacity"]))
            if (entry.first_block < 1 or entry.first_block + entry.capacity > next_free
                    or entry.length > entry.capacity * BLOCK_SIZE):
                raise FormatError(f"file store: entry {index} ({name}) lies outside the store")
            entries.append(entry)
        return cls(device, blocks, next_free, entries)

    def _commit(self) -> None:
        block = bytearray(BLOCK_SIZE)
        block[:ENTRIES_OFFSET] = HEADER_LAYOUT.pack({
            "magic": FILESTORE_MAGIC, "version": FILESTORE_VERSION, "block_size": BLOCK_SIZE,
            "blocks": self.blocks, "next_free": self.next_free, "entries": len(self.entries),
        })
        for index, entry in enumerate(self.entries):
            start = ENTRIES_OFFSET + index * ENTRY_SIZE
            block[start : start + ENTRY_SIZE] = ENTRY_LAYOUT.pack({
                "name": _check_name(entry.name).ljust(NAME_SIZE, b"\0"),
                "first_block": entry.first_block, "length": entry.length,
                "capacity": entry.capacity,
            })
        self.device.write(0, bytes(block))

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def _find(self, name: str) -> FileEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def read(self, name: str) -> bytes:
        """The whole file ``name``; StateError if there is none."""
        entry = self._find(name)
        if entry is None:
            raise StateError(f"file store: no file {name}")
        return bytes(self.device.read(entry.first_block * BLOCK_SIZE, entry.length))

    def write(self, name: str, data: bytes) -> None:
        """Create or replace ``name`` with ``data``."""
        _check_name(name)
        entry = self._find(name)
        needed = _blocks(len(data))
        if entry is None or entry.capacity < needed:
            if self.next_free + needed > self.blocks:
                raise StateError(f"file store: no room for {len(data)} bytes of {name}")
            if entry is None and len(self.entries) >= MAX_ENTRIES:
                raise StateError(f"file store: all {MAX_ENTRIES} entries are in use")
            fresh = FileEntry(name, self.next_free, len(data), needed)
            self.next_free += needed
        else:
            fresh = FileEntry(name, entry.first_block, len(data), entry.capacity)
        padded = data + bytes(-len(data) % BLOCK_SIZE)
        self.device.write(fresh.first_block * BLOCK_SIZE, padded)
        if entry is None:
            self.entries.append(fresh)
        else:
            self.entries[self.entries.index(entry)] = fresh
        self._commit()
