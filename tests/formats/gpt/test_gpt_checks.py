"""The GPT checks one by one, each at its edge: the protective MBR's record, the header's
fields and CRC32, the entry's name and span, the table's bounds and overlaps, which header is
trusted and the message that says why — the guest reads all of it from a disk the host wrote."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable

import pytest

from cvm.errors import FormatError, IntegrityError, UsageError
from cvm.formats.gpt import partition_types
from cvm.formats.gpt.header import LBA_SIZE, GptHeader
from cvm.formats.gpt.partition_entry import PartitionEntry, is_used, lba_count
from cvm.formats.gpt.partition_table import (
    ENTRY_ARRAY_LBAS,
    ENTRY_COUNT,
    FIRST_USABLE_LBA,
    MIN_DISK_LBAS,
    PartitionTable,
    align_up,
    last_usable_lba,
)
from cvm.formats.gpt.protective_mbr import ProtectiveMbr
from cvm.wire import Guid

LBAS = 2048
DISK = Guid.parse("01234567-89ab-cdef-0123-456789abcdef")
LAST_USABLE = LBAS - 2 - ENTRY_ARRAY_LBAS


def _entry(first: int, last: int, n: int = 1, kind: Guid = partition_types.ESP
           ) -> PartitionEntry:
    return PartitionEntry(kind, Guid.parse(f"{n:08x}-0000-0000-0000-000000000001"), first, last)


def _disk(*entries: PartitionEntry, lbas: int = LBAS) -> bytearray:
    data = bytearray(lbas * LBA_SIZE)
    for offset, block in PartitionTable.create(lbas, list(entries), DISK).blocks():
        data[offset : offset + len(block)] = block
    return data


def _reader(data: bytearray) -> Callable[[int, int], bytes]:
    def read(offset: int, size: int) -> bytes:
        if offset + size > len(data):
            raise FormatError("read past the end of the test disk")
        return bytes(data[offset : offset + size])
    return read


def _parse(data: bytearray) -> PartitionTable:
    return PartitionTable.parse(_reader(data), len(data))


def _header(data: bytearray, lba: int) -> GptHeader:
    return GptHeader.from_bytes(bytes(data[lba * LBA_SIZE : (lba + 1) * LBA_SIZE]))


def _put_header(data: bytearray, lba: int, header: GptHeader) -> None:
    data[lba * LBA_SIZE : (lba + 1) * LBA_SIZE] = header.to_bytes()


def _refusal(call: Callable[[], object], kind: type[Exception] = FormatError) -> str:
    with pytest.raises(kind) as refused:
        call()
    assert type(refused.value) is kind
    return str(refused.value)


# --- the protective MBR ---------------------------------------------------------------------

def _mbr(**changes: int) -> bytes:
    data = bytearray(ProtectiveMbr.for_disk(LBAS).to_bytes())
    offsets = {"unknown": (0x1BC, 2), "boot_indicator": (0x1BE, 1), "os_type": (0x1C2, 1),
               "starting_lba": (0x1C6, 4), "signature": (0x1FE, 2)}
    for name, value in changes.items():
        at, size = offsets[name]
        data[at : at + size] = value.to_bytes(size, "little")
    return bytes(data)


def test_the_mbr_refusals_name_what_is_wrong() -> None:
    assert _refusal(lambda: ProtectiveMbr.from_bytes(_mbr(signature=0x55AA))) == (
        "protective MBR: no 0xAA55 signature at offset 0x1FE")
    assert _refusal(lambda: ProtectiveMbr.from_bytes(_mbr(os_type=0x07))) == (
        "protective MBR: first record has type 0x07, not 0xEE (a hybrid or legacy MBR)")
    record = "protective MBR: record must be non-bootable and start at LBA 1"
    for change in ({"boot_indicator": 0x80}, {"starting_lba": 2}, {"starting_lba": 0},
                   {"unknown": 1}):
        assert _refusal(lambda change=change: ProtectiveMbr.from_bytes(_mbr(**change))) == record


def test_the_mbr_keeps_its_boot_code_signature_and_chs_as_found() -> None:
    mbr = ProtectiveMbr(size_in_lba=0x1234, starting_chs=b"\x01\x02\x03",
                        ending_chs=b"\xfe\xfd\xfc", boot_code=bytes(range(220)) * 2,
                        disk_signature=0xCAFEF00D)
    data = mbr.to_bytes()
    parsed = ProtectiveMbr.from_bytes(data)
    assert parsed == mbr
    assert parsed.to_bytes() == data
    assert data[0x1B8:0x1BC] == (0xCAFEF00D).to_bytes(4, "little")
    assert data[0x1CA:0x1CE] == (0x1234).to_bytes(4, "little")


# --- the header -----------------------------------------------------------------------------

def _gpt_header(**changes: int) -> GptHeader:
    header = GptHeader(1, LBAS - 1, FIRST_USABLE_LBA, LAST_USABLE, DISK, 2, 128, 0xABCDEF)
    return dataclasses.replace(header, **changes)


def _raw_header(header: GptHeader, **fields: tuple[int, int, int]) -> bytes:
    """``header``'s bytes with (offset, size, value) fields changed and the CRC32 redone."""
    data = bytearray(header.to_bytes())
    for at, size, value in fields.values():
        data[at : at + size] = value.to_bytes(size, "little")
    data[0x10:0x14] = bytes(4)
    data[0x10:0x14] = zlib.crc32(bytes(data[:0x5C])).to_bytes(4, "little")
    return bytes(data)


