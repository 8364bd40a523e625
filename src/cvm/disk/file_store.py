"""``cvm-filestore/2``: the small file store on a confidential VM's encrypted root.

cvm's own format (docs/image-bundle.md "The root file system"; the header in
:mod:`cvm.disk.file_store_header`), in 4096-byte blocks over any block device that offers
``read(offset, size)``, ``write(offset, data)`` and ``size`` — on a VM, the dm-crypt mapping of
the LUKS2 root, so only ciphertext reaches the disk. Blocks 0 and 1 hold the two copies of the
header; file data sits in whole blocks from block 2.

A failed write leaves the previous state intact, whatever write a power cut interrupts and
wherever in it: every write of a file's data goes to blocks no entry names (copy on write),
then the header naming them is committed to the copy that does not hold the newest generation.
Until that copy is whole, open takes the other one, which names the old blocks and old data.
Free space is not recorded: it is the blocks the newest header's entries do not name, so the
blocks a file leaves behind are free, and reused, once the header that no longer names them is
committed. A write takes the first free run of blocks large enough (first fit; at the run's end
when the run reaches the store's end, see :func:`first_fit`). A file's data is one run of
blocks; when free space is split into runs smaller than a write although the sum is larger, the
write first compacts: it moves files, each by the same copy on write and commit, until a run
holds it (the plan: :mod:`cvm.disk.file_store_compaction`), and refuses, writing nothing, when
no plan is found.

A version-1 store (``cvm-filestore/1``, one header copy, files rewritten in place) is read but
never written: it has no second copy to commit to, and its block 1 is file data, so there is no
safe way to upgrade it in place; a write to it is a UsageError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from cvm.disk.file_store_compaction import SEARCH_LIMIT_LAYOUTS, Move, plan_moves
from cvm.disk.file_store_header import (
    BLOCK_SIZE,
    COPIES,
    FILESTORE_MAGIC,
    FILESTORE_NAME,
    FILESTORE_VERSION,
    FIRST_DATA_BLOCK,
    MAX_ENTRIES,
    V1_MAGIC,
    V1_NAME,
    FileEntry,
    StoreHeader,
    blocks_for,
    check_name,
    parse_copy,
    parse_v1,
)
from cvm.errors import FormatError, StateError, UsageError

__all__ = ["BLOCK_SIZE", "FILESTORE_NAME", "MAX_ENTRIES", "BlockDevice", "FileEntry",
           "FileStore", "MemoryDevice", "first_fit", "free_extents", "read_header"]
Extent = tuple[int, int]  # first block, number of blocks


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


def free_extents(used: Iterable[Extent], first: int, end: int) -> list[Extent]:
    """The runs of blocks in ``[first, end)`` that no extent of ``used`` covers, in order."""
    free = []
    position = first
    for start, count in sorted(used):
        if start > position:
            free.append((position, start - position))
        position = max(position, start + count)
    if end > position:
        free.append((position, end - position))
    return free


def first_fit(free: Iterable[Extent], count: int, end: int) -> int | None:
    """Where ``count`` blocks go: in the first run of ``free`` that holds them, at its start,
    or at its end if the run reaches ``end`` (the end of the store); None if no run does.

    Placing at the store's end keeps one rewritten file alternately flush with either end of
    the free space, so the rest stays in one run: a file of up to ``n`` blocks, alone in the
    store, can be rewritten for ever, at any sizes, in ``2 * n`` data blocks."""
    for start, size in free:
        if size >= count:
            return start + size - count if start + size == end else start
    return None


def read_header(device: BlockDevice) -> StoreHeader:
    """The newest valid header on ``device``: version 1 if block 0 is one, else the valid
    version-2 copy with the higher generation; FormatError if there is none."""
    size = device.size()
    if size < COPIES * BLOCK_SIZE:
        raise FormatError(f"file store: the device is smaller than {COPIES} blocks")
    both = bytes(device.read(0, COPIES * BLOCK_SIZE))  # one read: one pass of the cipher
    copies = [both[copy * BLOCK_SIZE : (copy + 1) * BLOCK_SIZE] for copy in range(COPIES)]
    if copies[0][: len(V1_MAGIC)] == V1_MAGIC:
        return parse_v1(copies[0], size)
    if not any(c[: len(FILESTORE_MAGIC)] == FILESTORE_MAGIC for c in copies):
        raise FormatError("file store: bad magic (not a cvm-filestore; wrong key?)")
    valid, reasons = [], []
    for copy, block in enumerate(copies):
        try:
            valid.append(parse_copy(block, copy, size))
        except FormatError as refused:
            reasons.append(f"block {copy}: {refused}")
    if not valid:
        raise FormatError(f"file store: neither copy of the {FILESTORE_NAME} header is valid "
                          f"({'; '.join(reasons)})")
    return max(valid, key=lambda header: header.generation)


class FileStore:
    """A ``cvm-filestore`` on ``device``: list, read, write, rename and remove whole files.
    ``search_limit``: the most layouts a compaction's plan tries."""

    search_limit = SEARCH_LIMIT_LAYOUTS

    def __init__(self, device: BlockDevice, header: StoreHeader) -> None:
        self.device = device
        self.version = header.version
        self.blocks = header.blocks
        self.generation = header.generation
        self.entries = list(header.entries)
        self.failed = False

    @classmethod
    def format(cls, device: BlockDevice) -> FileStore:
        """An empty store over the whole device: two generations, one in each block — 0 and
        1, or over a version-2 store the two after its newest, so that until the first is
        whole the store there stays as it was."""
        blocks = device.size() // BLOCK_SIZE
        if blocks <= FIRST_DATA_BLOCK:
            raise UsageError(f"file store: the device holds fewer than {FIRST_DATA_BLOCK + 1} "
                             "blocks")
        try:
            there = read_header(device)
        except FormatError:
            there = None
        first = 0 if there is None or there.version != FILESTORE_VERSION else there.generation + 1
        for generation in range(first, first + COPIES):
            header = StoreHeader(FILESTORE_VERSION, blocks, generation, ())
            device.write(generation % COPIES * BLOCK_SIZE, header.to_bytes())
        return cls(device, header)

    @classmethod
    def open(cls, device: BlockDevice) -> FileStore:
        """The store on ``device`` as its newest valid header describes it."""
        return cls(device, read_header(device))

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def _find(self, name: str) -> FileEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def _entry(self, name: str) -> FileEntry:
        entry = self._find(name)
        if entry is None:
            raise StateError(f"file store: no file {name}")
        return entry

    def read(self, name: str) -> bytes:
        """The whole file ``name``; StateError if there is none."""
        entry = self._entry(name)
        return bytes(self.device.read(entry.first_block * BLOCK_SIZE, entry.length))

    def free(self) -> list[Extent]:
        """The runs of blocks no entry names (what a write may take)."""
        used = [(e.first_block, e.capacity) for e in self.entries]
        return free_extents(used, FIRST_DATA_BLOCK, self.blocks)

    def write(self, name: str, data: bytes) -> None:
        """Create or replace ``name`` with ``data``: the data to free blocks, then the header;
        first the moves that make room if no free run holds it (see :meth:`_place`)."""
        check_name(name)
        self._writable()
        entry = self._find(name)
        if entry is None and len(self.entries) >= MAX_ENTRIES:
            raise StateError(f"file store: all {MAX_ENTRIES} entries are in use")
        needed = blocks_for(len(data))
        start = self._place(name, len(data), needed)
        entry = self._find(name)  # a move made a new entry of it
        fresh = FileEntry(name, start, len(data), needed)
        entries = [fresh if e is entry else e for e in self.entries]
        if entry is None:
            entries.append(fresh)
        padded = bytes(data).ljust(needed * BLOCK_SIZE, b"\0")
        self._guarded(lambda: self.device.write(start * BLOCK_SIZE, padded))
        self._commit(entries)

    def _place(self, name: str, size: int, needed: int) -> int:
        """The first block of a free run of ``needed`` blocks for ``size`` bytes of ``name``.
        If first fit finds none but enough blocks are free, files are moved (each move a copy
        and a commit of its own, :meth:`_move`) until a run holds them; StateError, nothing
        written, if too few blocks are free or no plan of moves is found."""
        free = self.free()
        start = first_fit(free, needed, self.blocks)
        if start is not None:
            return start
        total = sum(blocks for _, blocks in free)
        refusal = f"file store: no room for {size} bytes of {name} ({needed} blocks"
        if total < needed:
            raise StateError(f"{refusal}, {total} free)")
        plan = plan_moves([e.first_block for e in self.entries],
                          [e.capacity for e in self.entries], FIRST_DATA_BLOCK, self.blocks,
                          needed, self.search_limit)
        if plan.moves is None:
            runs = max(blocks for _, blocks in free)
            why = ("no sequence of file moves joins them" if plan.exhausted else
                   f"no sequence of file moves joining them found in {self.search_limit} "
                   "layouts")
            raise StateError(f"{refusal}; {total} are free, in runs of at most {runs}, and "
                             f"{why})")
        for move in plan.moves:
            self._move(move)
        return self._place(name, size, needed)

    def _move(self, move: Move) -> None:
        """Copy the file of entry ``move.index`` to the blocks ``move`` names (no entry names
        them), then commit the header naming its new place: a write of a file's data done as
        :meth:`write` does it, so a power cut leaves it whole at one place or the other."""
        entry = self.entries[move.index]
        data = bytes(self.device.read(entry.first_block * BLOCK_SIZE,
                                      entry.capacity * BLOCK_SIZE))
        self._guarded(lambda: self.device.write(move.first_block * BLOCK_SIZE, data))
        moved = FileEntry(entry.name, move.first_block, entry.length, entry.capacity)
        self._commit([moved if e is entry else e for e in self.entries])

    def remove(self, name: str) -> None:
        """Remove ``name`` (its blocks are free once the header is committed)."""
        self._writable()
        entry = self._entry(name)
        self._commit([e for e in self.entries if e is not entry])

    def rename(self, name: str, new_name: str) -> None:
        """Give ``name`` the name ``new_name``, replacing any file of that name, in one commit."""
        check_name(new_name)
        self._writable()
        entry = self._entry(name)
        renamed = FileEntry(new_name, entry.first_block, entry.length, entry.capacity)
        self._commit([renamed if e is entry else e for e in self.entries
                      if e.name != new_name or e is entry])

    def _writable(self) -> None:
        if self.version != FILESTORE_VERSION:
            raise UsageError(f"file store: a {V1_NAME} store is read only (it has one header "
                             f"copy and rewrites files in place); copy its files into a new "
                             f"{FILESTORE_NAME}")
        if self.failed:
            raise StateError("file store: a write to the device failed; open the store again")

    def _guarded(self, write: Callable[[], None]) -> None:
        """Run one device write; if it fails, refuse further writes until the store is opened
        again (the device may hold the new data or header, which this object does not know)."""
        try:
            write()
        except BaseException:
            self.failed = True
            raise

    def _commit(self, entries: list[FileEntry]) -> None:
        """Write the next generation to the copy that does not hold the newest one."""
        header = StoreHeader(FILESTORE_VERSION, self.blocks, self.generation + 1, tuple(entries))
        block = header.to_bytes()
        self._guarded(lambda: self.device.write(header.generation % COPIES * BLOCK_SIZE, block))
        self.generation, self.entries = header.generation, entries
