"""TPM 2.0 command and response buffers: header, handle area, authorization area, parameters.

TCG "TPM 2.0 Library, Part 1: Architecture", revision 1.59, section 18 ("Command/Response
Structure", Figures 18–21) and Part 2 Table 129/130 (TPMS_AUTH_COMMAND: ``TPMI_SH_AUTH_SESSION
sessionHandle ‖ TPM2B_NONCE nonce ‖ TPMA_SESSION sessionAttributes ‖ TPM2B_AUTH hmac``;
TPMS_AUTH_RESPONSE: ``TPM2B_NONCE nonce ‖ TPMA_SESSION ‖ TPM2B_AUTH hmac``).

A command is ``tag ‖ commandSize ‖ commandCode ‖ handles ‖ [authorizationSize ‖ sessions] ‖
parameters``; a response is ``tag ‖ responseSize ‖ responseCode ‖ handles ‖ [parameterSize]
‖ parameters ‖ [sessions]``. The number of handles depends on the command code, so parsing
takes it from the caller.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import TpmSt
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, writer
from cvm.wire import Layout, Reader, Writer, u16, u32

HEADER_SIZE = 10
MAX_COMMAND_SIZE = 4096
MAX_SESSIONS = 3
MAX_NONCE = 64
MAX_HMAC = 64
HEADER_LAYOUT = Layout(
    "TPM2 command/response header", HEADER_SIZE,
    [u16("tag", 0x0), u32("size", 0x2), u32("code", 0x6)], endian="big",
)
_HEADER_STRUCT = struct.Struct(">HII")  # the layout above, read and written in one call


@dataclass(frozen=True)
class Header:
    """The 10-byte header of a command (code = TPM_CC) or response (code = TPM_RC)."""

    tag: int
    size: int
    code: int

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        """The header at the start of ``data`` (a buffer shorter than a header is refused as
        the layout refuses it)."""
        if len(data) < HEADER_SIZE:
            HEADER_LAYOUT.unpack(data)  # raises the layout's FormatError for a short header
        tag, size, code = _HEADER_STRUCT.unpack_from(data)
        return cls(tag, size, code)

    def to_bytes(self) -> bytes:
        try:
            return _HEADER_STRUCT.pack(self.tag, self.size, self.code)
        except struct.error:  # out of range: the layout's own error
            return HEADER_LAYOUT.pack({"tag": int(self.tag), "size": self.size,
                                       "code": int(self.code)})


@dataclass(frozen=True)
class AuthCommand:
    """TPMS_AUTH_COMMAND: one session's authorization of a command."""

    session_handle: int
    nonce: bytes = b""
    attributes: int = 0
    hmac: bytes = b""

    @classmethod
    def read(cls, source: Reader) -> AuthCommand:
        handle = source.u32("sessionHandle")
        nonce = read_tpm2b(source, "nonce", MAX_NONCE)
        attributes = source.u8("sessionAttributes")
        return cls(handle, nonce, attributes, read_tpm2b(source, "hmac", MAX_HMAC))

    def write(self, sink: Writer) -> Writer:
        sink.u32(self.session_handle)
        put_tpm2b(sink, self.nonce)
        sink.u8(self.attributes)
        return put_tpm2b(sink, self.hmac)


@dataclass(frozen=True)
class AuthResponse:
    """TPMS_AUTH_RESPONSE: one session's acknowledgement of a response."""

    nonce: bytes = b""
    attributes: int = 0
    hmac: bytes = b""

    @classmethod
    def read(cls, source: Reader) -> AuthResponse:
        nonce = read_tpm2b(source, "nonce", MAX_NONCE)
        attributes = source.u8("sessionAttributes")
        return cls(nonce, attributes, read_tpm2b(source, "hmac", MAX_HMAC))

    def write(self, sink: Writer) -> Writer:
        put_tpm2b(sink, self.nonce)
        sink.u8(self.attributes)
        return put_tpm2b(sink, self.hmac)


