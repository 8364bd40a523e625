"""SVSM_ATTEST_SERVICES / SVSM_ATTEST_SINGLE_SERVICE request (SVSM spec 58019, section 7,
Tables 11 and 13): where the guest wants the report, nonce, manifest and certificates.

``0x00 u64 report GPA · 0x08 u32 report size · 0x10 u64 nonce GPA · 0x18 u16 nonce size ·
0x20 u64 manifest GPA · 0x28 u32 manifest size · 0x30 u64 certificates GPA · 0x38 u32
certificates size``; the single-service form adds ``0x40 GUID service · 0x50 u32 manifest
version``. Reserved ranges must be zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.wire import Guid, Layout, raw, reserved, u16, u32, u64

ATTEST_REQUEST_SIZE = 0x40
SINGLE_SERVICE_REQUEST_SIZE = 0x58
_COMMON = [
    u64("report_gpa", 0x00), u32("report_size", 0x08), reserved(0x0C, 4),
    u64("nonce_gpa", 0x10), u16("nonce_size", 0x18), reserved(0x1A, 6),
    u64("manifest_gpa", 0x20), u32("manifest_size", 0x28), reserved(0x2C, 4),
    u64("certs_gpa", 0x30), u32("certs_size", 0x38), reserved(0x3C, 4),
]
ATTEST_LAYOUT = Layout("SVSM attest services request", ATTEST_REQUEST_SIZE, _COMMON)
SINGLE_LAYOUT = Layout(
    "SVSM attest single service request", SINGLE_SERVICE_REQUEST_SIZE,
    [*_COMMON, raw("service_guid", 0x40, 16), u32("manifest_version", 0x50), reserved(0x54, 4)],
)


@dataclass(frozen=True)
class AttestRequest:
    """An attestation request; ``service`` is set for SVSM_ATTEST_SINGLE_SERVICE."""

    report_gpa: int
    report_size: int
    nonce_gpa: int
    nonce_size: int
    manifest_gpa: int
    manifest_size: int
    certs_gpa: int = 0
    certs_size: int = 0
    service: Guid | None = None
    manifest_version: int = 0

    @classmethod
    def from_bytes(cls, data: bytes, single: bool) -> AttestRequest:
        layout = SINGLE_LAYOUT if single else ATTEST_LAYOUT
        fields = layout.unpack(data[: layout.size])
        numbers = {k: int(v) for k, v in fields.items() if isinstance(v, int)}
        service = Guid.from_bytes(bytes(fields["service_guid"])) if single else None
        return cls(
            numbers["report_gpa"], numbers["report_size"], numbers["nonce_gpa"],
            numbers["nonce_size"], numbers["manifest_gpa"], numbers["manifest_size"],
            numbers["certs_gpa"], numbers["certs_size"], service,
            numbers.get("manifest_version", 0),
        )

    def to_bytes(self) -> bytes:
        values: dict[str, int | bytes] = {
            "report_gpa": self.report_gpa, "report_size": self.report_size,
            "nonce_gpa": self.nonce_gpa, "nonce_size": self.nonce_size,
            "manifest_gpa": self.manifest_gpa, "manifest_size": self.manifest_size,
            "certs_gpa": self.certs_gpa, "certs_size": self.certs_size,
        }
        if self.service is None:
            return ATTEST_LAYOUT.pack(values)
        values["service_guid"] = self.service.to_bytes()
        values["manifest_version"] = self.manifest_version
        return SINGLE_LAYOUT.pack(values)
