"""A whole GPT: protective MBR, primary and backup headers and entry arrays.

UEFI Specification 2.10, section 5.3 (figure 5-1 layout; 5.3.2 "GPT header validation"): the
primary header at LBA 1 with its entry array from LBA 2, the backup entry array in the 32
blocks before the last LBA and the backup header in the last LBA; 128 entries of 128 bytes.
If the primary header or its entries fail their CRC32 the backup is used (and the reverse);
:attr:`PartitionTable.warnings` says so.

Public API: :meth:`PartitionTable.create` (used partitions, disk size, GUID),
:meth:`PartitionTable.blocks` (``(byte offset, bytes)`` pairs to write),
:meth:`PartitionTable.parse` (``read(offset, size)`` callable and the disk size),
:func:`align_up` for 4 KiB-aligned layouts.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from cvm.errors import CvmError, FormatError, UsageError
from cvm.formats.gpt.header import ENTRY_SIZE, LBA_SIZE, GptHeader
from cvm.formats.gpt.partition_entry import PartitionEntry
from cvm.formats.gpt.protective_mbr import ProtectiveMbr
from cvm.wire import Guid

ENTRY_COUNT = 128
ENTRY_ARRAY_LBAS = ENTRY_COUNT * ENTRY_SIZE // LBA_SIZE
FIRST_USABLE_LBA = 2 + ENTRY_ARRAY_LBAS
MIN_DISK_LBAS = 2 * (1 + ENTRY_ARRAY_LBAS) + 2


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def last_usable_lba(total_lbas: int) -> int:
    """The last LBA a partition may use: before the backup entry array and header."""
    return total_lbas - 2 - ENTRY_ARRAY_LBAS


def check_entries(entries: tuple[PartitionEntry, ...], total_lbas: int) -> None:
    """Every used entry inside the usable LBAs of a ``total_lbas`` disk, none overlapping
    (section 5.3.3); a :class:`FormatError` naming the partitions otherwise."""
    first, last = FIRST_USABLE_LBA, last_usable_lba(total_lbas)
    spans = sorted((e.starting_lba, e.ending_lba, n + 1) for n, e in enumerate(entries)
                   if e.used)
    for start, end, number in spans:
        if start < first or end > last:
            raise FormatError(
                f"GPT: partition {number} ({start}..{end}) lies outside the usable LBAs "
                f"{first}..{last}"
            )
    for (_, end, number), (start, _, other) in itertools.pairwise(spans):
        if start <= end:
            raise FormatError(f"GPT: partitions {number} and {other} overlap")


def _entry_array(entries: tuple[PartitionEntry, ...]) -> bytes:
    return b"".join(e.to_bytes() for e in entries)


@dataclass(frozen=True)
class PartitionTable:
    """The used view of a GPT: disk GUID, size, all 128 entries, and parse warnings."""

    disk_guid: Guid
    total_lbas: int
    entries: tuple[PartitionEntry, ...]
    mbr: ProtectiveMbr
    warnings: tuple[str, ...] = ()

    @property
    def last_lba(self) -> int:
        return self.total_lbas - 1

    @property
    def first_usable_lba(self) -> int:
        return FIRST_USABLE_LBA

    @property
    def last_usable_lba(self) -> int:
        return last_usable_lba(self.total_lbas)

    def used(self) -> list[tuple[int, PartitionEntry]]:
        """(1-based partition number, entry) for every used entry."""
        return [(i + 1, e) for i, e in enumerate(self.entries) if e.used]

    @classmethod
    def create(cls, total_lbas: int, partitions: list[PartitionEntry], disk_guid: Guid
               ) -> PartitionTable:
        if total_lbas < MIN_DISK_LBAS:
            raise UsageError(f"a GPT disk needs at least {MIN_DISK_LBAS} sectors")
        if len(partitions) > ENTRY_COUNT:
            raise UsageError(f"at most {ENTRY_COUNT} partitions")
        padding = [PartitionEntry.unused()] * (ENTRY_COUNT - len(partitions))
        table = cls(disk_guid, total_lbas, (*partitions, *padding),
                    ProtectiveMbr.for_disk(total_lbas))
        table.check_entries()
        return table

    def check_entries(self) -> None:
        """Every used entry inside the usable range, none overlapping (section 5.3.3)."""
        check_entries(self.entries, self.total_lbas)

    def headers(self) -> tuple[GptHeader, GptHeader]:
        crc = zlib.crc32(_entry_array(self.entries))
        primary = GptHeader(
            my_lba=1, alternate_lba=self.last_lba, first_usable_lba=self.first_usable_lba,
            last_usable_lba=self.last_usable_lba, disk_guid=self.disk_guid,
            partition_entry_lba=2, number_of_partition_entries=ENTRY_COUNT,
            partition_entry_array_crc32=crc,
        )
        return primary, primary.backup(self.last_lba - ENTRY_ARRAY_LBAS)

    def blocks(self) -> list[tuple[int, bytes]]:
        """What to write, as (byte offset, bytes): MBR, primary, backup entries, backup header."""
        primary, backup = self.headers()
        array = _entry_array(self.entries)
        return [
            (0, self.mbr.to_bytes()),
            (LBA_SIZE, primary.to_bytes()),
            (2 * LBA_SIZE, array),
            (backup.partition_entry_lba * LBA_SIZE, array),
            (backup.my_lba * LBA_SIZE, backup.to_bytes()),
        ]

    @classmethod
    def _load(cls, read: Callable[[int, int], bytes], lba: int, total_lbas: int,
              parsed: dict[bytes, tuple[PartitionEntry, ...]]
              ) -> tuple[GptHeader, tuple[PartitionEntry, ...]]:
        """One header and its entry array; ``parsed`` holds the arrays already parsed (the
        backup's is byte for byte the primary's when the two are in step)."""
        header = GptHeader.from_bytes(read(lba * LBA_SIZE, LBA_SIZE))
        if header.my_lba != lba:
            raise FormatError(f"GPT header at LBA {lba} says it is at LBA {header.my_lba}")
        if header.alternate_lba != (total_lbas - 1 if lba == 1 else 1):
            raise FormatError(f"GPT header at LBA {lba}: alternate LBA {header.alternate_lba} "
                              f"is not the other end of a {total_lbas}-sector disk")
        array_end = header.partition_entry_lba * LBA_SIZE + header.entry_array_size()
        if header.last_usable_lba >= total_lbas or array_end > total_lbas * LBA_SIZE:
            raise FormatError(f"GPT header at LBA {lba} points past the end of the disk")
        array = read(header.partition_entry_lba * LBA_SIZE, header.entry_array_size())
        if zlib.crc32(array) != header.partition_entry_array_crc32:
            raise FormatError(f"GPT entries of the header at LBA {lba}: CRC32 mismatch")
        if array not in parsed:
            parsed[array] = tuple(PartitionEntry.from_bytes(array[i : i + ENTRY_SIZE])
                                  for i in range(0, len(array), ENTRY_SIZE))
        return header, parsed[array]

    @classmethod
    def parse(cls, read: Callable[[int, int], bytes], disk_size: int) -> PartitionTable:
        """Read and check a GPT through ``read(offset, size)`` from a disk of ``disk_size``."""
        if disk_size % LBA_SIZE or disk_size // LBA_SIZE < MIN_DISK_LBAS:
            raise FormatError(f"GPT: a disk of {disk_size} bytes cannot hold a GPT")
        total = disk_size // LBA_SIZE
        mbr = ProtectiveMbr.from_bytes(read(0, LBA_SIZE))
        warnings: list[str] = []
        parsed: dict[bytes, tuple[PartitionEntry, ...]] = {}
        try:
            header, entries = cls._load(read, 1, total, parsed)
        except CvmError as primary_error:
            try:
                header, entries = cls._load(read, total - 1, total, parsed)
            except CvmError as backup_error:
                raise FormatError(
                    f"GPT: primary ({primary_error}) and backup ({backup_error}) both invalid"
                ) from None
            warnings.append(f"primary GPT invalid ({primary_error}); using the backup")
        else:
            try:
                cls._load(read, total - 1, total, parsed)
            except CvmError as backup_error:
                warnings.append(f"backup GPT invalid ({backup_error})")
        if len(entries) < ENTRY_COUNT:
            raise FormatError(f"GPT: {len(entries)} entries, cvm expects {ENTRY_COUNT}")
        usable = (FIRST_USABLE_LBA, last_usable_lba(total))
        if (header.first_usable_lba, header.last_usable_lba) != usable:
            warnings.append(
                f"usable LBAs {header.first_usable_lba}..{header.last_usable_lba} differ from "
                f"the standard {usable[0]}..{usable[1]}"
            )
        check_entries(entries, total)
        return cls(header.disk_guid, total, entries[:ENTRY_COUNT], mbr, tuple(warnings))