def _check_header(header: Header, length: int, what: str) -> None:
    if header.tag not in (TpmSt.NO_SESSIONS, TpmSt.SESSIONS):
        raise FormatError(f"{what}: tag {header.tag:#06x} is neither NO_SESSIONS nor SESSIONS")
    if header.size != length:
        raise FormatError(f"{what}: size field {header.size} but {length} bytes given")


@dataclass(frozen=True)
class Command:
    """A parsed command buffer."""

    code: int
    handles: tuple[int, ...] = ()
    sessions: tuple[AuthCommand, ...] = ()
    parameters: bytes = b""

    @classmethod
    def parse(cls, data: bytes, handle_count: int) -> Command:
        """Parse ``data`` as a command with ``handle_count`` handles; strict."""
        header = Header.from_bytes(data)
        _check_header(header, len(data), "TPM2 command")
        source = reader(data, "TPM2 command")
        source.take(HEADER_SIZE, "header")
        handles = tuple(source.u32(f"handle {i + 1}") for i in range(handle_count))
        sessions: tuple[AuthCommand, ...] = ()
        if header.tag == TpmSt.SESSIONS:
            area = reader(source.take(source.u32("authorizationSize"), "authorization area"),
                          "authorization area")
            found = []
            while area.remaining:
                found.append(AuthCommand.read(area))
            if not found or len(found) > MAX_SESSIONS:
                raise FormatError(f"TPM2 command: {len(found)} sessions (1..3 allowed)")
            sessions = tuple(found)
        return cls(header.code, handles, sessions, source.rest())

    def to_bytes(self) -> bytes:
        body = writer()
        for handle in self.handles:
            body.u32(handle)
        if self.sessions:
            area = writer()
            for session in self.sessions:
                session.write(area)
            body.u32(len(area.buffer)).put(area.to_bytes())
        body.put(self.parameters)
        tag = TpmSt.SESSIONS if self.sessions else TpmSt.NO_SESSIONS
        size = HEADER_SIZE + len(body.buffer)
        return Header(tag, size, self.code).to_bytes() + body.to_bytes()


@dataclass(frozen=True)
class Response:
    """A parsed response buffer; ``code`` is the TPM_RC."""

    code: int
    handles: tuple[int, ...] = ()
    parameters: bytes = b""
    sessions: tuple[AuthResponse, ...] = ()

    @classmethod
    def parse(cls, data: bytes, handle_count: int) -> Response:
        """Parse a response to a command with ``handle_count`` response handles."""
        header = Header.from_bytes(data)
        _check_header(header, len(data), "TPM2 response")
        source = reader(data, "TPM2 response")
        source.take(HEADER_SIZE, "header")
        if header.code != 0:
            source.expect_end()
            return cls(header.code)
        handles = tuple(source.u32(f"handle {i + 1}") for i in range(handle_count))
        if header.tag == TpmSt.NO_SESSIONS:
            return cls(0, handles, source.rest())
        parameters = source.take(source.u32("parameterSize"), "parameters")
        found = []
        while source.remaining:
            found.append(AuthResponse.read(source))
        return cls(0, handles, parameters, tuple(found))

    def to_bytes(self, with_sessions: bool) -> bytes:
        """Serialise; ``with_sessions`` says whether the command had an authorization area."""
        if self.code != 0:
            return Header(TpmSt.NO_SESSIONS, HEADER_SIZE, self.code).to_bytes()
        body = writer()
        for handle in self.handles:
            body.u32(handle)
        if with_sessions:
            body.u32(len(self.parameters)).put(self.parameters)
            for session in self.sessions:
                session.write(body)
        else:
            body.put(self.parameters)
        tag = TpmSt.SESSIONS if with_sessions else TpmSt.NO_SESSIONS
        return Header(tag, HEADER_SIZE + len(body.buffer), 0).to_bytes() + body.to_bytes()
