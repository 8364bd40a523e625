"""EFI variables and EFI_VARIABLE_AUTHENTICATION_2 (time-based authenticated writes).

UEFI 2.10 §8.2 "Variable Services": attribute bits (Table 8-1 / ``EFI_VARIABLE_*``),
§8.2.2 "Using the EFI_VARIABLE_AUTHENTICATION_2 descriptor": a SetVariable payload is
``EFI_TIME TimeStamp ‖ WIN_CERTIFICATE_UEFI_GUID AuthInfo ‖ data``, where AuthInfo is
``{u32 dwLength; u16 wRevision = 0x0200; u16 wCertificateType = 0x0EF1;
EFI_GUID CertType = EFI_CERT_TYPE_PKCS7_GUID; u8 CertData[]}`` (a DER PKCS#7 SignedData, with or
without its ContentInfo wrapper) and the signed content is
``VariableName (UTF-16LE, no NUL) ‖ VendorGuid ‖ Attributes (u32) ‖ TimeStamp ‖ data``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.uefi.efi_time import EFI_TIME_SIZE, EfiTime
from cvm.formats.uefi.guids import EFI_CERT_TYPE_PKCS7
from cvm.wire import Guid, Layout, raw, u16, u32

EFI_VARIABLE_NON_VOLATILE = 0x01
EFI_VARIABLE_BOOTSERVICE_ACCESS = 0x02
EFI_VARIABLE_RUNTIME_ACCESS = 0x04
EFI_VARIABLE_HARDWARE_ERROR_RECORD = 0x08
EFI_VARIABLE_AUTHENTICATED_WRITE_ACCESS = 0x10
EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS = 0x20
EFI_VARIABLE_APPEND_WRITE = 0x40
EFI_VARIABLE_ENHANCED_AUTHENTICATED_ACCESS = 0x80
ATTRIBUTE_NAMES = {
    EFI_VARIABLE_NON_VOLATILE: "NV",
    EFI_VARIABLE_BOOTSERVICE_ACCESS: "BS",
    EFI_VARIABLE_RUNTIME_ACCESS: "RT",
    EFI_VARIABLE_HARDWARE_ERROR_RECORD: "HR",
    EFI_VARIABLE_AUTHENTICATED_WRITE_ACCESS: "AW",
    EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS: "AT",
    EFI_VARIABLE_APPEND_WRITE: "AP",
    EFI_VARIABLE_ENHANCED_AUTHENTICATED_ACCESS: "EA",
}
# NV | BS | RT | TIME_BASED_AUTHENTICATED_WRITE: the attributes of PK, KEK, db and dbx.
SECURE_BOOT_ATTRIBUTES = 0x27

WIN_CERTIFICATE_UEFI_GUID = Layout("WIN_CERTIFICATE_UEFI_GUID", 0x18, [
    u32("length", 0x00),
    u16("revision", 0x04),
    u16("certificate_type", 0x06),
    raw("cert_type", 0x08, 16),
])
WIN_CERT_REVISION = 0x0200
WIN_CERT_TYPE_EFI_GUID = 0x0EF1
NO_TIME = EfiTime()


def attribute_names(attributes: int) -> str:
    """``NV|BS|RT|AT`` style text for an attribute mask (unknown bits in hex)."""
    names = [name for bit, name in ATTRIBUTE_NAMES.items() if attributes & bit]
    rest = attributes & ~sum(ATTRIBUTE_NAMES)
    if rest:
        names.append(f"{rest:#x}")
    return "|".join(names) or "0"


def encode_name(name: str) -> bytes:
    """A variable name as UTF-16LE without the terminating NUL."""
    try:
        return name.encode("utf-16-le")
    except UnicodeEncodeError:
        raise FormatError(f"variable name {name!r} is not UTF-16 encodable") from None


def decode_name(data: bytes) -> str:
    """A UTF-16LE name (the NUL and anything after it are dropped)."""
    if len(data) % 2:
        raise FormatError("variable name: odd number of bytes for UTF-16")
    text = data.decode("utf-16-le", errors="surrogatepass")
    text = text.split("\0", 1)[0]
    try:
        text.encode("utf-16-le")
    except UnicodeEncodeError:
        raise FormatError("variable name: unpaired UTF-16 surrogate") from None
    return text


@dataclass(frozen=True)
class EfiVariable:
    """A variable as the firmware keeps it: name, vendor GUID, attributes, data, timestamp."""

    name: str
    vendor: Guid
    attributes: int
    data: bytes
    timestamp: EfiTime = NO_TIME
    monotonic_count: int = 0

    @property
    def key(self) -> tuple[str, Guid]:
        return self.name, self.vendor


@dataclass(frozen=True)
class VariableAuthentication2:
    """EFI_VARIABLE_AUTHENTICATION_2: the timestamp and the PKCS#7 over the signed content."""

    timestamp: EfiTime
    pkcs7: bytes

    @classmethod
    def parse(cls, payload: bytes) -> tuple[VariableAuthentication2, bytes]:
        """Split a SetVariable payload into its descriptor and the new variable data."""
        header_end = EFI_TIME_SIZE + WIN_CERTIFICATE_UEFI_GUID.size
        if len(payload) < header_end:
            raise FormatError(
                f"EFI_VARIABLE_AUTHENTICATION_2: {len(payload)} bytes, header needs {header_end}"
            )
        timestamp = EfiTime.from_bytes(payload[:EFI_TIME_SIZE], authenticated=True)
        fields = WIN_CERTIFICATE_UEFI_GUID.unpack(payload[EFI_TIME_SIZE:header_end])
        length = fields["length"]
        assert isinstance(length, int)
        if fields["revision"] != WIN_CERT_REVISION:
            raise FormatError("EFI_VARIABLE_AUTHENTICATION_2: wRevision is not 0x0200")
        if fields["certificate_type"] != WIN_CERT_TYPE_EFI_GUID:
            raise FormatError("EFI_VARIABLE_AUTHENTICATION_2: wCertificateType is not 0x0EF1")
        if fields["cert_type"] != EFI_CERT_TYPE_PKCS7.to_bytes():
            raise FormatError("EFI_VARIABLE_AUTHENTICATION_2: CertType is not PKCS7")
        end = EFI_TIME_SIZE + length
        if length < WIN_CERTIFICATE_UEFI_GUID.size or end > len(payload):
            raise FormatError(f"EFI_VARIABLE_AUTHENTICATION_2: dwLength {length} out of range")
        return cls(timestamp, payload[header_end:end]), payload[end:]

    def to_bytes(self) -> bytes:
        header = WIN_CERTIFICATE_UEFI_GUID.pack({
            "length": WIN_CERTIFICATE_UEFI_GUID.size + len(self.pkcs7),
            "revision": WIN_CERT_REVISION,
            "certificate_type": WIN_CERT_TYPE_EFI_GUID,
            "cert_type": EFI_CERT_TYPE_PKCS7.to_bytes(),
        })
        return self.timestamp.to_bytes() + header + self.pkcs7


def signed_bytes(
    name: str, vendor: Guid, attributes: int, timestamp: EfiTime, data: bytes
) -> bytes:
    """The content an EFI_VARIABLE_AUTHENTICATION_2 signature covers (UEFI 2.10 §8.2.2 step 2)."""
    return (
        encode_name(name) + vendor.to_bytes() + attributes.to_bytes(4, "little")
        + timestamp.to_bytes() + data
    )
