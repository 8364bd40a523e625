"""The boot disk as the firmware and the initramfs find it: GPT, ESP files, root partition.

The disk is a block device the host provides (a virtio-blk disk backed by the host's image
file): the guest reads it at byte offsets, as :class:`cvm.disk.storage.Storage`. The firmware
reads the primary GPT (UEFI 2.10 section 5.3), finds the EFI System Partition by its type GUID
and reads its FAT file system — with the mtools FAT driver, on a private copy of the partition's
bytes — and the initramfs finds the root by the Discoverable Partitions type of an x86-64 root.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.disk.storage import Storage, StorageWindow
from cvm.errors import StateError
from cvm.formats.fat import FatVolume
from cvm.formats.gpt import partition_types
from cvm.formats.gpt.partition_entry import PartitionEntry
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import GptDisk

LBA_SIZE = 512
GPT_BYTES = 34 * LBA_SIZE  # protective MBR, header, 128 entries of 128 bytes


@dataclass(frozen=True)
class BootDisk:
    """The partitions of a boot disk."""

    storage: Storage
    table: PartitionTable
    esp_number: int
    esp: PartitionEntry
    root: PartitionEntry

    @classmethod
    def open(cls, storage: Storage) -> BootDisk:
        table = PartitionTable.parse(storage.read, storage.size())
        used = table.used()
        esp = next(((n, e) for n, e in used if e.partition_type_guid == partition_types.ESP),
                   None)
        root = next((e for _, e in used
                     if e.partition_type_guid == partition_types.ROOT_X86_64), None)
        if esp is None:
            raise StateError("boot disk: no EFI System Partition in the GPT")
        if root is None:
            raise StateError("boot disk: no x86-64 root partition in the GPT")
        return cls(storage, table, esp[0], esp[1], root)

    def _window(self, entry: PartitionEntry) -> StorageWindow:
        start = entry.starting_lba * LBA_SIZE
        return StorageWindow(self.storage, start, (entry.ending_lba + 1) * LBA_SIZE - start)

    def root_partition(self) -> StorageWindow:
        return self._window(self.root)

    def gpt(self) -> GptDisk:
        """The GPT as the firmware measures it (EV_EFI_GPT_EVENT), booting from the ESP."""
        return GptDisk.from_disk(self.storage.read(0, GPT_BYTES), self.esp_number)

    def esp_files(self) -> EspFiles:
        """Every file of the ESP's FAT file system (read through the firmware's FAT driver)."""
        window = self._window(self.esp)
        return EspFiles(FatVolume(window.read).files())
