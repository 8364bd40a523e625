"""SVSM_VTPM_COMMAND request and response buffers (SVSM spec 58019, section 8, Tables 16–17).

The guest puts one request in a 4 KiB page and passes its GPA in RCX: ``u32 command`` (the
MSSIM platform command; TPM_SEND_COMMAND = 8 is the only one), ``u8 locality``, ``u32
inbuf_size`` and the TPM command bytes. The SVSM overwrites the same page with ``u32
outbuf_size`` and the TPM response bytes. All integers little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.wire import Reader, Writer

TPM_SEND_COMMAND = 8
BUFFER_SIZE = 0x1000
REQUEST_HEADER_SIZE = 9
RESPONSE_HEADER_SIZE = 4
MAX_INBUF = BUFFER_SIZE - REQUEST_HEADER_SIZE
MAX_OUTBUF = BUFFER_SIZE - RESPONSE_HEADER_SIZE
_REQUEST_HEADER = struct.Struct("<IBI")  # command, locality, inbuf_size: one call each way
_RESPONSE_HEADER = struct.Struct("<I")


@dataclass(frozen=True)
class VtpmCommandRequest:
    """TPM_SEND_COMMAND request (Table 16)."""

    locality: int
    command: bytes
    platform_command: int = TPM_SEND_COMMAND

    @classmethod
    def from_bytes(cls, page: bytes) -> VtpmCommandRequest:
        """Parse from the start of a buffer page (trailing page bytes are ignored)."""
        if len(page) >= REQUEST_HEADER_SIZE:
            platform_command, locality, size = _REQUEST_HEADER.unpack_from(page)
            if size <= MAX_INBUF and REQUEST_HEADER_SIZE + size <= len(page):
                command = bytes(page[REQUEST_HEADER_SIZE : REQUEST_HEADER_SIZE + size])
                return cls(locality, command, platform_command)
        return cls._from_bytes_strict(page)

    @classmethod
    def _from_bytes_strict(cls, page: bytes) -> VtpmCommandRequest:
        """Field by field, naming what is short or too large."""
        source = Reader(page, "SVSM_VTPM_COMMAND request")
        platform_command = source.u32("command")
        locality = source.u8("locality")
        size = source.u32("inbuf_size")
        if size > MAX_INBUF:
            raise FormatError(f"SVSM_VTPM_COMMAND: inbuf_size {size} exceeds {MAX_INBUF}")
        return cls(locality, source.take(size, "inbuf"), platform_command)

    def to_bytes(self) -> bytes:
        if len(self.command) > MAX_INBUF:
            raise FormatError(f"TPM command of {len(self.command)} bytes exceeds {MAX_INBUF}")
        try:
            return _REQUEST_HEADER.pack(self.platform_command, self.locality,
                                        len(self.command)) + self.command
        except struct.error:  # a field that does not fit: the writer's error
            pass
        sink = Writer().u32(self.platform_command).u8(self.locality).u32(len(self.command))
        return sink.put(self.command).to_bytes()


@dataclass(frozen=True)
class VtpmCommandResponse:
    """TPM_SEND_COMMAND response (Table 17)."""

    response: bytes

    @classmethod
    def from_bytes(cls, page: bytes) -> VtpmCommandResponse:
        if len(page) >= RESPONSE_HEADER_SIZE:
            size = _RESPONSE_HEADER.unpack_from(page)[0]
            if size <= MAX_OUTBUF and RESPONSE_HEADER_SIZE + size <= len(page):
                return cls(bytes(page[RESPONSE_HEADER_SIZE : RESPONSE_HEADER_SIZE + size]))
        return cls._from_bytes_strict(page)

    @classmethod
    def _from_bytes_strict(cls, page: bytes) -> VtpmCommandResponse:
        """Field by field, naming what is short or too large."""
        source = Reader(page, "SVSM_VTPM_COMMAND response")
        size = source.u32("outbuf_size")
        if size > MAX_OUTBUF:
            raise FormatError(f"SVSM_VTPM_COMMAND: outbuf_size {size} exceeds {MAX_OUTBUF}")
        return cls(source.take(size, "outbuf"))

    def to_bytes(self) -> bytes:
        if len(self.response) > MAX_OUTBUF:
            raise FormatError(f"TPM response of {len(self.response)} bytes exceeds {MAX_OUTBUF}")
        return _RESPONSE_HEADER.pack(len(self.response)) + self.response
