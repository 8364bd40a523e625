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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cvm.errors import FormatError, UsageError
from cvm.formats.tpm2.constants import TpmSt
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, writer
from cvm.wire import Layout, Reader, Writer, u16, u32

T = TypeVar("T")

HEADER_SIZE = 10
MAX_COMMAND_SIZE = 4096
MAX_SESSIONS = 3
MAX_HANDLES = 3
MAX_NONCE = 64
MAX_HMAC = 64
HEADER_LAYOUT = Layout(
    "TPM2 command/response header", HEADER_SIZE,
    [u16("tag", 0x0), u32("size", 0x2), u32("code", 0x6)], endian="big",
)
_HEADER_STRUCT = struct.Struct(">HII")  # the layout above, read and written in one call
_SESSIONS_TAG, _NO_SESSIONS_TAG = int(TpmSt.SESSIONS), int(TpmSt.NO_SESSIONS)
_TAGS = (_NO_SESSIONS_TAG, _SESSIONS_TAG)
# the handle area of 0..3 handles, and the fixed runs around a session's two TPM2Bs
_HANDLE_STRUCTS = tuple(struct.Struct(f">{count}I") for count in range(4))
_U32 = struct.Struct(">I")
_HANDLE_AND_SIZE = struct.Struct(">IH")  # sessionHandle, nonce.size
_ATTRIBUTES_AND_SIZE = struct.Struct(">BH")  # sessionAttributes, hmac.size (or nonce.size)
_U16 = struct.Struct(">H")


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

    def to_bytes(self) -> bytes:
        """The marshalled session: :meth:`write`'s bytes, its errors for what does not fit."""
        return _marshal(self)

    def _pack(self) -> bytes:
        """In two struct runs (struct.error for a value that does not fit)."""
        return b"".join((_HANDLE_AND_SIZE.pack(self.session_handle, len(self.nonce)),
                         self.nonce, _ATTRIBUTES_AND_SIZE.pack(self.attributes, len(self.hmac)),
                         self.hmac))


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

    def to_bytes(self) -> bytes:
        """The marshalled acknowledgement: :meth:`write`'s bytes and errors."""
        return _marshal(self)

    def _pack(self) -> bytes:
        """In two struct runs (struct.error for a value that does not fit)."""
        return b"".join((_U16.pack(len(self.nonce)), self.nonce,
                         _ATTRIBUTES_AND_SIZE.pack(self.attributes, len(self.hmac)), self.hmac))


class _SessionArea(Protocol):
    def _pack(self) -> bytes: ...
    def write(self, sink: Writer) -> Writer: ...


def _marshal(area: _SessionArea) -> bytes:
    """A session area in its struct runs; what does not fit goes through :meth:`write`, whose
    error names the field."""
    try:
        return area._pack()
    except struct.error:
        return area.write(writer()).to_bytes()


def _fast_or_strict(fast: Callable[[bytes, int], T | None], strict: Callable[[bytes, int], T],
                    data: bytes, handle_count: int) -> T:
    """The struct-run parser's result, or the strict parser's where the fast one declines or
    runs past the end (the strict one says what is wrong and where). A negative handle count
    is the caller's error: the fast parsers would read handles from the parameters."""
    if handle_count < 0:
        raise UsageError(f"handle count {handle_count} is negative")
    try:
        parsed = fast(data, handle_count)
    except struct.error:
        parsed = None
    return parsed if parsed is not None else strict(data, handle_count)


def _read_header(data: bytes, what: str) -> tuple[Header, Reader]:
    """The header of the buffer ``data`` (a known tag, the size field its length) and a reader
    of what follows it (the strict parsers' start)."""
    header = Header.from_bytes(data)
    if header.tag not in (TpmSt.NO_SESSIONS, TpmSt.SESSIONS):
        raise FormatError(f"{what}: tag {header.tag:#06x} is neither NO_SESSIONS nor SESSIONS")
    if header.size != len(data):
        raise FormatError(f"{what}: size field {header.size} but {len(data)} bytes given")
    source = reader(data, what)
    source.offset = HEADER_SIZE  # past the header read above
    return header, source


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
        return _fast_or_strict(_parse_command, cls._parse_strict, data, handle_count)

    @classmethod
    def _parse_strict(cls, data: bytes, handle_count: int) -> Command:
        """Field by field, naming what is wrong and where (the fast path's fallback)."""
        header, source = _read_header(data, "TPM2 command")
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
        try:
            handles = _pack_handles(self.handles)
        except (IndexError, struct.error):
            return self._to_bytes_checked()
        if self.sessions:
            area = b"".join([session.to_bytes() for session in self.sessions])
            body = b"".join((handles, _U32.pack(len(area)), area, self.parameters))
            tag = _SESSIONS_TAG
        else:
            body, tag = handles + self.parameters, _NO_SESSIONS_TAG
        return Header(tag, HEADER_SIZE + len(body), self.code).to_bytes() + body

    def _to_bytes_checked(self) -> bytes:
        """Through the checking writer (its error for a value that does not fit)."""
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
        return _fast_or_strict(_parse_response, cls._parse_strict, data, handle_count)

    @classmethod
    def _parse_strict(cls, data: bytes, handle_count: int) -> Response:
        """Field by field, naming what is wrong and where (the fast path's fallback)."""
        header, source = _read_header(data, "TPM2 response")
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
        try:
            handles = _pack_handles(self.handles)
        except (IndexError, struct.error):
            return self._to_bytes_checked(with_sessions)
        if with_sessions:
            body = b"".join((handles, _U32.pack(len(self.parameters)), self.parameters,
                             *[session.to_bytes() for session in self.sessions]))
            tag = _SESSIONS_TAG
        else:
            body, tag = handles + self.parameters, _NO_SESSIONS_TAG
        return Header(tag, HEADER_SIZE + len(body), 0).to_bytes() + body

    def _to_bytes_checked(self, with_sessions: bool) -> bytes:
        """Through the checking writer (its error for a value that does not fit)."""
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