def test_the_header_crc32_is_over_the_92_bytes_with_its_own_field_zeroed() -> None:
    data = bytearray(_gpt_header().to_bytes())
    stored = int.from_bytes(data[0x10:0x14], "little")
    data[0x10:0x14] = bytes(4)
    assert stored == zlib.crc32(bytes(data[:0x5C])) == _gpt_header().crc32()


def test_the_header_refusals_name_what_is_wrong() -> None:
    header = _gpt_header()
    good = header.to_bytes()
    assert GptHeader.from_bytes(good) == header
    assert _refusal(lambda: GptHeader.from_bytes(b"EFI PARU" + good[8:])) == (
        "GPT header: no 'EFI PART' signature")
    assert _refusal(lambda: GptHeader.from_bytes(_raw_header(header, r=(0x14, 4, 1)))) == (
        "GPT header: reserved bytes at 0x14..0x17 are not zero")
    assert _refusal(lambda: GptHeader.from_bytes(_raw_header(header, r=(0x08, 4, 0x10001)))) == (
        "GPT header: revision 0x10001 / size 92 (cvm reads revision 1.0, 92-byte headers)")
    assert _refusal(lambda: GptHeader.from_bytes(_raw_header(header, s=(0x0C, 4, 96)))) == (
        "GPT header: revision 0x10000 / size 96 (cvm reads revision 1.0, 92-byte headers)")
    assert _refusal(lambda: GptHeader.from_bytes(_raw_header(header, s=(0x54, 4, 256)))) == (
        "GPT header: partition entries must be 128 bytes")
    damaged = bytearray(good)
    damaged[0x20] ^= 1
    assert _refusal(lambda: GptHeader.from_bytes(bytes(damaged)), IntegrityError) == (
        "GPT header at LBA 1: header CRC32 mismatch")


@pytest.mark.parametrize(("count", "accepted"), [(0, False), (1, True), (1024, True),
                                                 (1025, False)])
def test_the_header_holds_1_to_1024_entries(count: int, accepted: bool) -> None:
    data = _gpt_header(number_of_partition_entries=count).to_bytes()
    if accepted:
        assert GptHeader.from_bytes(data).number_of_partition_entries == count
    else:
        assert _refusal(lambda: GptHeader.from_bytes(data)) == (
            "GPT header: number of partition entries out of range")


@pytest.mark.parametrize(("first", "last", "accepted"), [
    (34, 33, True), (34, 34, True), (35, 33, False), (100, 10, False)])
