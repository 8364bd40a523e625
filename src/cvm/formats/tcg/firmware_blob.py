"""Event data of EV_EFI_PLATFORM_FIRMWARE_BLOB(2) and EV_EFI_HANDOFF_TABLES(2).

PFP 1.05 r23, section 10.4 (structures UEFI_PLATFORM_FIRMWARE_BLOB: ``u64 BlobBase |
u64 BlobLength``; UEFI_PLATFORM_FIRMWARE_BLOB2: ``u8 BlobDescriptionSize | BlobDescription |
u64 BlobBase | u64 BlobLength``; UEFI_HANDOFF_TABLE_POINTERS: ``u64 NumberOfTables |
EFI_CONFIGURATION_TABLE TableEntry[]`` with ``{EFI_GUID VendorGuid; u64 VendorTable}``;
UEFI_HANDOFF_TABLE_POINTERS2: ``u8 TableDescriptionSize | TableDescription | u64
NumberOfTables | TableEntry[]``). Little-endian; UINTN/pointers are 8 bytes (64-bit UEFI).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.wire import Guid, Reader, Writer

CONFIGURATION_TABLE_SIZE = 24


def _text(description: bytes) -> str:
    return description.rstrip(b"\0").decode("ascii", "replace")


@dataclass(frozen=True)
class FirmwareBlob:
    """A firmware volume measured by base and length; ``description`` only in the v2 form."""

    base: int
    length: int
    description: bytes | None = None

    @classmethod
    def parse(cls, data: bytes, version: int = 1) -> FirmwareBlob:
        name = "UEFI_PLATFORM_FIRMWARE_BLOB" + ("2" if version == 2 else "")
        reader = Reader(data, name)
        description = None
        if version == 2:
            description = reader.take(reader.u8("BlobDescriptionSize"), "BlobDescription")
        base = reader.u64("BlobBase")
        length = reader.u64("BlobLength")
        reader.expect_end()
        return cls(base, length, description)

    def to_bytes(self) -> bytes:
        writer = Writer()
        if self.description is not None:
            writer.u8(len(self.description)).put(self.description)
        return writer.u64(self.base).u64(self.length).to_bytes()

    def describe(self) -> str:
        label = f"{_text(self.description)!r} " if self.description is not None else ""
        return f"{label}base {self.base:#x} length {self.length:#x}"

    def to_json(self) -> dict[str, object]:
        described = None if self.description is None else _text(self.description)
        return {"kind": "UEFI_PLATFORM_FIRMWARE_BLOB", "description": described,
                "base": self.base, "length": self.length}


@dataclass(frozen=True)
class HandoffTables:
    """EFI configuration tables handed off (GUID and pointer); v2 adds a description."""

    tables: tuple[tuple[Guid, int], ...]
    description: bytes | None = None

    @classmethod
    def parse(cls, data: bytes, version: int = 1) -> HandoffTables:
        name = "UEFI_HANDOFF_TABLE_POINTERS" + ("2" if version == 2 else "")
        reader = Reader(data, name)
        description = None
        if version == 2:
            description = reader.take(reader.u8("TableDescriptionSize"), "TableDescription")
        count = reader.u64("NumberOfTables")
        if count * CONFIGURATION_TABLE_SIZE != reader.remaining:
            raise reader.fail(f"{count} tables do not fill the event")
        tables = tuple(
            (Guid.from_bytes(reader.take(16, "VendorGuid")), reader.u64("VendorTable"))
            for _ in range(count)
        )
        return cls(tables, description)

    def to_bytes(self) -> bytes:
        writer = Writer()
        if self.description is not None:
            writer.u8(len(self.description)).put(self.description)
        writer.u64(len(self.tables))
        for guid, pointer in self.tables:
            writer.put(guid.to_bytes()).u64(pointer)
        return writer.to_bytes()

    def describe(self) -> str:
        label = f"{_text(self.description)!r} " if self.description is not None else ""
        return label + ", ".join(f"{guid}@{pointer:#x}" for guid, pointer in self.tables)

    def to_json(self) -> dict[str, object]:
        described = None if self.description is None else _text(self.description)
        return {"kind": "UEFI_HANDOFF_TABLE_POINTERS", "description": described,
                "tables": [{"vendor_guid": str(g), "vendor_table": p} for g, p in self.tables]}
