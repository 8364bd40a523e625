"""UEFI_VARIABLE_DATA: the event data of EV_EFI_VARIABLE_DRIVER_CONFIG, _BOOT, _BOOT2, _AUTHORITY.

PFP 1.05 r23, section 10.4 (structure UEFI_VARIABLE_DATA): ``EFI_GUID VariableName |
u64 UnicodeNameLength (CHAR16 count, no NUL) | u64 VariableDataLength |
CHAR16 UnicodeName[UnicodeNameLength] | u8 VariableData[VariableDataLength]``, little-endian.

What the digest covers differs per type (PFP section 3.3.4.2, 10.4.4): the whole structure
for DRIVER_CONFIG, AUTHORITY and BOOT2, VariableData only for EV_EFI_VARIABLE_BOOT.
Shim releases before 15.3 logged stray bytes after the structure; they are kept in
``trailing`` so that real logs decode and write back unchanged (cvm never writes any).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Guid, Reader, Writer


@dataclass(frozen=True)
class UefiVariableData:
    """A UEFI variable as measured: vendor GUID, name, and its data."""

    vendor_guid: Guid
    name: str
    data: bytes
    trailing: bytes = b""

    def __post_init__(self) -> None:
        try:
            self.name.encode("utf-16-le")
        except UnicodeEncodeError:
            raise UsageError(f"variable name {self.name!r} is not valid UTF-16") from None

    @classmethod
    def parse(cls, data: bytes) -> UefiVariableData:
        reader = Reader(data, "UEFI_VARIABLE_DATA")
        guid = Guid.from_bytes(reader.take(16, "VariableName"))
        name_length = reader.u64("UnicodeNameLength")
        data_length = reader.u64("VariableDataLength")
        if name_length > reader.remaining // 2:
            raise reader.fail(f"UnicodeNameLength {name_length} exceeds the event")
        raw_name = reader.take(2 * name_length, "UnicodeName")
        value = reader.take(data_length, "VariableData")
        trailing = reader.rest()
        try:
            name = raw_name.decode("utf-16-le")
        except UnicodeDecodeError:
            raise FormatError("UEFI_VARIABLE_DATA: UnicodeName is not UTF-16") from None
        if name.encode("utf-16-le") != raw_name:
            raise FormatError("UEFI_VARIABLE_DATA: UnicodeName does not round-trip")
        return cls(guid, name, value, trailing)

    def to_bytes(self) -> bytes:
        raw_name = self.name.encode("utf-16-le")
        writer = Writer().put(self.vendor_guid.to_bytes())
        writer.u64(len(raw_name) // 2).u64(len(self.data))
        return writer.put(raw_name).put(self.data).put(self.trailing).to_bytes()

    def describe(self) -> str:
        stray = f" (+{len(self.trailing)} stray bytes)" if self.trailing else ""
        return f"{self.name} ({self.vendor_guid}) {len(self.data)} bytes{stray}"

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "UEFI_VARIABLE_DATA",
            "vendor_guid": str(self.vendor_guid),
            "name": self.name,
            "data": self.data.hex(),
            "trailing": self.trailing.hex(),
        }
