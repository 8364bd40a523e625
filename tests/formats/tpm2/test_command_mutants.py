"""TPM 2.0 command and response buffers: every refusal names the structure, the field and its
offset (the guest's client and ``cvm tpm`` print it); the error class says which code the
vTPM answers (TruncatedError is TPM_RC_INSUFFICIENT, OversizeError TPM_RC_SIZE); every size
limit is exact; and a well-formed buffer is taken by the struct-run fast path itself, without
the field-by-field parser (the vTPM parses one per command)."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, OversizeError, TruncatedError, UsageError
from cvm.formats.tpm2 import command as command_module
from cvm.formats.tpm2.command import (
    HEADER_SIZE,
    AuthCommand,
    AuthResponse,
    Command,
    Header,
    Response,
    _parse_command,
    _parse_response,
    _session_tail,
)

SESSION = AuthCommand(0x02000000, b"NNN", 0x01, b"HHHHH")
# tag, size, code ‖ handles 0x80000001, 0x40000001 ‖ authorizationSize 17 ‖ the session ‖ "PP"
COMMAND = Command(0x17F, (0x80000001, 0x40000001), (SESSION,), b"PP")
COMMAND_BYTES = bytes.fromhex(
    "8002" "00000029" "0000017f" "80000001" "40000001" "00000011"
    "02000000" "0003" "4e4e4e" "01" "0005" "4848484848" "5050"
)
ACK = AuthResponse(b"NNN", 0x01, b"HHHHH")
# tag, size, code 0 ‖ handle 0x80000002 ‖ parameterSize 2 ‖ "PP" ‖ the acknowledgement
RESPONSE = Response(0, (0x80000002,), b"PP", (ACK,))
RESPONSE_BYTES = bytes.fromhex(
    "8002" "00000021" "00000000" "80000002" "00000002" "5050"
    "0003" "4e4e4e" "01" "0005" "4848484848"
)


def _sized(data: bytes | bytearray) -> bytes:
    """``data`` with its size field made to match its length."""
    buffer = bytearray(data)
    buffer[2:6] = len(buffer).to_bytes(4, "big")
    return bytes(buffer)


def _with_auth_size(size: int) -> bytes:
    buffer = bytearray(COMMAND_BYTES)
    buffer[18:22] = size.to_bytes(4, "big")
    return bytes(buffer)


# ---- the bytes ------------------------------------------------------------------------------
def test_the_command_and_response_bytes_are_the_tpm_layout() -> None:
    assert COMMAND.to_bytes() == COMMAND_BYTES
    assert COMMAND._to_bytes_checked() == COMMAND_BYTES
    assert Command.parse(COMMAND_BYTES, 2) == COMMAND
    assert RESPONSE.to_bytes(True) == RESPONSE_BYTES
    assert RESPONSE._to_bytes_checked(True) == RESPONSE_BYTES
    assert Response.parse(RESPONSE_BYTES, 1) == RESPONSE


def test_a_command_without_sessions_has_the_no_sessions_tag_and_no_authorization_size() -> None:
    command = Command(0x144, (0x40000001,), (), b"xy")
    expected = bytes.fromhex("8001" "00000010" "00000144" "40000001" "7879")
    assert command.to_bytes() == expected
    assert command._to_bytes_checked() == expected
    assert Command.parse(expected, 1) == command


def test_a_response_without_sessions_has_no_parameter_size() -> None:
    response = Response(0, (0x80000002,), b"xy")
    expected = bytes.fromhex("8001" "00000010" "00000000" "80000002" "7879")
    assert response.to_bytes(False) == expected
    assert response._to_bytes_checked(False) == expected
    assert Response.parse(expected, 1) == response


def test_a_failed_response_is_its_header_alone_whatever_it_carries() -> None:
    response = Response(0x101, (0x80000002,), b"xy", (ACK,))
    for with_sessions in (False, True):
        assert response.to_bytes(with_sessions) == bytes.fromhex("8001" "0000000a" "00000101")
    assert Response.parse(bytes.fromhex("8001" "0000000a" "00000101"), 3) == Response(0x101)


def test_a_response_with_sessions_and_no_acknowledgement_keeps_its_parameter_size() -> None:
    response = Response(0, (), b"xy")
    expected = bytes.fromhex("8002" "00000010" "00000000" "00000002" "7879")
    assert response.to_bytes(True) == expected
    assert response._to_bytes_checked(True) == expected
    assert Response.parse(expected, 0) == response


# ---- the header -----------------------------------------------------------------------------
@pytest.mark.parametrize(("parse", "what", "data"), [
    (Command.parse, "TPM2 command", COMMAND_BYTES),
    (Response.parse, "TPM2 response", RESPONSE_BYTES),
])
def test_a_tag_other_than_sessions_or_no_sessions_is_refused(parse: object, what: str,
                                                             data: bytes) -> None:
    for tag in (0x8000, 0x8003, 0x00C4):
        bad = tag.to_bytes(2, "big") + data[2:]
        with pytest.raises(FormatError) as caught:
            parse(bad, 1)  # type: ignore[operator]
        assert type(caught.value) is FormatError
        assert str(caught.value) == f"{what}: tag {tag:#06x} is neither NO_SESSIONS nor SESSIONS"


@pytest.mark.parametrize(("parse", "what", "data"), [
    (Command.parse, "TPM2 command", COMMAND_BYTES),
    (Response.parse, "TPM2 response", RESPONSE_BYTES),
])
def test_a_size_field_other_than_the_length_is_refused(parse: object, what: str,
                                                       data: bytes) -> None:
    for size in (len(data) - 1, len(data) + 1, 0):
        bad = data[:2] + size.to_bytes(4, "big") + data[6:]
        with pytest.raises(FormatError) as caught:
            parse(bad, 1)  # type: ignore[operator]
        assert type(caught.value) is FormatError
        assert str(caught.value) == f"{what}: size field {size} but {len(data)} bytes given"


def test_a_header_alone_is_read_from_exactly_ten_bytes() -> None:
    assert Header.from_bytes(bytes.fromhex("8001" "0000000a" "00000101")) == Header(
        0x8001, 10, 0x101)


@pytest.mark.parametrize(("header", "field", "value", "width"), [
    (Header(0x10000, 10, 0), "tag", 0x10000, 2),
    (Header(0x8001, 1 << 32, 0), "size", 1 << 32, 4),
    (Header(0x8001, 10, -1), "code", -1, 4),
])
def test_a_header_field_out_of_range_is_refused_by_name(header: Header, field: str, value: int,
                                                         width: int) -> None:
    with pytest.raises(UsageError) as caught:
        header.to_bytes()
    assert str(caught.value) == (
        f"TPM2 command/response header.{field}: {value} does not fit in {width} bytes")


# ---- truncation: every field named, with its offset -----------------------------------------
def _short(what: str, field: str, size: int, offset: int, left: int) -> str:
    return f"{what}: {field} needs {size} bytes at offset {offset:#x}, only {left} left"


@pytest.mark.parametrize(("cut", "message"), [
    (10, _short("TPM2 command", "handle 1", 4, 0xA, 0)),
    (13, _short("TPM2 command", "handle 1", 4, 0xA, 3)),
    (14, _short("TPM2 command", "handle 2", 4, 0xE, 0)),
    (18, _short("TPM2 command", "authorizationSize", 4, 0x12, 0)),
    (21, _short("TPM2 command", "authorizationSize", 4, 0x12, 3)),
    (22, _short("TPM2 command", "authorization area", 17, 0x16, 0)),
    (38, _short("TPM2 command", "authorization area", 17, 0x16, 16)),
])
def test_a_cut_command_is_refused_naming_the_field(cut: int, message: str) -> None:
    data = _sized(COMMAND_BYTES[:cut])
    assert _parse_command(data, 2) is None
    with pytest.raises(TruncatedError) as caught:
        Command.parse(data, 2)
    assert str(caught.value) == message


def _area(field: str, size: int, offset: int, left: int) -> str:
    return _short("authorization area", field, size, offset, left)


@pytest.mark.parametrize(("auth_size", "message"), [
    (1, _area("sessionHandle", 4, 0, 1)),
    (3, _area("sessionHandle", 4, 0, 3)),
    (4, _area("nonce.size", 2, 4, 0)),
    (5, _area("nonce.size", 2, 4, 1)),
    (6, _area("nonce", 3, 6, 0)),
    (8, _area("nonce", 3, 6, 2)),
    (9, _area("sessionAttributes", 1, 9, 0)),
    (10, _area("hmac.size", 2, 0xA, 0)),
    (11, _area("hmac.size", 2, 0xA, 1)),
    (12, _area("hmac", 5, 0xC, 0)),
    (16, _area("hmac", 5, 0xC, 4)),
    # a second session cut after a whole first one
    (18, _area("sessionHandle", 4, 0x11, 1)),
])
def test_an_authorization_size_that_cuts_a_session_is_refused_naming_its_field(
        auth_size: int, message: str) -> None:
    data = _with_auth_size(auth_size)
    assert _parse_command(data, 2) is None
    with pytest.raises(TruncatedError) as caught:
        Command.parse(data, 2)
    assert str(caught.value) == message


def test_an_authorization_size_one_past_the_buffer_is_refused() -> None:
    data = _with_auth_size(20)  # the area would end one byte after the buffer
    assert _parse_command(data, 2) is None
    with pytest.raises(TruncatedError) as caught:
        Command.parse(data, 2)
    assert str(caught.value) == _short("TPM2 command", "authorization area", 20, 0x16, 19)


def test_an_authorization_area_that_ends_at_the_buffer_is_taken_by_the_fast_path() -> None:
    data = _sized(COMMAND_BYTES[:-2])  # no parameters: the area reaches the end exactly
    expected = Command(0x17F, COMMAND.handles, (SESSION,), b"")
    assert _parse_command(data, 2) == expected
    assert Command.parse(data, 2) == expected


def test_an_empty_authorization_area_is_refused_as_no_session() -> None:
    data = _with_auth_size(0)
    assert _parse_command(data, 2) is None
    with pytest.raises(FormatError) as caught:
        Command.parse(data, 2)
    assert str(caught.value) == "TPM2 command: 0 sessions (1..3 allowed)"


def test_four_sessions_are_refused_and_three_taken() -> None:
    minimal = AuthCommand(0x40000009)
    three = Command(0x17F, (), (minimal,) * 3)
    assert _parse_command(three.to_bytes(), 0) == three
    data = Command(0x17F, (), (minimal,) * 4).to_bytes()
    assert _parse_command(data, 0) is None
    with pytest.raises(FormatError) as caught:
        Command.parse(data, 0)
    assert str(caught.value) == "TPM2 command: 4 sessions (1..3 allowed)"


@pytest.mark.parametrize(("field", "offset"), [("nonce", 0x1C), ("hmac", 0x1F)])
def test_a_session_value_over_64_bytes_is_refused_as_oversize(field: str, offset: int) -> None:
    session = AuthCommand(0x40000009, bytes(65) if field == "nonce" else b"",
                          0x01, bytes(65) if field == "hmac" else b"")
    data = Command(0x17F, (1, 2), (session,), b"").to_bytes()
    assert _parse_command(data, 2) is None
    with pytest.raises(OversizeError) as caught:
        Command.parse(data, 2)
    # offsets within the authorization area, which starts at 0x16
    inner = offset - 0x16
    assert str(caught.value) == (
        f"authorization area: {field}.size 65 exceeds the maximum 64 (at offset {inner:#x})")


def test_a_minimal_session_is_taken_by_the_fast_path() -> None:
    """Nine bytes: a handle, an empty nonce, the attributes and an empty HMAC."""
    command = Command(0x17F, (), (AuthCommand(0x40000009),), b"")
    data = command.to_bytes()
    assert len(data) == HEADER_SIZE + 4 + 9
    assert _parse_command(data, 0) == command


def test_sessions_with_64_byte_values_that_fill_the_area_are_taken_by_the_fast_path() -> None:
    session = AuthCommand(0x02000001, bytes(range(64)), 0x21, bytes(range(64, 128)))
    for count in (1, 2, 3):
        command = Command(0x17F, (7,), (session,) * count, b"")
        assert _parse_command(command.to_bytes(), 1) == command


# ---- responses ------------------------------------------------------------------------------
@pytest.mark.parametrize(("cut", "message"), [
    (10, _short("TPM2 response", "handle 1", 4, 0xA, 0)),
    (14, _short("TPM2 response", "parameterSize", 4, 0xE, 0)),
    (17, _short("TPM2 response", "parameterSize", 4, 0xE, 3)),
    (18, _short("TPM2 response", "parameters", 2, 0x12, 0)),
    (19, _short("TPM2 response", "parameters", 2, 0x12, 1)),
    (21, _short("TPM2 response", "nonce.size", 2, 0x14, 1)),
    (22, _short("TPM2 response", "nonce", 3, 0x16, 0)),
    (24, _short("TPM2 response", "nonce", 3, 0x16, 2)),
    (25, _short("TPM2 response", "sessionAttributes", 1, 0x19, 0)),
    (26, _short("TPM2 response", "hmac.size", 2, 0x1A, 0)),
    (27, _short("TPM2 response", "hmac.size", 2, 0x1A, 1)),
    (28, _short("TPM2 response", "hmac", 5, 0x1C, 0)),
    (32, _short("TPM2 response", "hmac", 5, 0x1C, 4)),
])
def test_a_cut_response_is_refused_naming_the_field(cut: int, message: str) -> None:
    data = _sized(RESPONSE_BYTES[:cut])
    assert _parse_response(data, 1) is None
    with pytest.raises(TruncatedError) as caught:
        Response.parse(data, 1)
    assert str(caught.value) == message


def test_a_response_cut_between_acknowledgements_is_taken_without_the_missing_one() -> None:
    data = _sized(RESPONSE_BYTES[:20])
    expected = Response(0, (0x80000002,), b"PP", ())
    assert _parse_response(data, 1) == expected
    assert Response.parse(data, 1) == expected


def test_a_failed_response_with_trailing_bytes_is_refused() -> None:
    data = bytes.fromhex("8001" "0000000c" "00000101" "0000")
    assert _parse_response(data, 0) is None
    with pytest.raises(FormatError) as caught:
        Response.parse(data, 0)
    assert str(caught.value) == "TPM2 response: 2 unexpected trailing bytes at offset 0xa"


@pytest.mark.parametrize(("field", "offset"), [("nonce", 0x14), ("hmac", 0x17)])
def test_an_acknowledgement_value_over_64_bytes_is_refused_as_oversize(field: str,
                                                                       offset: int) -> None:
    ack = AuthResponse(bytes(65) if field == "nonce" else b"", 0x01,
                       bytes(65) if field == "hmac" else b"")
    data = Response(0, (), b"", (ack,)).to_bytes(True)
    assert _parse_response(data, 0) is None
    with pytest.raises(OversizeError) as caught:
        Response.parse(data, 0)
    # offsets after the size: header 10, parameterSize 4, nonce.size 2 (and nonce, attributes,
    # hmac.size for the HMAC)
    assert str(caught.value) == (
        f"TPM2 response: {field}.size 65 exceeds the maximum 64 (at offset {offset - 4:#x})")


def test_a_response_with_64_byte_values_is_taken_by_the_fast_path() -> None:
    ack = AuthResponse(bytes(range(64)), 0x21, bytes(range(64, 128)))
    response = Response(0, (), b"", (ack, ack))
    assert _parse_response(response.to_bytes(True), 0) == response


def test_a_response_shorter_than_a_header_is_refused_naming_the_header() -> None:
    for length in (0, 9):
        assert _parse_response(bytes(length), 0) is None
        with pytest.raises(FormatError) as caught:
            Response.parse(bytes(length), 0)
        assert str(caught.value) == (
            f"TPM2 command/response header: expected 0xa bytes, got {length:#x}")


# ---- the session tail's bounds --------------------------------------------------------------
def test_the_session_tail_takes_values_that_end_exactly_at_the_limit() -> None:
    data = b"\x00\x02ab\x01\x00\x03xyz"
    assert _session_tail(data, 2, 2, len(data)) == (b"ab", 1, b"xyz", len(data))
    assert _session_tail(data, 2, 2, len(data) - 1) is None  # the HMAC one past the limit
    head = b"\x00\x02ab\x01\x00\x00"
    assert _session_tail(head, 2, 2, len(head)) == (b"ab", 1, b"", len(head))
    assert _session_tail(head, 2, 2, len(head) - 1) is None  # hmac.size one past the limit


def test_the_session_tail_refuses_a_size_over_64() -> None:
    data = b"\x00\x41" + bytes(65) + b"\x01\x00\x00"
    assert _session_tail(data, 2, 65, len(data)) is None
    data = b"\x00\x40" + bytes(64) + b"\x01\x00\x00"
    assert _session_tail(data, 2, 64, len(data)) == (bytes(64), 1, b"", len(data))
    data = b"\x00\x00\x01\x00\x41" + bytes(65)
    assert _session_tail(data, 2, 0, len(data)) is None
    data = b"\x00\x00\x01\x00\x40" + bytes(64)
    assert _session_tail(data, 2, 0, len(data)) == (b"", 1, bytes(64), len(data))


# ---- the fast paths are the ones taken ------------------------------------------------------
def _refuse(*args: object) -> object:
    raise AssertionError("the field-by-field path was taken for a well-formed buffer")


def test_a_well_formed_command_and_response_never_reach_the_strict_parsers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Command, "_parse_strict", classmethod(_refuse))
    monkeypatch.setattr(Response, "_parse_strict", classmethod(_refuse))
    assert Command.parse(COMMAND_BYTES, 2) == COMMAND
    assert Response.parse(RESPONSE_BYTES, 1) == RESPONSE
    plain = Command(0x144, (1,), (), b"x")
    assert Command.parse(plain.to_bytes(), 1) == plain
    failed = Response(0x101)
    assert Response.parse(failed.to_bytes(False), 0) == failed
    bare = Response(0, (0x80000002,))  # a parameterSize of 0 and no acknowledgement
    assert Response.parse(bare.to_bytes(True), 1) == bare


def test_values_that_fit_are_written_without_the_checking_writers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command_module.HEADER_LAYOUT, "pack", _refuse)
    monkeypatch.setattr(command_module, "writer", _refuse)
    monkeypatch.setattr(Command, "_to_bytes_checked", _refuse)
    monkeypatch.setattr(Response, "_to_bytes_checked", _refuse)
    assert COMMAND.to_bytes() == COMMAND_BYTES
    assert RESPONSE.to_bytes(True) == RESPONSE_BYTES
    assert SESSION.to_bytes() == COMMAND_BYTES[22:39]
    assert ACK.to_bytes() == RESPONSE_BYTES[20:]
    assert Header(0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF).to_bytes() == b"\xff" * 10


def test_the_checking_writers_name_the_value_that_does_not_fit() -> None:
    with pytest.raises(UsageError) as caught:
        Command(0x17F, (1 << 32,)).to_bytes()
    assert str(caught.value) == f"value {1 << 32} does not fit in 4 bytes"
    with pytest.raises(UsageError):
        Response(0, (-1,)).to_bytes(False)
    with pytest.raises(UsageError) as caught:
        AuthCommand(0x40000009, b"", 0x100).to_bytes()
    assert str(caught.value) == "value 256 does not fit in 1 bytes"
    with pytest.raises(UsageError):
        AuthResponse(b"", -1).to_bytes()


def test_a_well_formed_header_is_read_without_the_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten bytes or more: one struct call (the layout only words the refusal of fewer)."""
    monkeypatch.setattr(command_module.HEADER_LAYOUT, "unpack", _refuse)
    assert Header.from_bytes(bytes.fromhex("8001" "0000000a" "00000101")) == Header(
        0x8001, 10, 0x101)


