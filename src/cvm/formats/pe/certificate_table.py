"""The attribute certificate table of a PE image: a sequence of ``WIN_CERTIFICATE`` entries.

Microsoft "PE Format" §"The Attribute Certificate Table (Image Only)": each entry is
``{u32 dwLength; u16 wRevision; u16 wCertificateType; u8 bCertificate[]}``, ``dwLength`` counts
the 8-byte header, and the next entry starts at the next 8-byte boundary. UEFI 2.10 §32.2.4 adds
``WIN_CERTIFICATE_UEFI_GUID`` (type 0x0EF1: a CertType GUID then the data). The walk must end
exactly at the table's size, as edk2 ``DxeImageVerificationHandler`` requires; a binary may carry
several entries (Debian's shim carries two PKCS#7 signatures).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.wire import Guid, Layout, u16, u32

WIN_CERTIFICATE_HEADER = Layout("WIN_CERTIFICATE", 8, [
    u32("length", 0x0),
    u16("revision", 0x4),
    u16("certificate_type", 0x6),
])
WIN_CERT_REVISION_1_0 = 0x0100
WIN_CERT_REVISION_2_0 = 0x0200
WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
WIN_CERT_TYPE_EFI_PKCS115 = 0x0EF0
WIN_CERT_TYPE_EFI_GUID = 0x0EF1
KNOWN_TYPES = {WIN_CERT_TYPE_PKCS_SIGNED_DATA, WIN_CERT_TYPE_EFI_PKCS115, WIN_CERT_TYPE_EFI_GUID}
EFI_CERT_TYPE_PKCS7_GUID = Guid.parse("4aafd29d-68df-49ee-8aa9-347d375665a7")
ENTRY_ALIGNMENT = 8
GUID_SIZE = 16


def align8(value: int) -> int:
    return (value + ENTRY_ALIGNMENT - 1) & ~(ENTRY_ALIGNMENT - 1)


@dataclass(frozen=True)
class WinCertificate:
    """One attribute certificate: its revision, its type and the bytes after the 8-byte header."""

    certificate: bytes
    certificate_type: int = WIN_CERT_TYPE_PKCS_SIGNED_DATA
    revision: int = WIN_CERT_REVISION_2_0

    @property
    def length(self) -> int:
        """``dwLength``: the header plus the certificate, without alignment padding."""
        return entry_length(self.certificate)

    @property
    def pkcs7(self) -> bytes | None:
        """The DER PKCS#7 ContentInfo this entry carries, or None for another kind."""
        return entry_pkcs7(self.certificate_type, self.certificate)

    def to_bytes(self) -> bytes:
        """The entry padded with zeros to the next 8-byte boundary."""
        header = WIN_CERTIFICATE_HEADER.pack({
            "length": self.length,
            "revision": self.revision,
            "certificate_type": self.certificate_type,
        })
        return (header + self.certificate).ljust(align8(self.length), b"\0")


def entry_length(certificate: bytes) -> int:
    """``dwLength`` of an entry holding ``certificate``: the 8-byte header plus the bytes."""
    return WIN_CERTIFICATE_HEADER.size + len(certificate)


def entry_pkcs7(certificate_type: int, certificate: bytes) -> bytes | None:
    """The PKCS#7 of a WIN_CERT_TYPE_PKCS_SIGNED_DATA entry, or of a WIN_CERT_TYPE_EFI_GUID
    entry whose CertType is EFI_CERT_TYPE_PKCS7_GUID; None for any other entry."""
    if certificate_type == WIN_CERT_TYPE_PKCS_SIGNED_DATA:
        return certificate
    if (certificate_type == WIN_CERT_TYPE_EFI_GUID and len(certificate) >= GUID_SIZE
            and Guid.from_bytes(certificate[:GUID_SIZE]) == EFI_CERT_TYPE_PKCS7_GUID):
        return certificate[GUID_SIZE:]
    return None


def parse_certificate_table(table: bytes) -> tuple[WinCertificate, ...]:
    """Every entry of a certificate table (the bytes data directory 4 points at)."""
    entries = []
    offset = 0
    while offset < len(table):
        if len(table) - offset < WIN_CERTIFICATE_HEADER.size:
            raise FormatError(
                f"certificate table: {len(table) - offset} stray bytes at offset {offset:#x}"
            )
        header = WIN_CERTIFICATE_HEADER.unpack(table[offset : offset + WIN_CERTIFICATE_HEADER.size])
        length, revision, kind = header["length"], header["revision"], header["certificate_type"]
        assert isinstance(length, int) and isinstance(revision, int) and isinstance(kind, int)
        if length < WIN_CERTIFICATE_HEADER.size or offset + length > len(table):
            raise FormatError(
                f"certificate table: entry at {offset:#x} has dwLength {length:#x}, table size "
                f"is {len(table):#x}"
            )
        if revision not in (WIN_CERT_REVISION_1_0, WIN_CERT_REVISION_2_0):
            raise FormatError(f"certificate table: entry at {offset:#x} revision {revision:#x}")
        if kind not in KNOWN_TYPES:
            raise FormatError(f"certificate table: entry at {offset:#x} type {kind:#x}")
        body = table[offset + WIN_CERTIFICATE_HEADER.size : offset + length]
        entries.append(WinCertificate(body, kind, revision))
        offset += align8(length)
    if offset != len(table):
        raise FormatError(
            f"certificate table: entries end at {offset:#x}, the table is {len(table):#x} bytes"
        )
    return tuple(entries)


def certificate_table_bytes(entries: tuple[WinCertificate, ...] | list[WinCertificate]) -> bytes:
    """The table for ``entries``, each padded to 8 bytes."""
    return b"".join(entry.to_bytes() for entry in entries)
