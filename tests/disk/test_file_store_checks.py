"""cvm-filestore/2 field by field: the bytes of both header copies, each refusal of a copy with
its reason (a corrupt or foreign store names what is wrong), the copy open takes, the names a
file may have, where a file's blocks go, a refused write that leaves the store and its device
as they were, renames and removals, and a version-1 store read but never written."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import pytest

from cvm.disk.file_store import (
    BLOCK_SIZE,
    MAX_ENTRIES,
    FileEntry,
    FileStore,
    MemoryDevice,
    first_fit,
    free_extents,
)
from cvm.disk.file_store_header import ENTRIES_OFFSET, ENTRY_SIZE, NAME_SIZE
from cvm.errors import FormatError, StateError, UsageError


def _entry_at(index: int) -> int:
    return ENTRIES_OFFSET + index * ENTRY_SIZE


def _stored(blocks: int = 16) -> tuple[MemoryDevice, FileStore]:
    """Generation 2 (block 0) holds the hostname (block 15: the free run reached the end),
    generation 3 (block 1) both files (the log in blocks 2 and 3)."""
    device = MemoryDevice(blocks * BLOCK_SIZE)
    store = FileStore.format(device)
    store.write("/etc/hostname", b"cvm\n")
    store.write("/srv/data/log", bytes([1]) * (BLOCK_SIZE + 1))
    return device, store


def _copy(device: MemoryDevice, copy: int) -> bytearray:
    return device.data[copy * BLOCK_SIZE : (copy + 1) * BLOCK_SIZE]


def _crc(block: bytes | bytearray) -> int:
    return zlib.crc32(bytes(block[:0x24]) + bytes(4) + bytes(block[0x28:]))


def _rewrite(device: MemoryDevice, copy: int, change: Callable[[bytearray], object]) -> None:
    """Change copy ``copy`` and give it a matching CRC (what a corrupt, not torn, copy is)."""
    block = _copy(device, copy)
    change(block)
    block[0x24:0x28] = _crc(block).to_bytes(4, "little")
    device.data[copy * BLOCK_SIZE : (copy + 1) * BLOCK_SIZE] = block


def _refused(device: MemoryDevice, message: str) -> None:
    with pytest.raises(FormatError) as refused:
        FileStore.open(device)
    assert str(refused.value) == message


# ---- the two copies ---------------------------------------------------------------------------
def test_each_copy_holds_the_header_and_the_entries_little_endian() -> None:
    device, _ = _stored(16)
    newest = bytes(_copy(device, 1))
    assert newest[:8] == b"CVMFS002"
    assert struct.unpack_from("<IIQQII", newest, 8) == (2, BLOCK_SIZE, 16, 3, 2, _crc(newest))
    assert newest[0x28:ENTRIES_OFFSET] == bytes(24)
    first = newest[_entry_at(0) : _entry_at(1)]
    assert first[:NAME_SIZE] == b"/etc/hostname".ljust(NAME_SIZE, b"\0")
    assert struct.unpack_from("<QQQ", first, NAME_SIZE) == (15, 4, 1)
    second = newest[_entry_at(1) : _entry_at(2)]
    assert second[:NAME_SIZE] == b"/srv/data/log".ljust(NAME_SIZE, b"\0")
    assert struct.unpack_from("<QQQ", second, NAME_SIZE) == (2, BLOCK_SIZE + 1, 2)
    assert newest[_entry_at(2) :] == bytes(BLOCK_SIZE - _entry_at(2))
    older = bytes(_copy(device, 0))
    assert struct.unpack_from("<8sIIQQII", older) == (b"CVMFS002", 2, BLOCK_SIZE, 16, 2, 1,
                                                      _crc(older))
    assert older[_entry_at(0) : _entry_at(1)] == first
    assert older[_entry_at(1) :] == bytes(BLOCK_SIZE - _entry_at(1))
    assert bytes(device.data[15 * BLOCK_SIZE :]) == b"cvm\n" + bytes(BLOCK_SIZE - 4)
    assert bytes(device.data[2 * BLOCK_SIZE : 4 * BLOCK_SIZE]) == (
        bytes([1]) * (BLOCK_SIZE + 1) + bytes(BLOCK_SIZE - 1))


def test_format_writes_generations_zero_and_one_over_the_whole_blocks() -> None:
    device = MemoryDevice(3 * BLOCK_SIZE + 100)
    store = FileStore.format(device)
    assert (store.blocks, store.generation, store.entries, store.version) == (3, 1, [], 2)
    for copy in (0, 1):
        block = bytes(_copy(device, copy))
        assert struct.unpack_from("<8sIIQQII", block) == (b"CVMFS002", 2, BLOCK_SIZE, 3, copy,
                                                          0, _crc(block))
        assert block[0x28:] == bytes(BLOCK_SIZE - 0x28)
    reopened = FileStore.open(device)
    assert (reopened.blocks, reopened.generation, reopened.names()) == (3, 1, [])
    assert reopened.free() == [(2, 1)]


def test_format_over_a_store_takes_the_two_generations_after_its_newest() -> None:
    device, _ = _stored()  # generation 3, in block 1
    store = FileStore.format(device)
    assert (store.generation, store.names()) == (5, [])
    assert [struct.unpack_from("<Q", device.data, copy * BLOCK_SIZE + 0x18)[0]
            for copy in (0, 1)] == [4, 5]
    device.data[BLOCK_SIZE + 0x100] ^= 1  # generation 5 torn: 4 is the newest
    assert FileStore.format(device).generation == 6
    device.data[0:8] = b"CVMFS001"  # a version-1 store (here, a corrupt one): from 0
    assert FileStore.format(device).generation == 1
    device.data[:] = bytes([0xA5]) * len(device.data)  # no store: from 0
    assert FileStore.format(device).generation == 1
    assert FileStore.open(device).generation == 1


@pytest.mark.parametrize("size", [0, BLOCK_SIZE, 3 * BLOCK_SIZE - 1])
def test_a_device_of_fewer_than_three_blocks_cannot_be_formatted(size: int) -> None:
    device = MemoryDevice(size)
    with pytest.raises(UsageError) as refused:
        FileStore.format(device)
    assert str(refused.value) == "file store: the device holds fewer than 3 blocks"
    assert device.data == bytes(size)


def test_each_commit_goes_to_the_copy_without_the_newest_generation() -> None:
    device, store = _stored()
    for generation in (4, 5, 6):
        store.write("/etc/hostname", bytes([generation]))
        assert store.generation == generation
        assert struct.unpack_from("<Q", device.data, generation % 2 * BLOCK_SIZE + 0x18) == (
            generation,)
        assert struct.unpack_from("<Q", device.data, (generation - 1) % 2 * BLOCK_SIZE
                                  + 0x18) == (generation - 1,)
        assert FileStore.open(device).read("/etc/hostname") == bytes([generation])


# ---- which copy open takes --------------------------------------------------------------------
@pytest.mark.parametrize("newest", [0, 1])
def test_open_takes_the_valid_copy_with_the_higher_generation(newest: int) -> None:
    device, store = _stored()
    if newest == 0:
        store.write("/etc/hostname", b"generation 4")
    reopened = FileStore.open(device)
    assert reopened.generation == 3 + (newest == 0)
    assert reopened.names() == ["/etc/hostname", "/srv/data/log"]


@pytest.mark.parametrize("copy", [0, 1])
def test_one_torn_copy_leaves_the_other(copy: int) -> None:
    device, _ = _stored()
    device.data[copy * BLOCK_SIZE + 0x100] ^= 1  # in an entry: the CRC no longer matches
    reopened = FileStore.open(device)
    assert reopened.generation == 3 - copy
    assert reopened.names() == ["/etc/hostname", "/srv/data/log"][: 2 - copy]
    reopened.write("/x", b"next")  # the next generation overwrites the torn copy
    assert FileStore.open(device).generation == 4 - copy


def test_both_copies_corrupt_are_refused_with_each_reason() -> None:
    device, _ = _stored()
    device.data[0x100] ^= 1
    device.data[BLOCK_SIZE + 0x0C] = 2
    _refused(device, "file store: neither copy of the cvm-filestore/2 header is valid (block "
                     "0: CRC-32 mismatch (torn or corrupt); block 1: CRC-32 mismatch (torn or "
                     "corrupt))")


def test_a_device_without_the_magic_in_either_copy_is_refused_as_a_wrong_key() -> None:
    device, _ = _stored()
    device.data[7] ^= 1
    FileStore.open(device)  # block 1 still has it
    device.data[BLOCK_SIZE] ^= 1
    _refused(device, "file store: bad magic (not a cvm-filestore; wrong key?)")


@pytest.mark.parametrize("size", [0, 2 * BLOCK_SIZE - 1])
def test_a_device_smaller_than_two_blocks_is_refused(size: int) -> None:
    _refused(MemoryDevice(size), "file store: the device is smaller than 2 blocks")


def test_a_store_of_two_blocks_opens_and_has_no_room() -> None:
    device = MemoryDevice(2 * BLOCK_SIZE)
    source = MemoryDevice(3 * BLOCK_SIZE)
    FileStore.format(source)
    for copy in (0, 1):
        device.data[copy * BLOCK_SIZE : (copy + 1) * BLOCK_SIZE] = _copy(source, copy)
        _rewrite(device, copy, lambda b: b.__setitem__(slice(0x10, 0x18),
                                                       (2).to_bytes(8, "little")))
    store = FileStore.open(device)
    assert (store.blocks, store.free()) == (2, [])
    with pytest.raises(StateError, match="no room"):
        store.write("/a", b"")


def _only(device: MemoryDevice, change: Callable[[bytearray], object], reason: str) -> None:
    """``change`` to copy 1 (generation 3) makes it invalid for ``reason``: open takes copy 0
    (generation 2); with copy 0 torn too, open names both."""
    _rewrite(device, 1, change)
    assert FileStore.open(device).generation == 2
    device.data[0x100] ^= 1
    _refused(device, "file store: neither copy of the cvm-filestore/2 header is valid (block "
                     f"0: CRC-32 mismatch (torn or corrupt); block 1: {reason})")


def _field(offset: int, value: int, size: int = 8) -> Callable[[bytearray], None]:
    def change(block: bytearray) -> None:
        block[offset : offset + size] = value.to_bytes(size, "little")
    return change


@pytest.mark.parametrize(("offset", "value", "size", "reason"), [
    (0x08, 1, 4, "unsupported version or block size"),
    (0x08, 3, 4, "unsupported version or block size"),
    (0x0C, 512, 4, "unsupported version or block size"),
    (0x18, 2, 8, "generation 2 does not belong in block 1"),
    (0x18, 4, 8, "generation 4 does not belong in block 1"),
    (0x18, 0, 8, "generation 0 does not belong in block 1"),
    (0x10, 17, 8, f"17 blocks do not fit the {16 * BLOCK_SIZE}-byte device"),
    (0x10, 1, 8, f"1 blocks do not fit the {16 * BLOCK_SIZE}-byte device"),
    (0x20, MAX_ENTRIES + 1, 4, f"{MAX_ENTRIES + 1} entries, at most {MAX_ENTRIES}"),
    (0x20, 1, 4, "the entries after the 1 in use are not zero"),
    (0x20, 3, 4, "entry 2 has no valid name"),
    (0x28, 1, 1, "cvm-filestore/2 header: reserved bytes at 0x28..0x3f are not zero"),
    (0x3F, 1, 1, "cvm-filestore/2 header: reserved bytes at 0x28..0x3f are not zero"),
])
def test_a_header_field_out_of_range_makes_its_copy_invalid(offset: int, value: int, size: int,
                                                           reason: str) -> None:
    device, _ = _stored()
    _only(device, _field(offset, value, size), reason)


def test_a_copy_without_its_magic_is_invalid_for_that() -> None:
    device, _ = _stored()
    _only(device, _field(0, 0), "no cvm-filestore/2 magic")


def test_a_nonzero_byte_after_the_entries_in_use_makes_its_copy_invalid() -> None:
    device, _ = _stored()
    _only(device, lambda b: b.__setitem__(BLOCK_SIZE - 1, 1),
          "the entries after the 2 in use are not zero")


def _entry_field(index: int, field: int, value: int) -> Callable[[bytearray], None]:
    return _field(_entry_at(index) + NAME_SIZE + field, value)


@pytest.mark.parametrize(("field", "value"), [
    (0, 1),  # block 1 is a header copy
    (0, 15),  # 15 + 2 blocks reach past the store's 16
    (8, 2 * BLOCK_SIZE + 1),  # longer than its blocks
    (8, BLOCK_SIZE),  # fits one block: two is more than it takes
    (16, 3),  # more blocks than its length takes
    (16, 1),  # fewer blocks than its length takes
])
def test_an_entry_outside_the_store_makes_its_copy_invalid(field: int, value: int) -> None:
    device, _ = _stored()
    _only(device, _entry_field(1, field, value), "entry 1 (/srv/data/log) lies outside the store")


def test_entries_at_either_end_of_the_data_blocks_are_taken() -> None:
    device, _ = _stored()  # the log from block 2, the first data block; the hostname in 15
    store = FileStore.open(device)
    assert [(e.first_block, e.capacity) for e in store.entries] == [(15, 1), (2, 2)]
    assert (store.blocks, store.generation) == (16, 3)


def test_an_empty_file_takes_one_block() -> None:
    device, _ = _stored()
    _rewrite(device, 1, _entry_field(1, 8, 0))
    _only(device, _entry_field(1, 16, 2), "entry 1 (/srv/data/log) lies outside the store")


@pytest.mark.parametrize("first", [3, 2])
def test_entries_that_share_blocks_make_their_copy_invalid(first: int) -> None:
    device, _ = _stored()  # the log in blocks 2 and 3
    _only(device, _entry_field(0, 0, first), "/srv/data/log and /etc/hostname share blocks"
          if first == 3 else "/etc/hostname and /srv/data/log share blocks")


def test_adjacent_entries_are_taken() -> None:
    device, _ = _stored()
    _rewrite(device, 1, _entry_field(0, 0, 4))  # the log in 2-3, the hostname in 4
    assert [e.first_block for e in FileStore.open(device).entries] == [4, 2]


def test_a_name_that_is_not_utf8_makes_its_copy_invalid() -> None:
    device, _ = _stored()
    _only(device, lambda b: b.__setitem__(_entry_at(1) + 1, 0xFF),
          "entry 1 has a name that is not UTF-8")


@pytest.mark.parametrize("name", [b"relative", b"", b"/a\0b", b"/"])
def test_an_entry_name_that_is_no_absolute_path_makes_its_copy_invalid(name: bytes) -> None:
    device, _ = _stored()
    _only(device, lambda b: b.__setitem__(slice(_entry_at(1), _entry_at(1) + NAME_SIZE),
                                          name.ljust(NAME_SIZE, b"\0")),
          "entry 1 has no valid name")


def test_a_repeated_name_makes_its_copy_invalid() -> None:
    device, _ = _stored()
    _only(device, lambda b: b.__setitem__(slice(_entry_at(1), _entry_at(1) + NAME_SIZE),
                                          b"/etc/hostname".ljust(NAME_SIZE, b"\0")),
          "entry 1 (/etc/hostname) repeats a name")


def test_a_copy_may_fill_every_entry() -> None:
    device = MemoryDevice((MAX_ENTRIES + 3) * BLOCK_SIZE)
    store = FileStore.format(device)
    for index in range(MAX_ENTRIES):
        store.write(f"/f{index}", bytes([index]))
    reopened = FileStore.open(device)
    assert len(reopened.names()) == MAX_ENTRIES
    assert reopened.read(f"/f{MAX_ENTRIES - 1}") == bytes([MAX_ENTRIES - 1])


# ---- names ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["/", "relative", "", "/a\0b", "/" + "x" * NAME_SIZE,
                                  "/" + "\u00e9" * 20])
def test_a_name_that_is_no_short_absolute_path_is_refused(name: str) -> None:
    device, store = _stored()
    before = bytes(device.data)
    message = (f"file store: name {name!r} must be an absolute path of at most {NAME_SIZE} "
               "bytes")
    for refused_call in (lambda: store.write(name, b"data"),
                         lambda: store.rename("/etc/hostname", name)):
        with pytest.raises(UsageError) as refused:
            refused_call()
        assert str(refused.value) == message
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


# ---- where a file's blocks go -----------------------------------------------------------------
def test_free_extents_are_the_runs_no_extent_covers() -> None:
    assert free_extents([], 2, 10) == [(2, 8)]
    assert free_extents([(5, 2), (2, 1)], 2, 10) == [(3, 2), (7, 3)]
    assert free_extents([(2, 3), (5, 5)], 2, 10) == []
    assert free_extents([(2, 4), (3, 1), (8, 1)], 2, 10) == [(6, 2), (9, 1)]
    assert free_extents([(4, 6)], 2, 10) == [(2, 2)]


def test_first_fit_takes_the_first_run_that_holds_the_blocks() -> None:
    free = [(3, 1), (6, 3), (12, 4)]
    assert first_fit(free, 1, 20) == 3
    assert first_fit(free, 2, 20) == 6
    assert first_fit(free, 3, 20) == 6
    assert first_fit(free, 4, 20) == 12
    assert first_fit(free, 5, 20) is None
    assert first_fit(free, 4, 16) == 12  # the run reaches the end: at its end, which is here
    assert first_fit(free, 2, 16) == 6
    assert first_fit([(12, 4)], 1, 16) == 15
    assert first_fit([(12, 4)], 1, 17) == 12


@pytest.mark.parametrize(("size", "blocks"), [(0, 1), (1, 1), (BLOCK_SIZE, 1),
                                              (BLOCK_SIZE + 1, 2), (3 * BLOCK_SIZE, 3)])
def test_a_file_takes_its_whole_blocks_and_an_empty_one_one_block(size: int, blocks: int
                                                                  ) -> None:
    device = MemoryDevice(8 * BLOCK_SIZE)
    store = FileStore.format(device)
    store.write("/f", bytes([5]) * size)
    assert store.entries == [FileEntry("/f", 8 - blocks, size, blocks)]
    assert store.free() == [(2, 6 - blocks)]
    assert FileStore.open(device).read("/f") == bytes([5]) * size


def test_a_rewrite_goes_to_free_blocks_and_frees_the_old_ones() -> None:
    device, store = _stored()  # hostname in 15, log in 2-3
    before = bytes(device.data[2 * BLOCK_SIZE : 4 * BLOCK_SIZE])
    store.write("/srv/data/log", bytes([2]) * 5)  # the first free run, 4-14
    assert store.entries[1] == FileEntry("/srv/data/log", 4, 5, 1)
    assert store.free() == [(2, 2), (5, 10)]
    assert bytes(device.data[2 * BLOCK_SIZE : 4 * BLOCK_SIZE]) == before  # untouched
    store.write("/etc/hostname", b"vm\n")  # the log's old blocks
    assert store.entries[0] == FileEntry("/etc/hostname", 2, 3, 1)
    assert store.free() == [(3, 1), (5, 11)]
    reopened = FileStore.open(device)
    assert (reopened.read("/srv/data/log"), reopened.read("/etc/hostname")) == (
        bytes([2]) * 5, b"vm\n")


def test_a_write_fills_the_rest_of_its_last_block_with_zeros_and_no_more() -> None:
    device = MemoryDevice(8 * BLOCK_SIZE)
    store = FileStore.format(device)
    device.data[2 * BLOCK_SIZE :] = bytes([0xEE]) * (6 * BLOCK_SIZE)
    store.write("/first", bytes([0xAA]) * 3000)  # block 7
    store.write("/second", bytes([0xBB]) * (BLOCK_SIZE + 1))  # blocks 2 and 3
    assert bytes(device.data[7 * BLOCK_SIZE :]) == (bytes([0xAA]) * 3000
                                                    + bytes(BLOCK_SIZE - 3000))
    assert bytes(device.data[2 * BLOCK_SIZE : 4 * BLOCK_SIZE]) == (
        bytes([0xBB]) * (BLOCK_SIZE + 1) + bytes(BLOCK_SIZE - 1))
    assert bytes(device.data[4 * BLOCK_SIZE : 7 * BLOCK_SIZE]) == bytes([0xEE]) * (
        3 * BLOCK_SIZE)
    store.write("/third", b"")
    assert bytes(device.data[4 * BLOCK_SIZE : 5 * BLOCK_SIZE]) == bytes(BLOCK_SIZE)


def test_the_last_block_can_be_taken() -> None:
    device = MemoryDevice(5 * BLOCK_SIZE)
    store = FileStore.format(device)
    store.write("/all", bytes([1]) * (3 * BLOCK_SIZE))
    assert store.entries == [FileEntry("/all", 2, 3 * BLOCK_SIZE, 3)] and store.free() == []
    assert FileStore.open(device).read("/all") == bytes([1]) * (3 * BLOCK_SIZE)


def test_a_write_without_room_is_refused_and_changes_nothing() -> None:
    device, store = _stored(6)  # hostname in 5, log in 2-3, block 4 free
    before = bytes(device.data)
    with pytest.raises(StateError) as refused:
        store.write("/big", bytes(BLOCK_SIZE + 1))
    assert str(refused.value) == (f"file store: no room for {BLOCK_SIZE + 1} bytes of /big "
                                  "(2 blocks, 1 free)")
    with pytest.raises(StateError):  # a rewrite needs room while the old blocks are named
        store.write("/srv/data/log", bytes(BLOCK_SIZE + 1))
    assert bytes(device.data) == before
    assert (store.generation, store.names()) == (3, ["/etc/hostname", "/srv/data/log"])
    store.write("/srv/data/log", bytes(BLOCK_SIZE))
    assert store.free() == [(2, 2)]


def test_free_blocks_in_runs_smaller_than_the_file_are_joined_by_moving_a_file() -> None:
    device = MemoryDevice(8 * BLOCK_SIZE)  # data blocks 2-7
    store = FileStore.format(device)
    for name in ("/a", "/b", "/c", "/d"):
        store.write(name, name.encode())  # /a in 7, then 2, 3, 4
    store.remove("/b")
    assert store.free() == [(2, 1), (5, 2)]  # three blocks free, in runs of one and two
    generation = store.generation
    store.write("/e", bytes([5]) * (2 * BLOCK_SIZE + 1))  # /d to block 2: 4-6 free
    assert [(e.name, e.first_block) for e in store.entries] == [
        ("/a", 7), ("/c", 3), ("/d", 2), ("/e", 4)]
    assert store.generation == generation + 2  # the move's commit, then the write's
    reopened = FileStore.open(device)
    assert {n: reopened.read(n) for n in reopened.names()} == {
        "/a": b"/a", "/c": b"/c", "/d": b"/d", "/e": bytes([5]) * (2 * BLOCK_SIZE + 1)}


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
    store.write("/f5", bytes(2 * BLOCK_SIZE))  # no new entry
    assert FileStore.open(device).read("/f5") == bytes(2 * BLOCK_SIZE)


def test_reading_a_file_that_is_not_there_names_it() -> None:
    _, store = _stored()
    for call in (store.read, store.remove, lambda name: store.rename(name, "/new")):
        with pytest.raises(StateError) as refused:
            call("/etc/passwd")
        assert str(refused.value) == "file store: no file /etc/passwd"


# ---- rename and remove ------------------------------------------------------------------------
def test_remove_frees_the_blocks_of_the_file() -> None:
    device, store = _stored()
    store.remove("/srv/data/log")
    assert (store.names(), store.free(), store.generation) == (["/etc/hostname"], [(2, 13)], 4)
    assert FileStore.open(device).names() == ["/etc/hostname"]
    store.remove("/etc/hostname")
    assert (store.names(), store.free()) == ([], [(2, 14)])


def test_rename_keeps_the_blocks_and_replaces_a_file_of_the_new_name() -> None:
    device, store = _stored()
    store.rename("/srv/data/log", "/srv/data/log.1")
    assert store.entries == [FileEntry("/etc/hostname", 15, 4, 1),
                             FileEntry("/srv/data/log.1", 2, BLOCK_SIZE + 1, 2)]
    store.rename("/srv/data/log.1", "/etc/hostname")
    assert store.entries == [FileEntry("/etc/hostname", 2, BLOCK_SIZE + 1, 2)]
    assert store.free() == [(4, 12)]
    store.rename("/etc/hostname", "/etc/hostname")
    reopened = FileStore.open(device)
    assert reopened.names() == ["/etc/hostname"] and reopened.generation == 6
    assert reopened.read("/etc/hostname") == bytes([1]) * (BLOCK_SIZE + 1)


# ---- a failed write ---------------------------------------------------------------------------
class _FailingDevice(MemoryDevice):
    def __init__(self, data: bytearray, fail_at: int) -> None:
        super().__init__(0)
        self.data, self.fail_at, self.writes = bytearray(data), fail_at, 0

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            raise OSError("the device failed")
        super().write(offset, data)


@pytest.mark.parametrize("fail_at", [1, 2])
def test_after_a_failed_device_write_the_store_must_be_opened_again(fail_at: int) -> None:
    base, _ = _stored()
    device = _FailingDevice(base.data, fail_at)
    store = FileStore.open(device)
    with pytest.raises(OSError, match="failed"):
        store.write("/etc/hostname", b"new")
    assert store.generation == 3 and store.read("/etc/hostname") == b"cvm\n"
    for call in (lambda: store.write("/a", b""), lambda: store.remove("/etc/hostname"),
                 lambda: store.rename("/etc/hostname", "/b")):
        with pytest.raises(StateError) as refused:
            call()
        assert str(refused.value) == ("file store: a write to the device failed; open the "
                                      "store again")
    again = FileStore.open(device)
    again.write("/etc/hostname", b"new")
    assert FileStore.open(device).read("/etc/hostname") == b"new"


# ---- version 1 --------------------------------------------------------------------------------
def _v1(blocks: int = 8, next_free: int = 4, entries: tuple[tuple[bytes, int, int, int], ...]
        = ((b"/etc/hostname", 1, 4, 1), (b"/srv/data/log", 2, BLOCK_SIZE + 1, 2))
        ) -> MemoryDevice:
    """A version-1 store as the code before version 2 wrote it."""
    device = MemoryDevice(blocks * BLOCK_SIZE)
    struct.pack_into("<8sIIQQI", device.data, 0, b"CVMFS001", 1, BLOCK_SIZE, blocks, next_free,
                     len(entries))
    for index, (name, first, length, capacity) in enumerate(entries):
        struct.pack_into(f"<{NAME_SIZE}sQQQ", device.data, _entry_at(index), name, first,
                         length, capacity)
    if blocks >= 4:  # the files' data
        device.data[BLOCK_SIZE : BLOCK_SIZE + 4] = b"cvm\n"
        device.data[2 * BLOCK_SIZE : 3 * BLOCK_SIZE + 1] = bytes([1]) * (BLOCK_SIZE + 1)
    return device


def test_a_version_1_store_is_read() -> None:
    store = FileStore.open(_v1())
    assert (store.version, store.blocks, store.generation) == (1, 8, 0)
    assert store.names() == ["/etc/hostname", "/srv/data/log"]
    assert store.read("/etc/hostname") == b"cvm\n"
    assert store.read("/srv/data/log") == bytes([1]) * (BLOCK_SIZE + 1)


def test_a_version_1_store_is_never_written() -> None:
    device = _v1()
    before = bytes(device.data)
    store = FileStore.open(device)
    for call in (lambda: store.write("/etc/hostname", b"vm\n"),
                 lambda: store.remove("/etc/hostname"),
                 lambda: store.rename("/etc/hostname", "/etc/name")):
        with pytest.raises(UsageError) as refused:
            call()
        assert str(refused.value) == (
            "file store: a cvm-filestore/1 store is read only (it has one header copy and "
            "rewrites files in place); copy its files into a new cvm-filestore/2")
    assert bytes(device.data) == before


def test_a_version_1_store_of_exactly_its_size_opens() -> None:
    assert FileStore.open(_v1(blocks=8, next_free=8)).blocks == 8


def test_an_empty_version_1_store_opens() -> None:
    store = FileStore.open(_v1(blocks=2, next_free=1, entries=()))
    assert (store.blocks, store.names()) == (2, [])


def test_a_version_1_store_may_fill_every_entry() -> None:
    entries = tuple((f"/f{i}".encode(), 1 + i, 0, 1) for i in range(MAX_ENTRIES))
    store = FileStore.open(_v1(blocks=MAX_ENTRIES + 1, next_free=MAX_ENTRIES + 1,
                               entries=entries))
    assert len(store.names()) == MAX_ENTRIES


@pytest.mark.parametrize(("offset", "value", "message"), [
    (0x08, 2, "file store: unsupported version or block size"),
    (0x0C, 512, "file store: unsupported version or block size"),
    (0x20, MAX_ENTRIES + 1, f"file store: {MAX_ENTRIES + 1} entries, at most {MAX_ENTRIES}"),
])
def test_a_version_1_header_out_of_range_is_refused(offset: int, value: int, message: str
                                                    ) -> None:
    device = _v1()
    device.data[offset : offset + 4] = value.to_bytes(4, "little")
    _refused(device, message)


@pytest.mark.parametrize(("blocks", "next_free"), [(9, 4), (8, 0), (8, 9), (2, 4)])
def test_version_1_blocks_and_next_free_that_do_not_fit_are_refused(blocks: int,
                                                                    next_free: int) -> None:
    _refused(_v1_with(blocks, next_free), f"file store: {blocks} blocks, next free {next_free} "
                                          f"do not fit the {8 * BLOCK_SIZE}-byte device")


def _v1_with(blocks: int, next_free: int) -> MemoryDevice:
    device = _v1()
    struct.pack_into("<QQ", device.data, 0x10, blocks, next_free)
    return device


@pytest.mark.parametrize(("entry", "message"), [
    ((b"/a", 0, 0, 1), "file store: entry 0 (/a) lies outside the store"),
    ((b"/a", 3, 0, 2), "file store: entry 0 (/a) lies outside the store"),
    ((b"/a", 1, BLOCK_SIZE + 1, 1), "file store: entry 0 (/a) lies outside the store"),
    ((b"/\xff", 1, 0, 1), "file store: entry 0 has a name that is not UTF-8"),
])
def test_a_version_1_entry_outside_the_store_is_refused(entry: tuple[bytes, int, int, int],
                                                        message: str) -> None:
    _refused(_v1(next_free=4, entries=(entry,)), message)


def test_a_version_1_entry_may_end_at_next_free_and_fill_its_blocks() -> None:
    store = FileStore.open(_v1(next_free=4, entries=((b"/a", 2, 2 * BLOCK_SIZE, 2),)))
    assert store.entries == [FileEntry("/a", 2, 2 * BLOCK_SIZE, 2)]


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
