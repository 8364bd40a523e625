"""A 40 MiB raw disk with a GPT naming one EFI system partition (LBA 2048, 34 MiB) and a FAT
ESP in it holding a folder's files (mtools): the disk the CLI tests hand to `cvm pcr predict`,
`cvm gpt show` and their kin."""

from __future__ import annotations

from pathlib import Path

from cvm.disk.esp import write_esp
from cvm.formats.gpt.header import LBA_SIZE
from cvm.formats.gpt.partition_entry import PartitionEntry
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.formats.gpt.partition_types import ESP
from cvm.wire import Guid

DISK_SIZE = 40 << 20
ESP_FIRST_LBA = 2048
ESP_SIZE = 34 << 20


def write_gpt_disk(disk: Path) -> None:
    """The disk with its GPT only (the partition left empty)."""
    last = ESP_FIRST_LBA + ESP_SIZE // LBA_SIZE - 1
    with disk.open("wb") as handle:
        handle.truncate(DISK_SIZE)
    table = PartitionTable.create(DISK_SIZE // LBA_SIZE, [
        PartitionEntry(ESP, Guid.parse("1c2b3a49-5867-4e8d-9a0b-c1d2e3f40516"), ESP_FIRST_LBA,
                       last)], Guid.parse("7e5a1b3c-2d4f-4a6b-8c9d-0e1f2a3b4c5d"))
    with disk.open("r+b") as handle:
        for offset, data in table.blocks():
            handle.seek(offset)
            handle.write(data)


def write_esp_files(disk: Path, tree: Path) -> None:
    """The ESP of a disk :func:`write_gpt_disk` made, formatted and filled with ``tree``."""
    write_esp(disk, ESP_FIRST_LBA * LBA_SIZE, ESP_SIZE, tree)
