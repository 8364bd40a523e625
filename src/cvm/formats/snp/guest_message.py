"""SNP_GUEST_REQUEST message header: the AEAD envelope between a guest and the firmware.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), §7 "Guest Messages",
Table 98 "Message Header Format" (0x60 bytes, little-endian) and Table 99 "Message Type
Encodings". One 4 KiB page carries the header and up to 4000 bytes of payload, encrypted with
AES-256-GCM under the VMPCK the header names: the IV is MSG_SEQNO (u64 little-endian) followed
by four zero bytes, the additional data is the header from 0x30 to its end, the 16-byte tag
goes to AUTHTAG (the rest of the 32-byte field is zero). ALGO 0 is invalid and 2..255 are
reserved: a header naming anything but AES-256-GCM (1) is refused when parsed, by the firmware
for a request and by the guest for a response.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, reserved, u8, u16, u64

HEADER_SIZE = 0x60
PAGE_SIZE = 0x1000
MAX_PAYLOAD_SIZE = 4000
AUTHTAG_FIELD_SIZE = 32
TAG_SIZE = 16
IV_SIZE = 12
AAD_START = 0x30
ALGO_AES_256_GCM = 1
HEADER_VERSION = 1
VMPCK_COUNT = 4

MESSAGE_HEADER_LAYOUT = Layout(
    "SNP guest message header",
    HEADER_SIZE,
    [
        raw("authtag", 0x00, AUTHTAG_FIELD_SIZE),
        u64("msg_seqno", 0x20),
        reserved(0x28, 8),
        u8("algo", 0x30),
        u8("hdr_version", 0x31),
        u16("hdr_sz", 0x32),
        u8("msg_type", 0x34),
        u8("msg_version", 0x35),
        u16("msg_sz", 0x36),
        reserved(0x38, 4),
        u8("msg_vmpck", 0x3C),
        reserved(0x3D, 0x23),
    ],
)


class MessageType(IntEnum):
    """MSG_TYPE values (56860 Table 99); a response is its request + 1."""

    CPUID_REQ = 1
    CPUID_RSP = 2
    KEY_REQ = 3
    KEY_RSP = 4
    REPORT_REQ = 5
    REPORT_RSP = 6
    EXPORT_REQ = 7
    EXPORT_RSP = 8
    IMPORT_REQ = 9
    IMPORT_RSP = 10
    ABSORB_REQ = 11
    ABSORB_RSP = 12
    VMRK_REQ = 13
    VMRK_RSP = 14
    ABSORB_NOMA_REQ = 15
    ABSORB_NOMA_RSP = 16
    TSC_INFO_REQ = 17
    TSC_INFO_RSP = 18

    @property
    def response(self) -> MessageType:
        """The type of the answer to this request (:func:`response_type`)."""
        return response_type(self)


def response_type(kind: MessageType) -> MessageType:
    """The MSG_TYPE that answers ``kind``: its value + 1 (56860 Table 99); a response has none."""
    if kind.value % 2 == 0:
        raise UsageError(f"{kind.name} is already a response")
    return MessageType(kind.value + 1)


@dataclass(frozen=True)
class MessageHeader:
    """The clear-text header of one guest message."""

    msg_seqno: int
    msg_type: MessageType
    msg_sz: int
    msg_vmpck: int
    msg_version: int = 1
    authtag: bytes = bytes(TAG_SIZE)
    algo: int = ALGO_AES_256_GCM

    def __post_init__(self) -> None:
        if not 0 <= self.msg_seqno < 1 << 64:
            raise UsageError("MSG_SEQNO is a u64")
        if not 0 <= self.msg_sz <= MAX_PAYLOAD_SIZE:
            raise UsageError(f"MSG_SZ {self.msg_sz} exceeds {MAX_PAYLOAD_SIZE}")
        if not 0 <= self.msg_vmpck < VMPCK_COUNT:
            raise UsageError(f"MSG_VMPCK {self.msg_vmpck} is not 0..3")
        if len(self.authtag) != TAG_SIZE:
            raise UsageError("AUTHTAG is a 16-byte GCM tag")
        if not 0 <= self.msg_version < 1 << 8 or not 0 <= self.algo < 1 << 8:
            raise UsageError("MSG_VERSION and ALGO are u8 values")

    @classmethod
    def from_bytes(cls, data: bytes) -> MessageHeader:
        values = MESSAGE_HEADER_LAYOUT.unpack(data)
        ints = {k: v for k, v in values.items() if isinstance(v, int)}
        tag = values["authtag"]
        if not isinstance(tag, bytes) or any(tag[TAG_SIZE:]):
            raise FormatError("guest message: AUTHTAG bytes 16..31 are not zero")
        if ints["hdr_version"] != HEADER_VERSION or ints["hdr_sz"] != HEADER_SIZE:
            raise FormatError(
                f"guest message: header version {ints['hdr_version']} size {ints['hdr_sz']:#x}"
                " (expected 1, 0x60)"
            )
        if ints["algo"] != ALGO_AES_256_GCM:
            raise FormatError(
                f"guest message: ALGO {ints['algo']} is not {ALGO_AES_256_GCM} (AES-256-GCM)"
            )
        try:
            kind = MessageType(ints["msg_type"])
        except ValueError:
            raise FormatError(f"guest message: unknown MSG_TYPE {ints['msg_type']}") from None
        if ints["msg_sz"] > MAX_PAYLOAD_SIZE or ints["msg_vmpck"] >= VMPCK_COUNT:
            raise FormatError("guest message: MSG_SZ or MSG_VMPCK out of range")
        return cls(
            msg_seqno=ints["msg_seqno"],
            msg_type=kind,
            msg_sz=ints["msg_sz"],
            msg_vmpck=ints["msg_vmpck"],
            msg_version=ints["msg_version"],
            authtag=tag[:TAG_SIZE],
            algo=ints["algo"],
        )

    def to_bytes(self) -> bytes:
        return MESSAGE_HEADER_LAYOUT.pack(
            {
                "authtag": self.authtag + bytes(AUTHTAG_FIELD_SIZE - TAG_SIZE),
                "msg_seqno": self.msg_seqno,
                "algo": self.algo,
                "hdr_version": HEADER_VERSION,
                "hdr_sz": HEADER_SIZE,
                "msg_type": int(self.msg_type),
                "msg_version": self.msg_version,
                "msg_sz": self.msg_sz,
                "msg_vmpck": self.msg_vmpck,
            }
        )

    def aad(self) -> bytes:
        """The additional authenticated data: header bytes 0x30..0x5F."""
        return self.to_bytes()[AAD_START:]

    def iv(self) -> bytes:
        """The 12-byte GCM IV: MSG_SEQNO little-endian, then four zero bytes."""
        return self.msg_seqno.to_bytes(8, "little") + bytes(IV_SIZE - 8)


@dataclass(frozen=True)
class GuestMessage:
    """A header and its (encrypted) payload, as one request or response page."""

    header: MessageHeader
    payload: bytes

    def __post_init__(self) -> None:
        if len(self.payload) != self.header.msg_sz:
            raise UsageError(
                f"payload is {len(self.payload)} bytes, MSG_SZ says {self.header.msg_sz}"
            )

    @classmethod
    def from_page(cls, page: bytes) -> GuestMessage:
        if len(page) != PAGE_SIZE:
            raise FormatError(f"guest message page: expected 4096 bytes, got {len(page)}")
        header = MessageHeader.from_bytes(page[:HEADER_SIZE])
        end = HEADER_SIZE + header.msg_sz
        if any(page[end:]):
            raise FormatError("guest message page: bytes after the payload are not zero")
        return cls(header, page[HEADER_SIZE:end])

    def to_page(self) -> bytes:
        body = self.header.to_bytes() + self.payload
        return body + bytes(PAGE_SIZE - len(body))
