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
from cvm.formats.gpt.header import HEADER_LAYOUT, HEADER_SIZE, SIGNATURE
from cvm.formats.gpt.partition_entry import LAYOUT as ENTRY_LAYOUT
from cvm.wire import Guid, Reader, Writer


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
        return int(HEADER_LAYOUT.unpack(self.header)["size_of_partition_entry"])

    @classmethod
    def parse(cls, data: bytes) -> UefiGptData:
        reader = Reader(data, "UEFI_GPT_DATA")
        fixed = reader.take(HEADER_SIZE, "UEFIPartitionHeader")
        fields = HEADER_LAYOUT.unpack(fixed)
        if fields["signature"] != SIGNATURE:
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
        return Guid.from_bytes(_raw(HEADER_LAYOUT.unpack(self.header), "disk_guid"))

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
