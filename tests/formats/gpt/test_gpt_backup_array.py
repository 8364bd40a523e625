"""The backup entry array (UEFI 2.10 section 5.3.2): checked on every parse; parsed entry by
entry only when its bytes differ from the primary's, and refused on its own when they do."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from cvm.formats.gpt import partition_types
from cvm.formats.gpt.header import LBA_SIZE, GptHeader
from cvm.formats.gpt.partition_entry import ENTRY_SIZE, PartitionEntry
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.wire import Guid

TOTAL = 4096


def _disk() -> tuple[PartitionTable, bytearray]:
    esp = PartitionEntry(partition_types.ESP, Guid(uuid.uuid4()), 2048, 2559, name="ESP")
    root = PartitionEntry(partition_types.ROOT_X86_64, Guid(uuid.uuid4()), 2560, 4000,
                          name="root")
    table = PartitionTable.create(TOTAL, [esp, root], Guid(uuid.uuid4()))
    image = bytearray(TOTAL * LBA_SIZE)
    for offset, block in table.blocks():
        image[offset : offset + len(block)] = block
    return table, image


def _reader(image: bytearray) -> Callable[[int, int], bytes]:
    return lambda offset, size: bytes(image[offset : offset + size])


@pytest.fixture
def parsed_entries(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    seen: list[bytes] = []
    original = PartitionEntry.from_bytes

    def counting(data: bytes) -> PartitionEntry:
        seen.append(bytes(data))
        return original(data)

    monkeypatch.setattr(PartitionEntry, "from_bytes", counting)
    yield seen


def _edit_backup_entry(image: bytearray, index: int, entry: bytes) -> None:
    """Write ``entry`` into the backup array and re-seal the backup header's array CRC."""
    backup = GptHeader.from_bytes(bytes(image[-LBA_SIZE:]))
    start = backup.partition_entry_lba * LBA_SIZE
    image[start + index * ENTRY_SIZE : start + (index + 1) * ENTRY_SIZE] = entry
    array = bytes(image[start : start + backup.entry_array_size()])
    sealed = replace(backup, partition_entry_array_crc32=zlib.crc32(array))
    image[-LBA_SIZE:] = sealed.to_bytes()


def test_arrays_in_step_are_parsed_once(parsed_entries: list[bytes]) -> None:
    table, image = _disk()
    parsed = PartitionTable.parse(_reader(image), len(image))
    assert parsed.warnings == () and parsed.entries == table.entries
    assert len(parsed_entries) == 128


def test_a_backup_array_that_differs_is_parsed_and_checked(parsed_entries: list[bytes]
                                                           ) -> None:
    table, image = _disk()
    moved = PartitionEntry(partition_types.LINUX_DATA, Guid(uuid.uuid4()), 4001, 4002)
    _edit_backup_entry(image, 5, moved.to_bytes())
    parsed = PartitionTable.parse(_reader(image), len(image))
    assert parsed.warnings == () and parsed.entries == table.entries  # the primary's
    assert len(parsed_entries) == 256
    _edit_backup_entry(image, 5, b"\0" * 0x20 + b"\1" + b"\0" * (ENTRY_SIZE - 0x21))
    parsed = PartitionTable.parse(_reader(image), len(image))
    assert parsed.warnings == ("backup GPT invalid (GPT partition entry: unused entry is not "
                               "all zero)",)


def test_the_unused_entry_is_one_immutable_instance() -> None:
    assert PartitionEntry.unused() is PartitionEntry.unused()
    assert PartitionEntry.from_bytes(bytes(ENTRY_SIZE)) is PartitionEntry.unused()
    assert not PartitionEntry.unused().used
    with pytest.raises(AttributeError):
        PartitionEntry.unused().name = "x"  # type: ignore[misc]


def test_a_zero_type_guid_is_unused_whichever_object_holds_it() -> None:
    zero = Guid(uuid.UUID(int=0))
    assert zero is not partition_types.UNUSED
    assert not PartitionEntry(zero, Guid(uuid.uuid4()), 0, 0).used
    assert not PartitionEntry(partition_types.UNUSED, zero, 0, 0).used
    assert PartitionEntry(partition_types.ESP, zero, 0, 0).used
    assert PartitionEntry(Guid(uuid.UUID(int=1)), zero, 0, 0).used
