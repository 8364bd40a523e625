"""The command/response buffers' fast paths agree with the strict field-by-field parsers: the
same result for every buffer the strict parser accepts, and a refusal (the strict parser's
own error) for every buffer it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import CvmError
from cvm.formats.tpm2.command import (
    AuthCommand,
    AuthResponse,
    Command,
    Response,
    _pack_handles,
    _parse_command,
    _parse_response,
)
from cvm.formats.tpm2.tpm2b import writer

# sizes around the 64-byte maximum of a nonce or HMAC
_value = st.one_of(st.binary(max_size=8), st.binary(min_size=62, max_size=66))
_sessions = st.lists(st.builds(AuthCommand, st.integers(0, 0xFFFFFFFF), _value,
                               st.integers(0, 0xFF), _value), max_size=4)
_acks = st.lists(st.builds(AuthResponse, _value, st.integers(0, 0xFF), _value), max_size=3)
_handles = st.lists(st.integers(0, 0xFFFFFFFF), max_size=3).map(tuple)


def _mutated(data: bytes, cuts: list[tuple[int, int]]) -> bytes:
    buffer = bytearray(data)
    for position, value in cuts:
        if buffer:
            buffer[position % len(buffer)] = value
    return bytes(buffer)


def _strict(parse: object, *args: object) -> object:
    try:
        return parse(*args)  # type: ignore[operator]
    except CvmError as error:
        return type(error)


_edits = st.lists(st.tuples(st.integers(0, 500), st.integers(0, 0xFF)), max_size=3)


@given(_handles, _sessions, st.binary(max_size=40), _edits, st.integers(0, 3), st.integers(0, 9))
def test_command_parse_agrees_with_the_strict_parser(
        handles: tuple[int, ...], sessions: list[AuthCommand], parameters: bytes,
        edits: list[tuple[int, int]], count: int, cut: int) -> None:
    command = Command(0x17F, handles, tuple(sessions), parameters)
    try:
        data = command.to_bytes()
    except CvmError:
        return
    for candidate, handle_count in ((data, len(handles)), (data, count),
                                    (_mutated(data, edits), count),
                                    (data[: len(data) - cut], len(handles))):
        assert (_strict(Command.parse, candidate, handle_count)
                == _strict(Command._parse_strict, candidate, handle_count))
    if len(sessions) <= 3 and all(len(s.nonce) <= 64 and len(s.hmac) <= 64 for s in sessions):
        assert Command.parse(data, len(handles)) == command
        assert _parse_command(data, len(handles)) == command  # the fast path takes it itself


@given(_handles, _acks, st.binary(max_size=40), st.booleans(), _edits, st.integers(0, 3),
       st.integers(0, 9), st.integers(0, 0xFFF))
def test_response_parse_agrees_with_the_strict_parser(
        handles: tuple[int, ...], acks: list[AuthResponse], parameters: bytes, sessions: bool,
        edits: list[tuple[int, int]], count: int, cut: int, code: int) -> None:
    response = Response(0, handles, parameters, tuple(acks) if sessions else ())
    try:
        data = response.to_bytes(sessions)
    except CvmError:
        return
    failure = Response(code).to_bytes(sessions)
    for candidate, handle_count in ((data, len(handles)), (data, count),
                                    (_mutated(data, edits), count),
                                    (data[: len(data) - cut], len(handles)), (failure, count),
                                    (failure + b"\x00", count)):
        assert (_strict(Response.parse, candidate, handle_count)
                == _strict(Response._parse_strict, candidate, handle_count))
    if not sessions or all(len(a.nonce) <= 64 and len(a.hmac) <= 64 for a in acks):
        expected = Response(0, handles, parameters, tuple(acks) if sessions else ())
        assert _parse_response(data, len(handles)) == expected  # the fast path takes it
    if code:
        assert _parse_response(failure, count) == Response(code)
        assert _parse_response(failure + b"\x00", count) is None


@given(st.lists(st.integers(-1, 1 << 33), max_size=4).map(tuple), _sessions,
       st.binary(max_size=40), st.integers(-1, 0x1FF))
def test_to_bytes_agrees_with_the_checking_writer(
        handles: tuple[int, ...], sessions: list[AuthCommand], parameters: bytes,
        attributes: int) -> None:
    sessions = [*sessions, AuthCommand(1, b"", attributes)]
    command = Command(0x17F, handles, tuple(sessions), parameters)
    assert _strict(command.to_bytes) == _strict(command._to_bytes_checked)
    response = Response(0, handles, parameters,
                        (AuthResponse(b"n", attributes % 0x100, b"h"),))
    for with_sessions in (False, True):
        assert (_strict(response.to_bytes, with_sessions)
                == _strict(response._to_bytes_checked, with_sessions))


def test_a_nonce_over_the_tpm2b_maximum_is_refused_by_both_writers() -> None:
    session = AuthCommand(1, bytes(0x10000))
    with pytest.raises(CvmError):
        session.to_bytes()
    with pytest.raises(CvmError):
        AuthResponse(bytes(0x10000)).to_bytes()


def _session(nonce: int = 0, hmac: int = 0) -> AuthCommand:
    return AuthCommand(0x40000009, bytes(nonce), 1, bytes(hmac))


@pytest.mark.parametrize(("sessions", "accepted"), [
    ((_session(64, 64),), True), ((_session(65),), False), ((_session(hmac=65),), False),
    ((_session(),) * 3, True), ((_session(),) * 4, False),
])
def test_command_session_bounds_on_both_paths(sessions: tuple[AuthCommand, ...],
                                              accepted: bool) -> None:
    command = Command(0x17F, (7,), sessions, b"p")
    data = command.to_bytes()
    if accepted:
        assert Command.parse(data, 1) == command
        assert _parse_command(data, 1) == command
    else:
        assert _parse_command(data, 1) is None
        with pytest.raises(CvmError, match=r"exceeds the maximum 64|4 sessions"):
            Command.parse(data, 1)


def test_command_with_an_empty_authorization_area_is_refused() -> None:
    data = bytearray(Command(0x17F, (7,), (_session(),)).to_bytes())
    data[14:18] = bytes(4)  # authorizationSize 0, the session becomes parameters
    with pytest.raises(CvmError, match="0 sessions"):
        Command.parse(bytes(data), 1)


@pytest.mark.parametrize(("ack", "accepted"), [
    (AuthResponse(bytes(64), 1, bytes(64)), True), (AuthResponse(bytes(65)), False),
    (AuthResponse(b"", 1, bytes(65)), False),
])
def test_response_session_bounds_on_both_paths(ack: AuthResponse, accepted: bool) -> None:
    response = Response(0, (), b"p", (ack,))
    data = response.to_bytes(True)
    if accepted:
        assert Response.parse(data, 0) == response
        assert _parse_response(data, 0) == response
    else:
        assert _parse_response(data, 0) is None
        with pytest.raises(CvmError, match="exceeds the maximum 64"):
            Response.parse(data, 0)


@given(_handles, _sessions, _acks)
def test_the_struct_runs_write_what_the_checking_writer_writes(
        handles: tuple[int, ...], sessions: list[AuthCommand], acks: list[AuthResponse]) -> None:
    """The fast writers themselves (not their fallback) for values that fit."""
    assert _pack_handles(handles) == b"".join(h.to_bytes(4, "big") for h in handles)
    for session in sessions:
        assert session._pack() == session.write(writer()).to_bytes()
    for ack in acks:
        assert ack._pack() == ack.write(writer()).to_bytes()


def test_every_cut_and_shortened_size_is_refused_as_the_strict_parser_refuses_it() -> None:
    """Each prefix of a command and a response with sessions, its size field made to match:
    the strict parser's refusal (never an exception of the fast path's own)."""
    sessions = (_session(3, 5), _session(0, 2))
    command = Command(0x17F, (7, 8), sessions, b"").to_bytes()
    response = Response(0, (9,), b"", (AuthResponse(b"n", 1, b"hm"),) * 2).to_bytes(True)
    for data, parse, strict in ((command, Command.parse, Command._parse_strict),
                                (response, Response.parse, Response._parse_strict)):
        for cut in range(len(data)):
            short = bytearray(data[:cut])
            if cut >= 6:
                short[2:6] = cut.to_bytes(4, "big")
            for count in range(4):
                assert _strict(parse, bytes(short), count) == _strict(strict, bytes(short),
                                                                      count)


def test_four_handles_are_left_to_the_strict_parsers() -> None:
    """More handles than any command has: parsed field by field, not by the fast path."""
    command = Command(0x17F, (1, 2, 3, 4), (_session(),), b"p")
    data = command._to_bytes_checked()
    assert command.to_bytes() == data
    assert _parse_command(data, 4) is None and Command.parse(data, 4) == command
    response = Response(0, (1, 2, 3, 4), b"p")
    data = response._to_bytes_checked(False)
    assert response.to_bytes(False) == data
    assert _parse_response(data, 4) is None and Response.parse(data, 4) == response
