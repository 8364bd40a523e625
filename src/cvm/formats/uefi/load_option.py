"""EFI_LOAD_OPTION: the data of a Boot#### variable.

UEFI Specification 2.10, section 3.1.3: ``u32 Attributes | u16 FilePathListLength |
CHAR16 Description[] (NUL-terminated) | EFI_DEVICE_PATH_PROTOCOL FilePathList[] |
u8 OptionalData[]``, little-endian. Attributes: LOAD_OPTION_ACTIVE 0x1, FORCE_RECONNECT 0x2,
HIDDEN 0x8, CATEGORY in bits 8-12 (0x000 boot, 0x100 application). The firmware measures the
variable's data as it is into PCR 1 (EV_EFI_VARIABLE_BOOT), so every byte must be exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.tcg.device_path import DevicePath
from cvm.wire import Reader, Writer

LOAD_OPTION_ACTIVE = 0x0000_0001
LOAD_OPTION_HIDDEN = 0x0000_0008
LOAD_OPTION_CATEGORY_APP = 0x0000_0100
HEADER_SIZE = 6


@dataclass(frozen=True)
class LoadOption:
    """One boot option: attributes, description, device path and optional data."""

    attributes: int
    description: str
    file_path: DevicePath
    optional_data: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> LoadOption:
        reader = Reader(data, "EFI_LOAD_OPTION")
        attributes = reader.u32("Attributes")
        path_length = reader.u16("FilePathListLength")
        chars = []
        while True:
            unit = reader.take(2, "Description")
            if unit == b"\0\0":
                break
            chars.append(unit)
        try:
            description = b"".join(chars).decode("utf-16-le")
        except UnicodeDecodeError:
            raise FormatError("EFI_LOAD_OPTION: Description is not UTF-16") from None
        path = DevicePath.parse(reader.take(path_length, "FilePathList"))
        return cls(attributes, description, path, reader.rest())  # OptionalData

    def to_bytes(self) -> bytes:
        path = self.file_path.to_bytes()
        writer = Writer().u32(self.attributes).u16(len(path))
        writer.put((self.description + "\0").encode("utf-16-le")).put(path)
        return writer.put(self.optional_data).to_bytes()
