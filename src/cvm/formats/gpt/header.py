"""The GPT header (primary in LBA 1, backup in the last LBA).

UEFI Specification 2.10, section 5.3.2, table 5-5. Little-endian; 92 bytes used, the rest of
the block reserved (zero). ``header_crc32`` is CRC32 over the ``header_size`` bytes with the
field itself zeroed; ``partition_entry_array_crc32`` covers ``number_of_partition_entries *
size_of_partition_entry`` bytes of the entry array (section 5.3.2, "GPT header validation").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

from cvm.errors import FormatError, IntegrityError
from cvm.wire import Guid, Layout, raw, reserved, u32, u64

LBA_SIZE = 0x200
HEADER_SIZE = 0x5C
SIGNATURE = b"EFI PART"
REVISION = 0x00010000
ENTRY_SIZE = 0x80

HEADER_LAYOUT = Layout(
    "UEFI_PARTITION_TABLE_HEADER",
    HEADER_SIZE,
    [
        raw("signature", 0x00, 8),
        u32("revision", 0x08),
        u32("header_size", 0x0C),
        u32("header_crc32", 0x10),
        u32("reserved", 0x14),
        u64("my_lba", 0x18),
        u64("alternate_lba", 0x20),
        u64("first_usable_lba", 0x28),
        u64("last_usable_lba", 0x30),
        raw("disk_guid", 0x38, 16),
        u64("partition_entry_lba", 0x48),
        u32("number_of_partition_entries", 0x50),
        u32("size_of_partition_entry", 0x54),
        u32("partition_entry_array_crc32", 0x58),
    ],
)
"""The 92 defined bytes, as firmware also measures them verbatim (``UEFI_GPT_DATA``); the
Reserved field is read as a number so that a lenient reader can keep it, and
:meth:`GptHeader.from_bytes` requires it to be zero."""

LAYOUT = Layout(
    "GPT header",
    LBA_SIZE,
    [*HEADER_LAYOUT.fields, reserved(HEADER_SIZE, LBA_SIZE - HEADER_SIZE)],
)


@dataclass(frozen=True)
class GptHeader:
    """One GPT header; :meth:`from_bytes` checks signature, sizes and the header CRC32."""

    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: Guid
    partition_entry_lba: int
    number_of_partition_entries: int
    partition_entry_array_crc32: int
    size_of_partition_entry: int = ENTRY_SIZE

    @classmethod
    def from_bytes(cls, data: bytes) -> GptHeader:
        values = LAYOUT.unpack(data)
        if values["signature"] != SIGNATURE:
            raise FormatError("GPT header: no 'EFI PART' signature")
        if values["reserved"] != 0:
            raise FormatError("GPT header: reserved bytes at 0x14..0x17 are not zero")
        if values["revision"] != REVISION or values["header_size"] != HEADER_SIZE:
            raise FormatError(
                f"GPT header: revision {int(values['revision']):#x} / "
                f"size {int(values['header_size'])} "
                "(cvm reads revision 1.0, 92-byte headers)"
            )
        if values["size_of_partition_entry"] != ENTRY_SIZE:
            raise FormatError("GPT header: partition entries must be 128 bytes")
        header = cls(
            my_lba=int(values["my_lba"]),
            alternate_lba=int(values["alternate_lba"]),
            first_usable_lba=int(values["first_usable_lba"]),
            last_usable_lba=int(values["last_usable_lba"]),
            disk_guid=Guid.from_bytes(bytes(values["disk_guid"])),
            partition_entry_lba=int(values["partition_entry_lba"]),
            number_of_partition_entries=int(values["number_of_partition_entries"]),
            partition_entry_array_crc32=int(values["partition_entry_array_crc32"]),
        )
        if header.crc32() != values["header_crc32"]:
            raise IntegrityError(f"GPT header at LBA {header.my_lba}: header CRC32 mismatch")
        if not 0 < header.number_of_partition_entries <= 1024:
            raise FormatError("GPT header: number of partition entries out of range")
        if header.first_usable_lba > header.last_usable_lba + 1:
            raise FormatError("GPT header: first usable LBA lies after the last usable LBA")
        return header

    def _pack(self, crc: int) -> bytes:
        return LAYOUT.pack(
            {
                "signature": SIGNATURE,
                "revision": REVISION,
                "header_size": HEADER_SIZE,
                "header_crc32": crc,
                "reserved": 0,
                "my_lba": self.my_lba,
                "alternate_lba": self.alternate_lba,
                "first_usable_lba": self.first_usable_lba,
                "last_usable_lba": self.last_usable_lba,
                "disk_guid": self.disk_guid.to_bytes(),
                "partition_entry_lba": self.partition_entry_lba,
                "number_of_partition_entries": self.number_of_partition_entries,
                "size_of_partition_entry": self.size_of_partition_entry,
                "partition_entry_array_crc32": self.partition_entry_array_crc32,
            }
        )

    def crc32(self) -> int:
        """CRC32 of the 92 header bytes with ``header_crc32`` zeroed."""
        return zlib.crc32(self._pack(0)[:HEADER_SIZE])

    def to_bytes(self) -> bytes:
        return self._pack(self.crc32())

    def entry_array_size(self) -> int:
        return self.number_of_partition_entries * self.size_of_partition_entry

    def backup(self, entry_lba: int) -> GptHeader:
        """The matching backup header (section 5.3.2: My/Alternate LBA swapped)."""
        return replace(self, my_lba=self.alternate_lba, alternate_lba=self.my_lba,
                       partition_entry_lba=entry_lba)
