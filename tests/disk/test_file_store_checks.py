"""cvm-filestore/1 field by field: the bytes of block 0, each refusal of ``open`` with its
message (a corrupt or foreign store names what is wrong), the names a file may have, the room
a file takes, and a refused write that leaves the store and its device as they were."""

from __future__ import annotations

import struct

import pytest

from cvm.disk.file_store import (
    BLOCK_SIZE,
    ENTRIES_OFFSET,
    ENTRY_SIZE,
    MAX_ENTRIES,
    NAME_SIZE,
    FileEntry,
    FileStore,
    MemoryDevice,
)
from cvm.errors import FormatError, StateError, UsageError


def _entry_at(index: int) -> int:
    return ENTRIES_OFFSET + index * ENTRY_SIZE


def _stored(blocks: int = 16) -> tuple[MemoryDevice, FileStore]:
    device = MemoryDevice(blocks * BLOCK_SIZE)
    store = FileStore.format(device)
    store.write("/etc/hostname", b"cvm\n")
    store.write("/srv/data/log", bytes([1]) * (BLOCK_SIZE + 1))
    return device, store


# ---- block 0 ----------------------------------------------------------------------------------
def test_block_zero_holds_the_header_and_the_entries_little_endian() -> None:
    device, _ = _stored(16)
    block = bytes(device.data[:BLOCK_SIZE])
    assert block[:8] == b"CVMFS001"
    assert struct.unpack_from("<IIQQI", block, 8) == (1, BLOCK_SIZE, 16, 1 + 1 + 2, 2)
    assert block[0x24:ENTRIES_OFFSET] == bytes(28)
    first = block[_entry_at(0) : _entry_at(1)]
    assert first[:NAME_SIZE] == b"/etc/hostname".ljust(NAME_SIZE, b"\0")
    assert struct.unpack_from("<QQQ", first, NAME_SIZE) == (1, 4, 1)
    second = block[_entry_at(1) : _entry_at(2)]
    assert second[:NAME_SIZE] == b"/srv/data/log".ljust(NAME_SIZE, b"\0")
    assert struct.unpack_from("<QQQ", second, NAME_SIZE) == (2, BLOCK_SIZE + 1, 2)
    assert block[_entry_at(2) :] == bytes(BLOCK_SIZE - _entry_at(2))
    assert bytes(device.data[BLOCK_SIZE : BLOCK_SIZE + 5]) == b"cvm\n\0"  # padded with zeros


def test_format_takes_the_whole_blocks_of_the_device() -> None:
    store = FileStore.format(MemoryDevice(2 * BLOCK_SIZE + 100))
    assert (store.blocks, store.next_free, store.entries) == (2, 1, [])
    reopened = FileStore.open(store.device)
    assert (reopened.blocks, reopened.next_free, reopened.names()) == (2, 1, [])


@pytest.mark.parametrize("size", [0, BLOCK_SIZE, 2 * BLOCK_SIZE - 1])
def test_a_device_of_fewer_than_two_blocks_cannot_be_formatted(size: int) -> None:
    device = MemoryDevice(size)
    with pytest.raises(UsageError, match=r"^file store: the device holds fewer than two "
                                         r"blocks$"):
        FileStore.format(device)
    assert device.data == bytes(size)


# ---- open's refusals --------------------------------------------------------------------------
def _refused(device: MemoryDevice, message: str) -> None:
    with pytest.raises(FormatError) as refused:
        FileStore.open(device)
    assert str(refused.value) == message


def test_a_device_smaller_than_one_block_is_refused() -> None:
    _refused(MemoryDevice(BLOCK_SIZE - 1), "file store: the device is smaller than one block")


def test_a_device_of_exactly_one_block_is_not_refused_as_smaller() -> None:
    device = MemoryDevice(2 * BLOCK_SIZE)
    FileStore.format(device)
    one = MemoryDevice(BLOCK_SIZE)
    one.data[:] = device.data[:BLOCK_SIZE]
    one.data[0x10:0x18] = (1).to_bytes(8, "little")  # a store of block 0 alone: no room
    store = FileStore.open(one)
    assert (store.blocks, store.next_free, store.names()) == (1, 1, [])
    with pytest.raises(StateError, match="no room"):
        store.write("/a", b"")


def test_a_store_opens_on_a_device_of_exactly_its_size() -> None:
    device = MemoryDevice(2 * BLOCK_SIZE)
    FileStore.format(device).write("/a", b"x")
    assert FileStore.open(device).read("/a") == b"x"


def test_a_bad_magic_is_refused_as_a_wrong_key() -> None:
    device, _ = _stored()
    device.data[7] ^= 1
    _refused(device, "file store: bad magic (not a cvm-filestore; wrong key?)")


@pytest.mark.parametrize(("offset", "value"), [(0x08, 0), (0x08, 2), (0x0C, 512),
                                               (0x0C, 8192)])