# ---- fast paths: one struct call per fixed run; None sends anything irregular to the strict
# parser, which refuses it with its own message ------------------------------------------------
def _pack_handles(handles: tuple[int, ...]) -> bytes:
    """0 to 3 handles in one call (IndexError for more, struct.error for one out of range)."""
    return _HANDLE_STRUCTS[len(handles)].pack(*handles)


def _parse_command(data: bytes, handle_count: int) -> Command | None:
    length = len(data)
    end = HEADER_SIZE + 4 * handle_count
    if end > length or handle_count > MAX_HANDLES:
        return None
    tag, size, code = _HEADER_STRUCT.unpack_from(data)
    if size != length or tag not in _TAGS:
        return None
    handles = _HANDLE_STRUCTS[handle_count].unpack_from(data, HEADER_SIZE)
    if tag == _NO_SESSIONS_TAG:
        return Command(code, handles, (), bytes(data[end:]))
    if end + 4 > length:
        return None
    area_end = end + 4 + _U32.unpack_from(data, end)[0]
    if area_end > length:
        return None
    offset, found = end + 4, []
    while offset < area_end:
        if offset + 6 > area_end:
            return None
        handle, nonce_size = _HANDLE_AND_SIZE.unpack_from(data, offset)
        tail = _session_tail(data, offset + 6, nonce_size, area_end)
        if tail is None:
            return None
        nonce, attributes, hmac, offset = tail
        found.append(AuthCommand(handle, nonce, attributes, hmac))
    if not found or len(found) > MAX_SESSIONS:
        return None
    return Command(code, handles, tuple(found), bytes(data[area_end:]))


def _session_tail(data: bytes, nonce_start: int, nonce_size: int, limit: int
                  ) -> tuple[bytes, int, bytes, int] | None:
    """A session's nonce (``nonce_size`` bytes from ``nonce_start``), attributes and HMAC, and
    where they end; None where a size is over its maximum or runs past ``limit``."""
    nonce_end = nonce_start + nonce_size
    if nonce_size > MAX_NONCE or nonce_end + 3 > limit:
        return None
    attributes, hmac_size = _ATTRIBUTES_AND_SIZE.unpack_from(data, nonce_end)
    end = nonce_end + 3 + hmac_size
    if hmac_size > MAX_HMAC or end > limit:
        return None
    return bytes(data[nonce_start:nonce_end]), attributes, bytes(data[end - hmac_size : end]), end


def _parse_response(data: bytes, handle_count: int) -> Response | None:
    length = len(data)
    end = HEADER_SIZE + 4 * handle_count
    if length < HEADER_SIZE or handle_count > MAX_HANDLES:
        return None
    tag, size, code = _HEADER_STRUCT.unpack_from(data)
    if size != length or tag not in _TAGS:
        return None
    if code != 0:
        return Response(code) if length == HEADER_SIZE else None
    if end > length:
        return None
    handles = _HANDLE_STRUCTS[handle_count].unpack_from(data, HEADER_SIZE)
    if tag == _NO_SESSIONS_TAG:
        return Response(0, handles, bytes(data[end:]))
    if end + 4 > length:
        return None
    parameters_end = end + 4 + _U32.unpack_from(data, end)[0]
    if parameters_end > length:
        return None
    offset, found = parameters_end, []
    while offset < length:
        if offset + 2 > length:
            return None
        nonce_size = _U16.unpack_from(data, offset)[0]
        tail = _session_tail(data, offset + 2, nonce_size, length)
        if tail is None:
            return None
        nonce, attributes, hmac, offset = tail
        found.append(AuthResponse(nonce, attributes, hmac))
    return Response(0, handles, bytes(data[end + 4 : parameters_end]), tuple(found))