def test_the_first_usable_lba_may_not_lie_after_the_last(first: int, last: int, accepted: bool
                                                         ) -> None:
    data = _gpt_header(first_usable_lba=first, last_usable_lba=last).to_bytes()
    if accepted:
        assert GptHeader.from_bytes(data).first_usable_lba == first
    else:
        assert _refusal(lambda: GptHeader.from_bytes(data)) == (
            "GPT header: first usable LBA lies after the last usable LBA")


def test_the_backup_header_swaps_my_and_alternate_lba() -> None:
    backup = _gpt_header().backup(LBAS - 33)
    assert (backup.my_lba, backup.alternate_lba, backup.partition_entry_lba) == (
        LBAS - 1, 1, LBAS - 33)


# --- the partition entry --------------------------------------------------------------------

def _raw_entry(name: bytes) -> bytes:
    data = bytearray(_entry(100, 200).to_bytes())
    data[0x38:0x80] = name.ljust(72, b"\0")
    return bytes(data)


def test_the_entry_name_is_utf16le_nul_padded() -> None:
    assert PartitionEntry.from_bytes(_raw_entry("ESP".encode("utf-16-le"))).name == "ESP"
    assert _refusal(lambda: PartitionEntry.from_bytes(_raw_entry(b"\x00\xd8A\x00"))) == (
        "GPT partition entry: name is not UTF-16LE")
    for tail in ("A\0X", "A\0\0\0X"):
        assert _refusal(lambda tail=tail: PartitionEntry.from_bytes(
            _raw_entry(tail.encode("utf-16-le")))) == (
            "GPT partition entry: name has characters after its NUL")


def test_an_entry_ends_at_or_after_its_start() -> None:
    assert PartitionEntry.from_bytes(_entry(100, 100).to_bytes()).size_in_lba == 1
    assert _refusal(lambda: PartitionEntry.from_bytes(_entry(100, 99).to_bytes())) == (
        "GPT partition entry: ending LBA before starting LBA")
    assert lba_count(100, 199) == 100


def test_an_entry_with_a_zero_type_is_unused_and_must_be_all_zero() -> None:
    zero = Guid.from_bytes(bytes(16))  # equal to UNUSED, not the same object
    assert zero is not partition_types.UNUSED
    assert not is_used(zero) and not is_used(partition_types.UNUSED)
    assert is_used(partition_types.ESP)
    stray = PartitionEntry(zero, Guid.parse("00000000-0000-0000-0000-000000000001"), 0, 0)
    assert _refusal(lambda: PartitionEntry.from_bytes(stray.to_bytes())) == (
        "GPT partition entry: unused entry is not all zero")


def test_an_entry_name_is_at_most_36_units_without_nul() -> None:
    longest = dataclasses.replace(_entry(100, 200), name="N" * 36)
    assert PartitionEntry.from_bytes(longest.to_bytes()).name == "N" * 36
    for name in ("N" * 37, "A\0B"):
        entry = dataclasses.replace(_entry(100, 200), name=name)
        assert _refusal(entry.to_bytes, UsageError) == (
            f"GPT partition name {name!r} is longer than 36 UTF-16 units")


def test_type_names() -> None:
    assert partition_types.type_name(partition_types.ESP) == "EFI System (EF00)"
    assert partition_types.type_name(DISK) == "01234567-89ab-cdef-0123-456789abcdef"


# --- the table: create ----------------------------------------------------------------------

def test_align_up() -> None:
    assert [align_up(v, 8) for v in (0, 1, 7, 8, 9, 16)] == [0, 8, 8, 8, 16, 16]


def test_create_needs_a_big_enough_disk_and_at_most_128_partitions() -> None:
    assert PartitionTable.create(MIN_DISK_LBAS, [], DISK).total_lbas == MIN_DISK_LBAS
    assert _refusal(lambda: PartitionTable.create(MIN_DISK_LBAS - 1, [], DISK), UsageError) == (
        f"a GPT disk needs at least {MIN_DISK_LBAS} sectors")
    many = [_entry(40 + n, 40 + n, n) for n in range(ENTRY_COUNT)]
    assert len(PartitionTable.create(LBAS, many, DISK).used()) == ENTRY_COUNT
    assert _refusal(lambda: PartitionTable.create(LBAS, [*many, _entry(300, 300, 999)], DISK),
                    UsageError) == f"at most {ENTRY_COUNT} partitions"


