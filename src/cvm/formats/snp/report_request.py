"""MSG_REPORT_REQ and MSG_REPORT_RSP: a guest asks the firmware for an attestation report.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), §7.3 "Attestation",
Table 20 "MSG_REPORT_REQ Message Structure" (0x60 bytes) and Table 23 "MSG_REPORT_RSP Message
Structure" (0x20-byte header then the 0x4A0-byte ATTESTATION_REPORT). Little-endian.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, reserved, u32

REPORT_REQ_VERSION = 1  # MSG_VERSION of MSG_REPORT_REQ: its one version
REPORT_DATA_SIZE = 64
REPORT_SIZE = 0x4A0
REPORT_REQ_SIZE = 0x60
REPORT_RSP_HEADER_SIZE = 0x20
MAX_VMPL = 3

REPORT_REQ_LAYOUT = Layout(
    "MSG_REPORT_REQ",
    REPORT_REQ_SIZE,
    [
        raw("report_data", 0x00, REPORT_DATA_SIZE),
        u32("vmpl", 0x40),
        u32("key_sel", 0x44),
        reserved(0x48, 0x18),
    ],
)
REPORT_RSP_HEADER_LAYOUT = Layout(
    "MSG_REPORT_RSP",
    REPORT_RSP_HEADER_SIZE,
    [u32("status", 0x00), u32("report_size", 0x04), reserved(0x08, 0x18)],
)


class KeySelect(IntEnum):
    """KEY_SEL (bits 1:0 at 0x44): which key signs the report."""

    DEFAULT = 0  # VLEK if one is installed, else VCEK
    VCEK = 1
    VLEK = 2


class ReportStatus(IntEnum):
    """STATUS of MSG_REPORT_RSP (56860 Table 23)."""

    SUCCESS = 0x00
    INVALID_PARAMETERS = 0x16
    INVALID_KEY_SELECTION = 0x27


@dataclass(frozen=True)
class ReportRequest:
    """REPORT_DATA chosen by the guest, the VMPL to report and the signing key selection."""

    report_data: bytes
    vmpl: int = 0
    key_sel: KeySelect = KeySelect.DEFAULT

    def __post_init__(self) -> None:
        if len(self.report_data) != REPORT_DATA_SIZE:
            raise UsageError(f"REPORT_DATA must be 64 bytes, got {len(self.report_data)}")
        if not 0 <= self.vmpl < 1 << 32:
            raise UsageError("VMPL is a u32")

    @classmethod
    def from_bytes(cls, data: bytes) -> ReportRequest:
        values = REPORT_REQ_LAYOUT.unpack(data)
        key_sel, vmpl = values["key_sel"], values["vmpl"]
        report_data = values["report_data"]
        if not (isinstance(key_sel, int) and isinstance(vmpl, int)):
            raise FormatError("MSG_REPORT_REQ: malformed fields")
        if not isinstance(report_data, bytes):
            raise FormatError("MSG_REPORT_REQ: malformed REPORT_DATA")
        if key_sel & ~0x3 or key_sel == 3:
            raise FormatError(f"MSG_REPORT_REQ: KEY_SEL {key_sel:#x} is reserved")
        return cls(report_data, vmpl, KeySelect(key_sel))

    def to_bytes(self) -> bytes:
        return REPORT_REQ_LAYOUT.pack(
            {"report_data": self.report_data, "vmpl": self.vmpl, "key_sel": int(self.key_sel)}
        )


@dataclass(frozen=True)
class ReportResponse:
    """The status and, on success, the raw 1184-byte report."""

    status: int
    report: bytes = b""

    def __post_init__(self) -> None:
        if self.status == ReportStatus.SUCCESS and len(self.report) != REPORT_SIZE:
            raise UsageError(f"a successful report response carries {REPORT_SIZE} bytes")
        if self.status != ReportStatus.SUCCESS and self.report:
            raise UsageError("a failed report response carries no report")

    @classmethod
    def from_bytes(cls, data: bytes) -> ReportResponse:
        values = REPORT_RSP_HEADER_LAYOUT.unpack(data[:REPORT_RSP_HEADER_SIZE])
        status, size = values["status"], values["report_size"]
        if not isinstance(status, int) or not isinstance(size, int):
            raise FormatError("MSG_REPORT_RSP: malformed header")
        body = data[REPORT_RSP_HEADER_SIZE:]
        if status != ReportStatus.SUCCESS:
            if size or any(body):
                raise FormatError("MSG_REPORT_RSP: a failed response carries a report")
            return cls(status)
        if size != REPORT_SIZE or len(body) != REPORT_SIZE:
            raise FormatError(f"MSG_REPORT_RSP: REPORT_SIZE {size:#x}, {len(body):#x} bytes follow")
        return cls(status, body)

    def to_bytes(self) -> bytes:
        header = REPORT_RSP_HEADER_LAYOUT.pack(
            {"status": self.status, "report_size": len(self.report)}
        )
        return header + (self.report if self.report else bytes(REPORT_SIZE))
