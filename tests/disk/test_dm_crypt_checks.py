"""The dm-crypt layer's edges: the device's size, what a range outside it does (on every entry
point, the whole-sector ones included: a sector number before the segment would reach the
LUKS2 header), the sectors a partial write reads back, and what reaches the storage."""

from __future__ import annotations

import os
from typing import Any

import pytest

from cvm.crypto.xts import decrypt_one_sector, encrypt_one_sector
from cvm.disk.dm_crypt import CryptDevice
from cvm.errors import FormatError, UsageError
from cvm.formats.luks2.metadata import Segment

KEY = bytes(range(64))
OFFSET = 8192


class CountingStorage:
    """Memory behind the Storage protocol that counts what the device asks of it."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int]] = []
        self.flushes = 0

    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, size: int) -> bytes:
        self.reads.append((offset, size))
        return bytes(self.data[offset : offset + size])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        chunk = bytes(data)
        self.writes.append((offset, len(chunk)))
        self.data[offset : offset + len(chunk)] = chunk

    def flush(self) -> None:
        self.flushes += 1


def _device(sector_size: int = 4096, sectors: int = 4, segment_size: int | None = None,
            size: int | None = None, iv_tweak: int = 0) -> tuple[CountingStorage, CryptDevice]:
    storage = CountingStorage(OFFSET + sectors * sector_size)
    segment = Segment(OFFSET, segment_size, sector_size=sector_size, iv_tweak=iv_tweak)
    return storage, CryptDevice(storage, segment, KEY, size=size)


def _outside(offset: int, size: int, device_size: int) -> str:
    return f"^range {offset}\\+{size} lies outside the {device_size}-byte encrypted device$"


# ---- the device's size ------------------------------------------------------------------------
def test_an_encryption_other_than_aes_xts_plain64_is_refused_by_name() -> None:
    segment = Segment(OFFSET, None, encryption="aes-cbc-essiv:sha256")
    with pytest.raises(UsageError, match=r"^unsupported segment encryption "
                                         r"'aes-cbc-essiv:sha256'$"):
        CryptDevice(CountingStorage(OFFSET + 4096), segment, KEY)


def test_the_size_is_the_given_one_then_the_segments_then_the_rest_of_the_storage() -> None:
    assert _device(sectors=4)[1].size() == 4 * 4096  # "dynamic": to the end of the storage
    assert _device(sectors=4, segment_size=2 * 4096)[1].size() == 2 * 4096
    assert _device(sectors=4, segment_size=2 * 4096, size=3 * 4096)[1].size() == 3 * 4096
    assert _device(sectors=4, size=0)[1].size() == 0


def test_a_given_size_is_rounded_down_to_whole_sectors() -> None:
    assert _device(sector_size=512, sectors=4, size=4 * 512 - 1)[1].size() == 3 * 512
    assert _device(sectors=4, size=3 * 4096 + 4095)[1].size() == 3 * 4096


def test_a_partial_last_512_byte_sector_of_the_device_is_not_seen() -> None:
    """A loop device over an image file shows whole 512-byte sectors only."""
    for extra in (1, 511):
        storage = CountingStorage(OFFSET + 3 * 4096 + extra)
        assert CryptDevice(storage, Segment(OFFSET, None), KEY).size() == 3 * 4096
        small = CountingStorage(OFFSET + 3 * 512 + extra)
        segment = Segment(OFFSET, None, sector_size=512)
        assert CryptDevice(small, segment, KEY).size() == 3 * 512


@pytest.mark.parametrize("device_size", [OFFSET + 3 * 4096 - 1, OFFSET + 3 * 4096 + 512,
                                         OFFSET + 3 * 4096 - 512, OFFSET + 512])
def test_a_dynamic_data_area_of_part_of_a_sector_is_refused_as_cryptsetup_does(
        device_size: int) -> None:
    area = (device_size - device_size % 512) - OFFSET
    with pytest.raises(FormatError, match=rf"^LUKS2 data area of {area} bytes is not a whole "
                                          r"number of 4096-byte sectors: the device was cut "
                                          r"or extended$"):
        CryptDevice(CountingStorage(device_size), Segment(OFFSET, None), KEY)


def test_a_fixed_segment_must_fit_the_device() -> None:
    segment = Segment(OFFSET, 3 * 4096)
    assert CryptDevice(CountingStorage(OFFSET + 3 * 4096), segment, KEY).size() == 3 * 4096
    assert CryptDevice(CountingStorage(OFFSET + 3 * 4096 + 1), segment, KEY).size() == 3 * 4096
    with pytest.raises(FormatError, match=rf"^LUKS2 data segment of {3 * 4096} bytes at "
                                          rf"{OFFSET} does not fit the {OFFSET + 3 * 4096 - 1}"
                                          r"-byte device$"):
        CryptDevice(CountingStorage(OFFSET + 3 * 4096 - 1), segment, KEY)


def test_a_segment_that_starts_past_the_end_of_the_storage_is_refused() -> None:
    for size in (OFFSET - 1, OFFSET - 512):
        with pytest.raises(FormatError, match=rf"^LUKS2 data segment starts at {OFFSET}, past "
                                              rf"the end of the {size}-byte device$"):
            CryptDevice(CountingStorage(size), Segment(OFFSET, None), KEY)
    assert CryptDevice(CountingStorage(OFFSET), Segment(OFFSET, None), KEY).size() == 0
    assert CryptDevice(CountingStorage(OFFSET + 511), Segment(OFFSET, None), KEY).size() == 0


# ---- ranges outside the device ----------------------------------------------------------------
@pytest.mark.parametrize(("offset", "size"), [(-1, 1), (0, -1), (4 * 4096 - 1, 2),
                                              (4 * 4096, 1), (-4096, 4096)])
def test_a_range_outside_the_device_is_refused_and_touches_nothing(offset: int, size: int
                                                                   ) -> None:
    storage, device = _device()
    before = bytes(storage.data)
    with pytest.raises(UsageError, match=_outside(offset, size, 4 * 4096)):
        device.read(offset, size)
    if size >= 0:
        with pytest.raises(UsageError, match=_outside(offset, size, 4 * 4096)):
            device.write(offset, bytes([1]) * size)
    assert storage.reads == [] and storage.writes == [] and bytes(storage.data) == before


@pytest.mark.parametrize(("first", "count"), [(-1, 1), (-2, 3), (3, 2), (4, 1), (0, 5)])
def test_whole_sectors_outside_the_device_are_refused(first: int, count: int) -> None:
    storage, device = _device()
    before = bytes(storage.data)
    message = _outside(first * 4096, count * 4096, 4 * 4096)
    with pytest.raises(UsageError, match=message):
        device.read_sectors(first, count)
    with pytest.raises(UsageError, match=message):
        device.seal_sectors(first, bytes(count * 4096))
    with pytest.raises(UsageError, match=message):
        device.write_sectors(first, bytes(count * 4096))
    assert storage.reads == [] and storage.writes == [] and bytes(storage.data) == before


def test_the_whole_device_and_its_last_byte_are_inside() -> None:
    _, device = _device()
    device.write(0, bytes([7]) * device.size())
    assert device.read(device.size() - 1, 1) == b"\x07"
    assert device.read(device.size(), 0) == b""
    assert device.read_sectors(3, 1) == bytes([7]) * 4096
    at, sealed = device.seal_sectors(3, bytes(4096))
    assert at == OFFSET + 3 * 4096 and len(sealed) == 4096


# ---- what reaches the storage -----------------------------------------------------------------
def test_nothing_is_read_or_written_for_an_empty_range() -> None:
    storage, device = _device()
    assert device.read(5, 0) == b""
    device.write(5, b"")
    device.write(device.size(), memoryview(b""))
    assert storage.reads == [] and storage.writes == []


def test_sealed_sectors_are_not_written_until_stored() -> None:
    storage, device = _device(iv_tweak=3)
    plain = os.urandom(2 * 4096)
    at, sealed = device.seal_sectors(1, plain)
    assert storage.writes == []
    assert at == OFFSET + 4096
    assert sealed[:4096] == encrypt_one_sector(KEY, 8 + 3, plain[:4096])
    assert sealed[4096:] == encrypt_one_sector(KEY, 16 + 3, plain[4096:])
    device.store(at, sealed)
    assert storage.writes == [(OFFSET + 4096, 2 * 4096)]
    assert device.read(4096, 2 * 4096) == plain


def test_a_large_iv_tweak_is_added_exactly() -> None:
    """``iv_tweak`` is a uint64 of the LUKS2 metadata: sector numbers are integers to the last
    bit (a float would round 2^60 + 9 to 2^60)."""
    tweak = (1 << 60) + 1
    storage, device = _device(sector_size=512, iv_tweak=tweak)
    plain = os.urandom(2 * 512)
    device.write(1024, plain)
    at = OFFSET + 1024
    assert bytes(storage.data[at : at + 512]) == encrypt_one_sector(KEY, tweak + 2, plain[:512])
    assert bytes(storage.data[at + 512 : at + 1024]) == encrypt_one_sector(KEY, tweak + 3,
                                                                           plain[512:])
    assert device.read(1024, 1024) == plain


def test_an_aligned_write_reads_nothing_back() -> None:
    storage, device = _device(sector_size=512, sectors=8)
    device.write(1024, bytes([9]) * 1024)
    assert storage.reads == [] and storage.writes == [(OFFSET + 1024, 1024)]


@pytest.mark.parametrize(("offset", "size", "sectors_read"), [
    (100, 10, [0]),  # inside one sector
    (100, 4096 - 100, [0]),  # to the end of its sector
    (0, 100, [0]),  # from the start of its sector
    (4096, 100, [1]),  # from the start of a later sector
    (4000, 200, [0, 1]),  # across a boundary, both ends partial
    (4096, 4096 + 100, [2]),  # aligned start, partial end
    (100, 2 * 4096 - 100, [0]),  # partial start, aligned end
])
def test_a_partial_write_reads_back_only_its_partial_sectors(
        offset: int, size: int, sectors_read: list[int]) -> None:
    storage, device = _device()
    old = os.urandom(device.size())
    device.write(0, old)
    storage.reads.clear()
    storage.writes.clear()
    new = os.urandom(size)
    device.write(offset, new)
    assert storage.reads == [(OFFSET + s * 4096, 4096) for s in sectors_read]
    first, last = offset // 4096, (offset + size - 1) // 4096
    assert storage.writes == [(OFFSET + first * 4096, (last - first + 1) * 4096)]
    expected = old[:offset] + new + old[offset + size :]
    assert device.read(0, device.size()) == expected


def test_a_read_decrypts_only_the_sectors_it_covers() -> None:
    storage, device = _device(iv_tweak=9)
    plain = os.urandom(device.size())
    device.write(0, plain)
    storage.reads.clear()
    assert device.read(4095, 2) == plain[4095:4097]
    assert storage.reads == [(OFFSET, 2 * 4096)]
    whole = device.read(4096, 4096)
    assert isinstance(whole, bytearray) and whole == plain[4096:8192]
    at = OFFSET + 2 * 4096
    assert decrypt_one_sector(KEY, 16 + 9, bytes(storage.data[at : at + 4096])) == (
        plain[8192:12288])


def test_flush_reaches_the_storage() -> None:
    storage, device = _device()
    device.flush()
    assert storage.flushes == 1


def test_a_device_reads_through_any_storage(memory_storage: Any) -> None:
    storage = memory_storage(OFFSET + 4096)
    device = CryptDevice(storage, Segment(OFFSET, None), KEY, threads=2)
    device.write(10, b"plaintext")
    assert device.read(10, 9) == b"plaintext"
    assert b"plaintext" not in bytes(storage.data)
