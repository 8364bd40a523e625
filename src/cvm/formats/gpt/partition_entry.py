"""One GPT partition entry.

UEFI Specification 2.10, section 5.3.3, table 5-6 (128 bytes, little-endian): type GUID, unique
GUID, first and last LBA (inclusive), attributes (table 5-8: bit 0 required, bit 1 no block IO
protocol, bit 2 legacy BIOS bootable; bits 48-63 type-specific, e.g. the Discoverable
Partitions flags 60 read-only, 59 grow-file-system, 63 no-auto), and a 36-character UTF-16LE
name, NUL-padded. An all-zero type GUID marks an unused entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.formats.gpt.partition_types import UNUSED
from cvm.wire import Guid, Layout, raw, u64

ENTRY_SIZE = 0x80
NAME_SIZE = 72
UNUSED_BYTES = bytes(ENTRY_SIZE)

LAYOUT = Layout(
    "GPT partition entry",
    ENTRY_SIZE,
    [
        raw("partition_type_guid", 0x00, 16),
        raw("unique_partition_guid", 0x10, 16),
        u64("starting_lba", 0x20),
        u64("ending_lba", 0x28),
        u64("attributes", 0x30),
        raw("partition_name", 0x38, NAME_SIZE),
    ],
)


def is_used(partition_type_guid: Guid) -> bool:
    """An entry is used when its type GUID is not all zero (UEFI table 5-6)."""
    guid = partition_type_guid
    return guid is not UNUSED and guid != UNUSED  # most entries share UNUSED itself


def lba_count(starting_lba: int, ending_lba: int) -> int:
    """The blocks of an entry: its ending LBA is inclusive."""
    return ending_lba - starting_lba + 1


@dataclass(frozen=True)
class PartitionEntry:
    """A used or unused partition entry; ``ending_lba`` is inclusive."""

    partition_type_guid: Guid
    unique_partition_guid: Guid
    starting_lba: int
    ending_lba: int
    attributes: int = 0
    name: str = ""

    @property
    def used(self) -> bool:
        return is_used(self.partition_type_guid)

    @property
    def size_in_lba(self) -> int:
        return lba_count(self.starting_lba, self.ending_lba)

    @classmethod
    def unused(cls) -> PartitionEntry:
        """The unused entry (all zero); one shared instance, as the entry is immutable."""
        return UNUSED_ENTRY

    @classmethod
    def from_bytes(cls, data: bytes) -> PartitionEntry:
        if data == UNUSED_BYTES:  # most of a table: the unused entry, without parsing it
            return cls.unused()
        values = LAYOUT.unpack(data)
        name_bytes = bytes(values["partition_name"])
        try:
            text = name_bytes.decode("utf-16-le")
        except UnicodeDecodeError:
            raise FormatError("GPT partition entry: name is not UTF-16LE") from None
        name, _, padding = text.partition("\0")
        if padding.strip("\0"):
            raise FormatError("GPT partition entry: name has characters after its NUL")
        entry = cls(
            partition_type_guid=Guid.from_bytes(bytes(values["partition_type_guid"])),
            unique_partition_guid=Guid.from_bytes(bytes(values["unique_partition_guid"])),
            starting_lba=int(values["starting_lba"]),
            ending_lba=int(values["ending_lba"]),
            attributes=int(values["attributes"]),
            name=name,
        )
        if entry.used and entry.ending_lba < entry.starting_lba:
            raise FormatError("GPT partition entry: ending LBA before starting LBA")
        if not entry.used and any(data):
            raise FormatError("GPT partition entry: unused entry is not all zero")
        return entry

    def to_bytes(self) -> bytes:
        encoded = self.name.encode("utf-16-le")
        if len(encoded) > NAME_SIZE or "\0" in self.name:
            raise UsageError(f"GPT partition name {self.name!r} is longer than 36 UTF-16 units")
        return LAYOUT.pack(
            {
                "partition_type_guid": self.partition_type_guid.to_bytes(),
                "unique_partition_guid": self.unique_partition_guid.to_bytes(),
                "starting_lba": self.starting_lba,
                "ending_lba": self.ending_lba,
                "attributes": self.attributes,
                "partition_name": encoded.ljust(NAME_SIZE, b"\0"),
            }
        )


UNUSED_ENTRY = PartitionEntry(UNUSED, UNUSED, 0, 0)