def test_another_version_or_block_size_is_refused(offset: int, value: int) -> None:
    device, _ = _stored()
    device.data[offset : offset + 4] = value.to_bytes(4, "little")
    _refused(device, "file store: unsupported version or block size")


@pytest.mark.parametrize(("blocks", "next_free"), [(17, 4), (16, 0), (16, 17), (2, 4)])
def test_blocks_and_next_free_that_do_not_fit_are_refused(blocks: int, next_free: int) -> None:
    device, _ = _stored(16)
    device.data[0x10:0x20] = struct.pack("<QQ", blocks, next_free)
    _refused(device, f"file store: {blocks} blocks, next free {next_free} do not fit the "
                     f"{16 * BLOCK_SIZE}-byte device")


@pytest.mark.parametrize(("blocks", "next_free"), [(16, 16), (16, 4), (4, 4)])
def test_the_largest_blocks_and_next_free_are_taken(blocks: int, next_free: int) -> None:
    device, _ = _stored(16)
    device.data[0x10:0x20] = struct.pack("<QQ", blocks, next_free)
    assert (FileStore.open(device).blocks, FileStore.open(device).next_free) == (blocks,
                                                                                 next_free)


def test_more_entries_than_block_zero_holds_are_refused() -> None:
    device, _ = _stored()
    device.data[0x20:0x24] = (MAX_ENTRIES + 1).to_bytes(4, "little")
    _refused(device, f"file store: {MAX_ENTRIES + 1} entries, at most {MAX_ENTRIES}")
    device.data[0x20:0x24] = MAX_ENTRIES.to_bytes(4, "little")
    with pytest.raises(FormatError) as refused:  # 63 read: the third on are empty entries
        FileStore.open(device)
    assert str(refused.value) == "file store: entry 2 () lies outside the store"


def test_an_entry_name_that_is_not_utf8_is_refused_by_its_index() -> None:
    device, _ = _stored()
    device.data[_entry_at(1) + 1] = 0xFF
    _refused(device, "file store: entry 1 has a name that is not UTF-8")


@pytest.mark.parametrize(("field", "value"), [
    (0, 0),  # first block 0 is block 0 itself
    (0, 3),  # 3 + 2 blocks reach past next free (4)
    (8, 2 * BLOCK_SIZE + 1),  # longer than its blocks
    (16, 3),  # 2 + 3 blocks reach past next free
])
def test_an_entry_outside_the_store_is_refused_by_index_and_name(field: int, value: int) -> None:
    device, _ = _stored()
    at = _entry_at(1) + NAME_SIZE + field
    device.data[at : at + 8] = value.to_bytes(8, "little")
    _refused(device, "file store: entry 1 (/srv/data/log) lies outside the store")


def test_an_entry_that_ends_at_next_free_and_fills_its_blocks_is_taken() -> None:
    device, _ = _stored()
    at = _entry_at(1) + NAME_SIZE + 8
    device.data[at : at + 8] = (2 * BLOCK_SIZE).to_bytes(8, "little")
    entry = FileStore.open(device).entries[1]
    assert entry == FileEntry("/srv/data/log", 2, 2 * BLOCK_SIZE, 2)


# ---- names ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["/", "relative", "", "/a\0b", "/" + "x" * NAME_SIZE,
                                  "/" + "\u00e9" * 20])
def test_a_name_that_is_no_short_absolute_path_is_refused(name: str) -> None:
    device, store = _stored()
    before = bytes(device.data)
    with pytest.raises(UsageError) as refused:
        store.write(name, b"data")
    assert str(refused.value) == (f"file store: name {name!r} must be an absolute path of at "
                                  f"most {NAME_SIZE} bytes")
    assert bytes(device.data) == before


@pytest.mark.parametrize("name", ["/a", "/" + "x" * (NAME_SIZE - 1), "/" + "\u00e9" * 19])
def test_names_of_two_to_forty_bytes_are_taken(name: str) -> None:
    device, store = _stored()
    store.write(name, b"data")
    assert FileStore.open(device).read(name) == b"data"


def test_a_name_keeps_every_character_but_the_padding() -> None:
    device, store = _stored()
    names = ["/srv/DATAX", "/x/\u00e9", "/XX"]
    for name in names:
        store.write(name, name.encode())
    reopened = FileStore.open(device)
    assert reopened.names() == ["/etc/hostname", "/srv/data/log", *names]
    assert [reopened.read(name) for name in names] == [name.encode() for name in names]


# ---- room -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "blocks"), [(0, 1), (1, 1), (BLOCK_SIZE, 1),
                                              (BLOCK_SIZE + 1, 2), (3 * BLOCK_SIZE, 3)])
def test_a_file_takes_its_whole_blocks_and_an_empty_one_one_block(size: int, blocks: int
                                                                  ) -> None:
    device = MemoryDevice(8 * BLOCK_SIZE)
    store = FileStore.format(device)
    store.write("/f", bytes([5]) * size)
    assert store.entries == [FileEntry("/f", 1, size, blocks)]
    assert store.next_free == 1 + blocks
    assert FileStore.open(device).read("/f") == bytes([5]) * size


