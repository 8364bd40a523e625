"""UEFI_GPT_DATA: the event data of EV_EFI_GPT_EVENT (PCR 5).

PFP 1.05 r23, section 10.4 (structure UEFI_GPT_DATA): ``UEFI_PARTITION_TABLE_HEADER
UEFIPartitionHeader | UINTN NumberOfPartitions | UEFI_PARTITION_ENTRY Partitions[]``; the
header is the 92-byte GPT header of UEFI 2.10 section 5.3.2 Table 5.5 (edk2 copies
``sizeof (EFI_PARTITION_TABLE_HEADER)`` whatever HeaderSize says), each entry
SizeOfPartitionEntry bytes (Table 5.6). Firmware measures only the entries whose
PartitionTypeGUID is not zero, in table order (edk2 Tcg2Dxe ``Tcg2MeasureGptTable``). UINTN is
8 bytes on 64-bit UEFI (``uintnSize`` 2), the only case cvm writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cvm.errors import FormatError, InternalError
from cvm.wire import Guid, Layout, Reader, Writer, raw, u32, u64

GPT_HEADER_SIZE = 92
GPT_SIGNATURE = b"EFI PART"

GPT_HEADER_LAYOUT = Layout(
    "UEFI_PARTITION_TABLE_HEADER",
    GPT_HEADER_SIZE,
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

ENTRY_LAYOUT = Layout(
    "UEFI_PARTITION_ENTRY",
    0x80,
    [
        raw("partition_type_guid", 0x00, 16),
        raw("unique_partition_guid", 0x10, 16),
        u64("starting_lba", 0x20),
        u64("ending_lba", 0x28),
        u64("attributes", 0x30),
        raw("partition_name", 0x38, 72),
    ],
)


def _raw(fields: Mapping[str, int | bytes], name: str) -> bytes:
    value = fields[name]
    if not isinstance(value, bytes):
        raise InternalError(f"GPT field {name} is not a byte field")
    return value


@dataclass(frozen=True)
class UefiGptData:
    """The GPT header (verbatim, 92 bytes) and the used partition entries."""

    header: bytes
    partitions: tuple[bytes, ...]

    @property
    def entry_size(self) -> int:
        return int.from_bytes(self.header[0x54:0x58], "little")

    @classmethod
    def parse(cls, data: bytes) -> UefiGptData:
        reader = Reader(data, "UEFI_GPT_DATA")
        fixed = reader.take(GPT_HEADER_SIZE, "UEFIPartitionHeader")
        fields = GPT_HEADER_LAYOUT.unpack(fixed)
        if fields["signature"] != GPT_SIGNATURE:
            raise FormatError("UEFI_GPT_DATA: header signature is not 'EFI PART'")
        header = fixed
        entry_size = int(fields["size_of_partition_entry"])
        if entry_size < ENTRY_LAYOUT.size:
            raise FormatError(f"UEFI_GPT_DATA: SizeOfPartitionEntry {entry_size} is below 128")
        count = reader.u64("NumberOfPartitions")
        if count * entry_size != reader.remaining:
            raise reader.fail(f"{count} partitions of {entry_size} bytes do not fill the event")
        partitions = tuple(reader.take(entry_size, "Partitions") for _ in range(count))
        return cls(header, partitions)

    def to_bytes(self) -> bytes:
        writer = Writer().put(self.header).u64(len(self.partitions))
        for entry in self.partitions:
            writer.put(entry)
        return writer.to_bytes()

    def disk_guid(self) -> Guid:
        return Guid.from_bytes(self.header[0x38:0x48])

    def describe(self) -> str:
        return f"GPT disk {self.disk_guid()}, {len(self.partitions)} partition(s)"

    def to_json(self) -> dict[str, object]:
        entries = []
        for entry in self.partitions:
            fields = ENTRY_LAYOUT.unpack(entry[: ENTRY_LAYOUT.size])
            name = _raw(fields, "partition_name")
            entries.append({
                "type_guid": str(Guid.from_bytes(_raw(fields, "partition_type_guid"))),
                "unique_guid": str(Guid.from_bytes(_raw(fields, "unique_partition_guid"))),
                "starting_lba": fields["starting_lba"],
                "ending_lba": fields["ending_lba"],
                "attributes": fields["attributes"],
                "name": name.decode("utf-16-le", "replace").rstrip("\0"),
            })
        return {"kind": "UEFI_GPT_DATA", "disk_guid": str(self.disk_guid()),
                "header": self.header.hex(), "partitions": entries}
