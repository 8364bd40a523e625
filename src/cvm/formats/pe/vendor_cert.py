"""shim's ``.vendor_cert`` section: the vendor's authorised certificate and its deny list.

rhboot/shim ``shim.c`` (``struct cert_table`` / ``cert_table`` build in ``cert.S``): the section
starts with ``{u32 vendor_authorized_size; u32 vendor_deauthorized_size;
u32 vendor_authorized_offset; u32 vendor_deauthorized_offset}``, offsets counted from the start of
the section. The authorised part is one DER X.509 certificate (Debian: the Debian Secure Boot
CA) or an EFI signature list database; the deauthorised part (``vendor_dbx``) is a
concatenation of EFI_SIGNATURE_LISTs.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.wire import Layout, u32

VENDOR_CERT_HEADER = Layout(".vendor_cert header", 0x10, [
    u32("vendor_authorized_size", 0x0),
    u32("vendor_deauthorized_size", 0x4),
    u32("vendor_authorized_offset", 0x8),
    u32("vendor_deauthorized_offset", 0xC),
])


@dataclass(frozen=True)
class VendorCertSection:
    """The vendor certificate (DER) and the vendor deny list (EFI signature lists)."""

    authorized: bytes
    deauthorized: bytes

    @classmethod
    def parse(cls, data: bytes) -> VendorCertSection:
        size = VENDOR_CERT_HEADER.size
        if len(data) < size:
            raise FormatError(f".vendor_cert: {len(data)} bytes, header needs {size}")
        header = VENDOR_CERT_HEADER.unpack(data[:size])
        parts = []
        for kind in ("authorized", "deauthorized"):
            offset, length = header[f"vendor_{kind}_offset"], header[f"vendor_{kind}_size"]
            assert isinstance(offset, int) and isinstance(length, int)
            if length and (offset < size or offset + length > len(data)):
                raise FormatError(
                    f".vendor_cert: vendor_{kind} {offset:#x}+{length:#x} outside the section"
                )
            parts.append(data[offset : offset + length])
        return cls(parts[0], parts[1])

    def to_bytes(self) -> bytes:
        size = VENDOR_CERT_HEADER.size
        header = VENDOR_CERT_HEADER.pack({
            "vendor_authorized_size": len(self.authorized),
            "vendor_deauthorized_size": len(self.deauthorized),
            "vendor_authorized_offset": size,
            "vendor_deauthorized_offset": size + len(self.authorized),
        })
        return header + self.authorized + self.deauthorized
