"""UEFI_IMAGE_LOAD_EVENT: event data of EV_EFI_BOOT_SERVICES_APPLICATION/_DRIVER, RUNTIME_DRIVER.

PFP 1.05 r23, section 10.4 (structure UEFI_IMAGE_LOAD_EVENT): ``u64 ImageLocationInMemory |
u64 ImageLengthInMemory | u64 ImageLinkTimeAddress | u64 LengthOfDevicePath |
EFI_DEVICE_PATH DevicePath[LengthOfDevicePath]``, little-endian. The digest of such a record
is the image's Authenticode hash (PFP section 3.3.4.4), not a hash of this structure.

Some shim releases (before 15.3) logged a few stray bytes after the structure (their event size
counted a C struct's padding); real logs carry them, so they are kept in ``trailing`` and
written back, and cvm itself never writes any.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.formats.tcg.device_path import DevicePath
from cvm.wire import Reader, Writer


@dataclass(frozen=True)
class UefiImageLoadEvent:
    """Where an image was loaded and which device path it came from."""

    image_location: int
    image_length: int
    link_time_address: int
    device_path: DevicePath
    trailing: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> UefiImageLoadEvent:
        reader = Reader(data, "UEFI_IMAGE_LOAD_EVENT")
        location = reader.u64("ImageLocationInMemory")
        length = reader.u64("ImageLengthInMemory")
        link = reader.u64("ImageLinkTimeAddress")
        path_length = reader.u64("LengthOfDevicePath")
        path = DevicePath.parse(reader.take(path_length, "DevicePath"))
        return cls(location, length, link, path, reader.rest())

    def to_bytes(self) -> bytes:
        path = self.device_path.to_bytes()
        writer = Writer().u64(self.image_location).u64(self.image_length)
        writer.u64(self.link_time_address).u64(len(path)).put(path)
        return writer.put(self.trailing).to_bytes()

    def describe(self) -> str:
        path = self.device_path.to_text() or "(no device path)"
        stray = f" (+{len(self.trailing)} stray bytes)" if self.trailing else ""
        return f"{path} at {self.image_location:#x}, {self.image_length} bytes{stray}"

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "UEFI_IMAGE_LOAD_EVENT",
            "image_location": self.image_location,
            "image_length": self.image_length,
            "link_time_address": self.link_time_address,
            "device_path": self.device_path.to_text(),
            "device_path_bytes": self.device_path.to_bytes().hex(),
            "trailing": self.trailing.hex(),
        }