# ---- the fast paths decline, never raise, and hand over to the strict parsers ----------------
def _fast_raising(data: bytes, handle_count: int) -> Command | None:
    raise command_module.struct.error("ran past the end")


def test_a_fast_parser_that_runs_past_the_end_hands_over_to_the_strict_parser() -> None:
    expected = Command(0x144)

    def strict(data: bytes, handle_count: int) -> Command:
        assert (data, handle_count) == (b"buffer", 2)
        return expected

    assert command_module._fast_or_strict(_fast_raising, strict, b"buffer", 2) is expected


@pytest.mark.parametrize("parse", [Command.parse, Response.parse])
def test_a_negative_handle_count_is_refused(parse: object) -> None:
    """The fast parsers would otherwise take handles from the parameters."""
    data = Command(0x144, (), (), bytes(range(16))).to_bytes()
    with pytest.raises(UsageError) as caught:
        parse(data, -1)  # type: ignore[operator]
    assert str(caught.value) == "handle count -1 is negative"


@pytest.mark.parametrize("area", [1, 3, 5, 6, 8, 11])
def test_an_authorization_area_cut_at_the_end_of_the_buffer_is_declined(area: int) -> None:
    """The area is the last thing in the buffer and ends inside its only session: the fast
    parser declines (it reads nothing past the end), the strict one names the field."""
    data = _sized(COMMAND_BYTES[:18] + area.to_bytes(4, "big") + COMMAND_BYTES[22:22 + area])
    assert _parse_command(data, 2) is None
    with pytest.raises(TruncatedError, match=r"^authorization area: "):
        Command.parse(data, 2)


