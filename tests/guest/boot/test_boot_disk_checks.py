"""The boot disk as the firmware and the initramfs find it: the ESP and the root by their type
GUIDs, each partition's bytes exactly, and a clear refusal when either is missing."""

from __future__ import annotations

import pytest
from tests.disk.conftest import MemoryStorage

from cvm.errors import StateError
from cvm.formats.gpt import partition_types
from cvm.formats.gpt.partition_entry import PartitionEntry
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.guest.boot.boot_disk import GPT_BYTES, LBA_SIZE, BootDisk
from cvm.wire.guid import Guid

LBAS = 4096
DISK = Guid.parse("11111111-2222-3333-4444-555555555555")


def _entry(kind: Guid, first: int, last: int, n: int) -> PartitionEntry:
    return PartitionEntry(kind, Guid.parse(f"{n:08x}-0000-0000-0000-000000000000"), first, last)


def _disk(*entries: PartitionEntry) -> MemoryStorage:
    storage = MemoryStorage(LBAS * LBA_SIZE)
    for offset, data in PartitionTable.create(LBAS, list(entries), DISK).blocks():
        storage.write(offset, data)
    return storage


def test_the_esp_and_the_root_are_found_by_type_and_read_exactly() -> None:
    storage = _disk(_entry(partition_types.LINUX_DATA, 40, 99, 1),
                    _entry(partition_types.ESP, 100, 199, 2),
                    _entry(partition_types.ROOT_X86_64, 200, 1023, 3))
    storage.write(200 * LBA_SIZE, b"root's first byte")
    storage.write(1024 * LBA_SIZE - 4, b"last")
    disk = BootDisk.open(storage)
    assert (disk.esp_number, disk.esp.starting_lba, disk.root.starting_lba) == (2, 100, 200)
    assert disk.table.disk_guid == DISK
    root = disk.root_partition()
    assert root.size() == (1024 - 200) * LBA_SIZE
    assert root.read(0, 17) == b"root's first byte" and root.read(root.size() - 4, 4) == b"last"
    gpt = disk.gpt()  # as the firmware measures it: booting from the ESP, entry 2
    assert gpt.partition_number == 2
    assert gpt.entry == storage.read(2 * LBA_SIZE + 128, 128)
    assert GPT_BYTES == 34 * LBA_SIZE


@pytest.mark.parametrize(("kinds", "missing"), [
    ((partition_types.ROOT_X86_64,), "no EFI System Partition"),
    ((partition_types.ESP,), "no x86-64 root partition"),
    ((partition_types.ESP, partition_types.LINUX_DATA), "no x86-64 root partition"),
])
def test_a_disk_without_the_esp_or_the_root_is_refused(kinds: tuple[Guid, ...],
                                                       missing: str) -> None:
    storage = _disk(*(_entry(kind, 100 + 100 * n, 199 + 100 * n, n)
                      for n, kind in enumerate(kinds)))
    with pytest.raises(StateError) as refused:
        BootDisk.open(storage)
    assert str(refused.value) == f"boot disk: {missing} in the GPT"
