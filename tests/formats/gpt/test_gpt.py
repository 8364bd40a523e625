"""GPT (UEFI 2.10 chapter 5): entries, headers, MBR and whole tables; backup recovery."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import CvmError, FormatError, IntegrityError
from cvm.formats.gpt import partition_types
from cvm.formats.gpt.header import LBA_SIZE, GptHeader
from cvm.formats.gpt.partition_entry import PartitionEntry
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.formats.gpt.protective_mbr import ProtectiveMbr
from cvm.wire import Guid

guids = st.uuids().map(Guid)
names = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xD7FF), max_size=36)


@settings(deadline=None)
@given(guids, guids, st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1),
       st.integers(0, 2**64 - 1), names)
def test_entry_round_trip(t: Guid, u: Guid, first: int, size: int, attrs: int, name: str
                          ) -> None:
    entry = PartitionEntry(t, u, first, first + size, attrs, name)
    if not entry.used:
        return
    data = entry.to_bytes()
    assert PartitionEntry.from_bytes(data) == entry
    assert PartitionEntry.from_bytes(data).to_bytes() == data


@settings(deadline=None)
@given(st.integers(1, 2**40), st.integers(1, 2**40), guids, st.integers(0, 2**32 - 1))
def test_header_round_trip(alt: int, last: int, disk: Guid, crc: int) -> None:
    header = GptHeader(1, alt, 34, 34 + last, disk, 2, 128, crc)
    data = header.to_bytes()
    assert GptHeader.from_bytes(data) == header
    assert GptHeader.from_bytes(data).to_bytes() == data


@settings(deadline=None)
@given(st.integers(2, 2**40))
def test_mbr_round_trip(total: int) -> None:
    mbr = ProtectiveMbr.for_disk(total)
    assert ProtectiveMbr.from_bytes(mbr.to_bytes()) == mbr
    assert mbr.size_in_lba == min(total - 1, 0xFFFFFFFF)


@settings(deadline=None)
@given(st.binary(min_size=512, max_size=512))
def test_random_blocks_raise_only_format_errors(data: bytes) -> None:
    for parse in (GptHeader.from_bytes, ProtectiveMbr.from_bytes):
        try:
            parsed = parse(data)
        except CvmError:
            continue
        assert parsed.to_bytes() == data


def test_header_crc_mismatch() -> None:
    data = bytearray(GptHeader(1, 99, 34, 60, Guid(uuid.uuid4()), 2, 128, 0).to_bytes())
    data[0x30] ^= 1
    with pytest.raises(IntegrityError, match="CRC32"):
        GptHeader.from_bytes(bytes(data))


def _disk(total: int = 4096) -> tuple[PartitionTable, bytearray]:
    esp = PartitionEntry(partition_types.ESP, Guid(uuid.uuid4()), 2048, 2559, name="ESP")
    root = PartitionEntry(partition_types.ROOT_X86_64, Guid(uuid.uuid4()), 2560, 4000,
                          name="root")
    table = PartitionTable.create(total, [esp, root], Guid(uuid.uuid4()))
    image = bytearray(total * LBA_SIZE)
    for offset, block in table.blocks():
        image[offset : offset + len(block)] = block
    return table, image


def _reader(image: bytearray):  # type: ignore[no-untyped-def]
    return lambda offset, size: bytes(image[offset : offset + size])


def test_table_round_trip() -> None:
    table, image = _disk()
    parsed = PartitionTable.parse(_reader(image), len(image))
    assert parsed.warnings == ()
    assert parsed.entries == table.entries
    assert [n for n, _ in parsed.used()] == [1, 2]
    assert parsed.last_usable_lba == 4096 - 34


@pytest.mark.parametrize("lba", [1, 2])
def test_primary_damage_falls_back_to_backup(lba: int) -> None:
    table, image = _disk()
    image[lba * LBA_SIZE + 0x20] ^= 0xFF
    parsed = PartitionTable.parse(_reader(image), len(image))
    assert parsed.entries == table.entries
    assert "using the backup" in parsed.warnings[0]


def test_backup_damage_is_reported() -> None:
    _, image = _disk()
    image[-LBA_SIZE + 0x20] ^= 0xFF
    parsed = PartitionTable.parse(_reader(image), len(image))
    assert "backup GPT invalid" in parsed.warnings[0]


def test_both_damaged() -> None:
    _, image = _disk()
    image[LBA_SIZE + 0x20] ^= 0xFF
    image[-LBA_SIZE + 0x20] ^= 0xFF
    with pytest.raises(FormatError, match="both invalid"):
        PartitionTable.parse(_reader(image), len(image))


def test_overlap_and_bounds_are_refused() -> None:
    a = PartitionEntry(partition_types.ESP, Guid(uuid.uuid4()), 2048, 3000)
    b = PartitionEntry(partition_types.LINUX_DATA, Guid(uuid.uuid4()), 3000, 3500)
    with pytest.raises(FormatError, match="overlap"):
        PartitionTable.create(4096, [a, b], Guid(uuid.uuid4()))
    c = PartitionEntry(partition_types.ESP, Guid(uuid.uuid4()), 10, 100)
    with pytest.raises(FormatError, match="outside"):
        PartitionTable.create(4096, [c], Guid(uuid.uuid4()))


def test_type_names() -> None:
    assert "EF00" in partition_types.type_name(partition_types.ESP)
    assert "8304" in partition_types.type_name(partition_types.ROOT_X86_64)


def test_an_unused_entry_is_all_zero_and_nothing_else_is_unused() -> None:
    assert PartitionEntry.from_bytes(bytes(128)) == PartitionEntry.unused()
    assert PartitionEntry.from_bytes(bytearray(128)) == PartitionEntry.unused()
    assert not PartitionEntry.from_bytes(bytes(128)).used
    for offset, why in ((0x10, "unused entry is not all zero"), (0x20, "unused entry is not"),
                        (0x37, "unused entry is not"), (0x7F, "characters after its NUL")):
        data = bytearray(128)  # a zero type GUID with anything else set
        data[offset] = 1
        with pytest.raises(FormatError, match=why):
            PartitionEntry.from_bytes(bytes(data))
    with pytest.raises(FormatError, match="expected 0x80 bytes"):
        PartitionEntry.from_bytes(bytes(127))