def test_the_usable_lbas_are_34_to_the_block_before_the_backup_array() -> None:
    table = PartitionTable.create(LBAS, [_entry(34, LAST_USABLE)], DISK)
    assert (table.first_usable_lba, table.last_usable_lba, table.last_lba) == (
        34, LBAS - 34, LBAS - 1)
    assert last_usable_lba(LBAS) == LAST_USABLE == LBAS - 34
    for first, last in ((33, 100), (100, LAST_USABLE + 1)):
        assert _refusal(lambda first=first, last=last: PartitionTable.create(
            LBAS, [_entry(first, last)], DISK)) == (
            f"GPT: partition 1 ({first}..{last}) lies outside the usable LBAs 34..{LAST_USABLE}")


def test_partitions_may_touch_but_not_overlap() -> None:
    assert len(PartitionTable.create(LBAS, [_entry(100, 199, 1), _entry(200, 299, 2)],
                                     DISK).used()) == 2
    assert _refusal(lambda: PartitionTable.create(
        LBAS, [_entry(200, 299, 1), _entry(100, 200, 2)], DISK)) == (
        "GPT: partitions 2 and 1 overlap")


# --- the table: parse -----------------------------------------------------------------------

def test_a_whole_table_parses_without_warnings_and_keeps_its_mbr() -> None:
    data = _disk(_entry(100, 199))
    data[0x1B8:0x1BC] = b"\x12\x34\x56\x78"  # a disk signature, kept as found
    table = _parse(data)
    assert table.warnings == ()
    assert table.mbr == ProtectiveMbr.from_bytes(bytes(data[:512]))
    assert table.mbr.disk_signature == 0x78563412
    assert (table.disk_guid, table.total_lbas) == (DISK, LBAS)
    assert table.used() == [(1, _entry(100, 199))]
    assert _header(data, LBAS - 1).alternate_lba == 1


def test_a_disk_that_cannot_hold_a_gpt_is_refused() -> None:
    small = _disk(lbas=MIN_DISK_LBAS)
    assert _parse(small).total_lbas == MIN_DISK_LBAS
    for size in (MIN_DISK_LBAS * LBA_SIZE - LBA_SIZE, LBAS * LBA_SIZE + 1):
        assert _refusal(lambda size=size: PartitionTable.parse(
            _reader(_disk()), size)) == f"GPT: a disk of {size} bytes cannot hold a GPT"


def test_a_bad_mbr_is_refused_even_with_good_headers() -> None:
    data = _disk()
    data[0x1C2] = 0x83
    assert _refusal(lambda: _parse(data)) == (
        "protective MBR: first record has type 0x83, not 0xEE (a hybrid or legacy MBR)")


def _primary_warning(data: bytearray) -> str:
    table = _parse(data)
    assert len(table.warnings) == 1
    return table.warnings[0]


def test_each_header_check_sends_the_reader_to_the_backup() -> None:
    base = _disk(_entry(100, 199))
    primary = _header(base, 1)
    cases = [
        (dataclasses.replace(primary, my_lba=2), "GPT header at LBA 1 says it is at LBA 2"),
        (dataclasses.replace(primary, alternate_lba=1),
         f"GPT header at LBA 1: alternate LBA 1 is not the other end of a {LBAS}-sector disk"),
        (dataclasses.replace(primary, alternate_lba=LBAS - 2),
         f"GPT header at LBA 1: alternate LBA {LBAS - 2} is not the other end of a "
         f"{LBAS}-sector disk"),
        (dataclasses.replace(primary, last_usable_lba=LBAS),
         "GPT header at LBA 1 points past the end of the disk"),
        (dataclasses.replace(primary, partition_entry_lba=LBAS - 31),
         "GPT header at LBA 1 points past the end of the disk"),
        (dataclasses.replace(primary, partition_entry_array_crc32=primary
                             .partition_entry_array_crc32 ^ 1),
         "GPT entries of the header at LBA 1: CRC32 mismatch"),
    ]
    for header, reason in cases:
        data = bytearray(base)
        _put_header(data, 1, header)
        assert _primary_warning(data) == f"primary GPT invalid ({reason}); using the backup"
        assert _parse(data).used() == [(1, _entry(100, 199))]