def test_every_cut_is_declined_or_parsed_as_the_strict_parser_parses_it() -> None:
    """Each prefix of a command and of a response, its size field made to match, with each
    handle count: the fast parser itself reads nothing past the end (no struct.error) and
    takes a prefix only where the strict parser takes it with the same result."""
    for data, fast, strict in ((COMMAND_BYTES, _parse_command, Command._parse_strict),
                               (RESPONSE_BYTES, _parse_response, Response._parse_strict)):
        for cut in range(len(data)):
            prefix = _sized(data[:cut]) if cut >= 6 else data[:cut]
            for count in range(4):
                parsed = fast(prefix, count)  # type: ignore[operator]
                if parsed is not None:
                    assert parsed == strict(prefix, count)  # type: ignore[operator]


def test_the_session_tail_reads_nothing_past_the_end_of_the_buffer() -> None:
    assert _session_tail(b"\x00\x02ab\x01\x00", 2, 2, 6) is None  # hmac.size cut by the end
    assert _session_tail(b"\x00\x02ab\x01", 2, 2, 5) is None
    assert _session_tail(b"\x00\x02ab", 2, 2, 4) is None


def test_a_command_with_four_handles_and_no_session_keeps_the_no_sessions_tag() -> None:
    command = Command(0x17F, (1, 2, 3, 4), (), b"p")
    data = command.to_bytes()
    assert data[:2] == b"\x80\x01"
    assert data == command._to_bytes_checked()
    assert Command.parse(data, 4) == command


def test_three_sessions_are_taken_by_the_strict_parser_too() -> None:
    """Four handles go field by field: three sessions are allowed there as well."""
    command = Command(0x17F, (1, 2, 3, 4), (AuthCommand(0x40000009),) * 3, b"p")
    data = command.to_bytes()
    assert _parse_command(data, 4) is None
    assert Command.parse(data, 4) == command
    assert Command._parse_strict(data, 4) == command
    four = Command(0x17F, (1, 2, 3, 4), (AuthCommand(0x40000009),) * 4).to_bytes()
    with pytest.raises(FormatError, match=r"^TPM2 command: 4 sessions \(1..3 allowed\)$"):
        Command.parse(four, 4)


def test_a_response_with_four_handles_and_acknowledgements_goes_field_by_field() -> None:
    response = Response(0, (1, 2, 3, 4), b"pp", (ACK, ACK))
    data = response.to_bytes(True)
    assert _parse_response(data, 4) is None
    assert Response.parse(data, 4) == response