def test_a_file_that_fits_its_blocks_is_rewritten_in_place() -> None:
    device, store = _stored()
    store.write("/srv/data/log", bytes([2]) * (2 * BLOCK_SIZE))  # exactly its two blocks
    store.write("/srv/data/log", b"short")
    assert store.entries[1] == FileEntry("/srv/data/log", 2, 5, 2) and store.next_free == 4
    assert FileStore.open(device).read("/srv/data/log") == b"short"


def test_a_write_fills_the_rest_of_its_last_block_with_zeros_and_no_more() -> None:
    device = MemoryDevice(8 * BLOCK_SIZE)
    store = FileStore.format(device)
    store.write("/first", bytes([0xAA]) * 4000)
    store.write("/second", bytes([0xBB]) * BLOCK_SIZE)
    store.write("/first", bytes([0xCC]) * 3000)  # in place, shorter
    assert bytes(device.data[BLOCK_SIZE : 2 * BLOCK_SIZE]) == (bytes([0xCC]) * 3000
                                                               + bytes(BLOCK_SIZE - 3000))
    assert bytes(device.data[2 * BLOCK_SIZE : 3 * BLOCK_SIZE]) == bytes([0xBB]) * BLOCK_SIZE
    assert FileStore.open(device).read("/second") == bytes([0xBB]) * BLOCK_SIZE


def test_a_file_that_outgrows_its_blocks_moves_to_fresh_ones() -> None:
    device, store = _stored()
    store.write("/etc/hostname", bytes([3]) * (BLOCK_SIZE + 1))
    assert store.entries[0] == FileEntry("/etc/hostname", 4, BLOCK_SIZE + 1, 2)
    assert store.next_free == 6 and store.names() == ["/etc/hostname", "/srv/data/log"]
    reopened = FileStore.open(device)
    assert reopened.read("/etc/hostname") == bytes([3]) * (BLOCK_SIZE + 1)
    assert reopened.read("/srv/data/log") == bytes([1]) * (BLOCK_SIZE + 1)


def test_the_last_block_can_be_taken() -> None:
    device = MemoryDevice(4 * BLOCK_SIZE)
    store = FileStore.format(device)
    store.write("/all", bytes(3 * BLOCK_SIZE))
    assert store.next_free == store.blocks == 4


def test_a_write_without_room_is_refused_and_changes_nothing() -> None:
    device, store = _stored(6)  # blocks 4 and 5 free
    before = bytes(device.data)
    with pytest.raises(StateError) as refused:
        store.write("/big", bytes(2 * BLOCK_SIZE + 1))
    assert str(refused.value) == f"file store: no room for {2 * BLOCK_SIZE + 1} bytes of /big"
    with pytest.raises(StateError):  # outgrowing its blocks needs fresh ones too
        store.write("/etc/hostname", bytes(3 * BLOCK_SIZE))
    assert bytes(device.data) == before
    assert (store.next_free, store.names()) == (4, ["/etc/hostname", "/srv/data/log"])
    store.write("/fits", bytes(2 * BLOCK_SIZE))
    assert store.next_free == 6


def test_when_every_entry_is_taken_a_new_file_is_refused_but_a_rewrite_is_not() -> None:
    device = MemoryDevice((MAX_ENTRIES + 4) * BLOCK_SIZE)
    store = FileStore.format(device)
    for index in range(MAX_ENTRIES):
        store.write(f"/f{index}", b"")
    before = bytes(device.data)
    with pytest.raises(StateError) as refused:
        store.write("/one-more", b"")
    assert str(refused.value) == f"file store: all {MAX_ENTRIES} entries are in use"
    assert bytes(device.data) == before and len(store.entries) == MAX_ENTRIES
    store.write("/f5", bytes(2 * BLOCK_SIZE))  # moves to fresh blocks: no new entry
    assert FileStore.open(device).read("/f5") == bytes(2 * BLOCK_SIZE)


def test_reading_a_file_that_is_not_there_names_it() -> None:
    _, store = _stored()
    with pytest.raises(StateError) as refused:
        store.read("/etc/passwd")
    assert str(refused.value) == "file store: no file /etc/passwd"


# ---- the memory device ------------------------------------------------------------------------
@pytest.mark.parametrize(("offset", "size"), [(-1, 1), (15, 2), (16, 1)])
def test_the_memory_device_refuses_ranges_outside_it(offset: int, size: int) -> None:
    device = MemoryDevice(16)
    message = f"^range {offset}\\+{size} lies outside the 16-byte device$"
    with pytest.raises(UsageError, match=message):
        device.read(offset, size)
    with pytest.raises(UsageError, match=message):
        device.write(offset, bytes(size))
    assert device.data == bytes(16)


def test_the_memory_device_reads_and_writes_to_its_last_byte() -> None:
    device = MemoryDevice(16)
    device.write(14, b"ab")
    assert device.read(14, 2) == b"ab" and device.read(16, 0) == b"" and device.size() == 16