def test_the_backup_header_must_point_back_to_lba_1() -> None:
    data = _disk()
    backup = _header(data, LBAS - 1)
    _put_header(data, LBAS - 1, dataclasses.replace(backup, alternate_lba=LBAS - 1))
    assert _primary_warning(data) == (
        f"backup GPT invalid (GPT header at LBA {LBAS - 1}: alternate LBA {LBAS - 1} is not "
        f"the other end of a {LBAS}-sector disk)")


def test_an_entry_array_may_end_at_the_last_byte_of_the_disk() -> None:
    data = _disk(_entry(100, 199))
    primary = _header(data, 1)
    array = bytes(data[2 * LBA_SIZE : (2 + ENTRY_ARRAY_LBAS) * LBA_SIZE])
    data[(LBAS - 32) * LBA_SIZE :] = array  # over the backup header: its entries are unused
    _put_header(data, 1, dataclasses.replace(primary, partition_entry_lba=LBAS - 32))
    table = _parse(data)
    assert table.used() == [(1, _entry(100, 199))]
    assert table.warnings[0].startswith("backup GPT invalid (GPT header: no 'EFI PART'")


def test_both_headers_bad_is_refused_naming_both() -> None:
    data = _disk()
    data[LBA_SIZE] ^= 1
    data[(LBAS - 1) * LBA_SIZE + 0x20] ^= 1
    assert _refusal(lambda: _parse(data)) == (
        "GPT: primary (GPT header: no 'EFI PART' signature) and backup (GPT header at LBA "
        f"{LBAS - 1}: header CRC32 mismatch) both invalid")


def test_a_table_of_fewer_than_128_entries_is_refused() -> None:
    data = _disk()
    for lba in (1, LBAS - 1):
        header = _header(data, lba)
        array_lba = header.partition_entry_lba
        array = bytes(64 * 128)
        _put_header(data, lba, dataclasses.replace(
            header, number_of_partition_entries=64,
            partition_entry_array_crc32=zlib.crc32(array)))
        data[array_lba * LBA_SIZE : array_lba * LBA_SIZE + len(array)] = array
    assert _refusal(lambda: _parse(data)) == "GPT: 64 entries, cvm expects 128"


def test_a_table_of_more_than_128_entries_keeps_128() -> None:
    data = _disk(_entry(100, 199), lbas=LBAS)
    header = _header(data, 1)
    array = bytes(data[2 * LBA_SIZE : 34 * LBA_SIZE]) + bytes(128 * 128)
    _put_header(data, 1, dataclasses.replace(
        header, number_of_partition_entries=256, first_usable_lba=66,
        partition_entry_array_crc32=zlib.crc32(array)))
    data[2 * LBA_SIZE : 66 * LBA_SIZE] = array
    table = _parse(data)
    assert len(table.entries) == ENTRY_COUNT
    assert table.entries[0] == _entry(100, 199)
    assert table.warnings == (
        f"usable LBAs 66..{LAST_USABLE} differ from the standard 34..{LAST_USABLE}",)


def test_the_entries_of_a_parsed_table_are_checked() -> None:
    data = _disk(_entry(100, 199))
    header = _header(data, 1)
    array = bytearray(data[2 * LBA_SIZE : 34 * LBA_SIZE])
    array[0:128] = _entry(10, 199).to_bytes()  # inside the GPT itself
    for lba, array_lba in ((1, 2), (LBAS - 1, LBAS - 33)):
        header = _header(data, lba)
        _put_header(data, lba, dataclasses.replace(
            header, partition_entry_array_crc32=zlib.crc32(bytes(array))))
        data[array_lba * LBA_SIZE : (array_lba + 32) * LBA_SIZE] = array
    assert _refusal(lambda: _parse(data)) == (
        f"GPT: partition 1 (10..199) lies outside the usable LBAs 34..{LAST_USABLE}")
