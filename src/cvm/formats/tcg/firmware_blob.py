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


def _open(data: bytes, version: int, structure: str, field: str) -> tuple[Reader, bytes | None]:
    """A reader of ``data`` as ``structure`` (its v2 form, named with a "2", when ``version`` is
    2), and the v2 form's leading description (``{field}DescriptionSize`` bytes), else None."""
    if version != 2:
        return Reader(data, structure), None
    reader = Reader(data, structure + "2")
    return reader, reader.take(reader.u8(f"{field}DescriptionSize"), f"{field}Description")


def _writer(description: bytes | None) -> Writer:
    """A writer that starts with the v2 form's description (its size, then it), if there is
    one."""
    writer = Writer()
    if description is not None:
        writer.u8(len(description)).put(description)
    return writer


def _text(description: bytes | None) -> str | None:
    return None if description is None else description.rstrip(b"\0").decode("ascii", "replace")


def _label(description: bytes | None) -> str:
    """The description as :meth:`describe` leads with it: quoted, then a space; or nothing."""
    text = _text(description)
    return "" if text is None else f"{text!r} "


@dataclass(frozen=True)
class FirmwareBlob:
    """A firmware volume measured by base and length; ``description`` only in the v2 form."""

    base: int
    length: int
    description: bytes | None = None

    @classmethod
    def parse(cls, data: bytes, version: int = 1) -> FirmwareBlob:
        reader, description = _open(data, version, "UEFI_PLATFORM_FIRMWARE_BLOB", "Blob")
        base = reader.u64("BlobBase")
        length = reader.u64("BlobLength")
        reader.expect_end()
        return cls(base, length, description)

    def to_bytes(self) -> bytes:
        return _writer(self.description).u64(self.base).u64(self.length).to_bytes()

    def describe(self) -> str:
        return f"{_label(self.description)}base {self.base:#x} length {self.length:#x}"

    def to_json(self) -> dict[str, object]:
        return {"kind": "UEFI_PLATFORM_FIRMWARE_BLOB", "description": _text(self.description),
                "base": self.base, "length": self.length}


@dataclass(frozen=True)
class HandoffTables:
    """EFI configuration tables handed off (GUID and pointer); v2 adds a description."""

    tables: tuple[tuple[Guid, int], ...]
    description: bytes | None = None

    @classmethod
    def parse(cls, data: bytes, version: int = 1) -> HandoffTables:
        reader, description = _open(data, version, "UEFI_HANDOFF_TABLE_POINTERS", "Table")
        count = reader.u64("NumberOfTables")
        if count * CONFIGURATION_TABLE_SIZE != reader.remaining:
            raise reader.fail(f"{count} tables do not fill the event")
        tables = tuple(
            (Guid.from_bytes(reader.take(16, "VendorGuid")), reader.u64("VendorTable"))
            for _ in range(count)
        )
        return cls(tables, description)

    def to_bytes(self) -> bytes:
        writer = _writer(self.description).u64(len(self.tables))
        for guid, pointer in self.tables:
            writer.put(guid.to_bytes()).u64(pointer)
        return writer.to_bytes()

    def describe(self) -> str:
        tables = ", ".join(f"{guid}@{pointer:#x}" for guid, pointer in self.tables)
        return _label(self.description) + tables

    def to_json(self) -> dict[str, object]:
        return {"kind": "UEFI_HANDOFF_TABLE_POINTERS", "description": _text(self.description),
                "tables": [{"vendor_guid": str(g), "vendor_table": p} for g, p in self.tables]}
