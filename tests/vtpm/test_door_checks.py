"""The vTPM's command door, check by check: the command table's rows as :func:`register`
builds them, the shape of every error response (TPM_ST_NO_SESSIONS, ten bytes, whatever the
command carried), and the response codes of an authorization area that does not parse, of a
missing authorization, of a handler that leaves its parameters unchecked and of data that does
not unmarshal after the parameters were read."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from cvm.errors import FormatError, InternalError, OversizeError, TruncatedError
from cvm.formats.tpm2.constants import TpmCc, TpmRh, TpmSt
from cvm.formats.tpm2.response_code import RC_P, TpmRc, for_handle
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm import dispatch
from cvm.vtpm.dispatch import AuthRole, Call, CommandSpec, Result, register
from cvm.vtpm.engine import Tpm

VENDOR_CODE = 0x20000001


def _nothing(tpm: Tpm, call: Call) -> Result:
    call.done()
    return Result()


def test_register_builds_the_row_of_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    table: dict[int, CommandSpec] = {}
    monkeypatch.setattr(dispatch, "COMMANDS", table)
    register(VENDOR_CODE, _nothing)
    assert table[VENDOR_CODE] == CommandSpec(VENDOR_CODE, _nothing, 0, (), 0, ())
    register(VENDOR_CODE + 1, _nothing, handles=3, auth=(None, AuthRole.ADMIN),
             response_handles=1)
    assert table[VENDOR_CODE + 1] == CommandSpec(
        VENDOR_CODE + 1, _nothing, 3, (None, AuthRole.ADMIN, None), 1, ((1, AuthRole.ADMIN),))
    register(VENDOR_CODE + 2, _nothing, handles=2, auth=(AuthRole.USER, AuthRole.ADMIN))
    assert table[VENDOR_CODE + 2].authorized == ((0, AuthRole.USER), (1, AuthRole.ADMIN))
    with pytest.raises(InternalError) as refused:
        register(VENDOR_CODE, _nothing)
    assert str(refused.value) == f"command {VENDOR_CODE:#x} registered twice"
    assert table[VENDOR_CODE].handles == 0


def _command(code: int, body: bytes = b"", tag: int = TpmSt.NO_SESSIONS) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def _error(response: bytes) -> int:
    """The response code of an error response, after checking its shape."""
    tag, size, code = struct.unpack(">HII", response)
    assert (tag, size) == (TpmSt.NO_SESSIONS, 10)
    return code


def _password(handle: int = TpmRh.PW) -> bytes:
    session = struct.pack(">IH", handle, 0) + b"\x01" + struct.pack(">H", 0)
    return struct.pack(">I", len(session)) + session


def test_a_malformed_authorization_area_is_authsize(client: TpmClient, tpm: Tpm) -> None:
    auth = _password()
    too_long = struct.pack(">I", len(auth) + 4) + auth[4:]
    body = struct.pack(">I", TpmRh.OWNER) + too_long
    response = tpm.execute(_command(TpmCc.HIERARCHY_CHANGE_AUTH, body, TpmSt.SESSIONS))
    assert _error(response) == TpmRc.AUTHSIZE


def test_a_missing_authorization_is_auth_missing(client: TpmClient, tpm: Tpm) -> None:
    body = struct.pack(">IH", TpmRh.OWNER, 0)
    response = tpm.execute(_command(TpmCc.HIERARCHY_CHANGE_AUTH, body))
    assert _error(response) == TpmRc.AUTH_MISSING


def test_an_error_to_a_command_with_sessions_carries_none(client: TpmClient, tpm: Tpm) -> None:
    body = struct.pack(">I", TpmRh.OWNER) + _password() + struct.pack(">H", 65) + b"a" * 65
    response = tpm.execute(_command(TpmCc.HIERARCHY_CHANGE_AUTH, body, TpmSt.SESSIONS))
    assert _error(response) == TpmRc.SIZE | RC_P | 0x100


def _replace(monkeypatch: pytest.MonkeyPatch, handler: Callable[[Tpm, Call], Result]) -> None:
    spec = dispatch.COMMANDS[TpmCc.SELF_TEST]
    monkeypatch.setitem(dispatch.COMMANDS, TpmCc.SELF_TEST,
                        CommandSpec(spec.code, handler, spec.handles, spec.auth,
                                    spec.response_handles, spec.authorized))


def test_a_handler_that_leaves_its_parameters_unchecked_is_a_failure(
        client: TpmClient, tpm: Tpm, monkeypatch: pytest.MonkeyPatch) -> None:
    _replace(monkeypatch, lambda tpm, call: Result())
    assert _error(tpm.execute(_command(TpmCc.SELF_TEST, b"\x01"))) == TpmRc.FAILURE


@pytest.mark.parametrize(("raised", "code"), [
    (TruncatedError("key: data needs 4 bytes at offset 0x0, only 1 left"),
     TpmRc.INSUFFICIENT | RC_P),
    (FormatError("key: data needs a point on the curve"), TpmRc.VALUE | RC_P),  # by class
    (OversizeError("key: data.size 9 exceeds the maximum 8"), TpmRc.VALUE | RC_P),
    (KeyError("slot"), TpmRc.FAILURE),
    (ValueError("bad"), TpmRc.FAILURE),
])
def test_what_breaks_after_the_parameters_were_read_is_answered_without_a_number(
        client: TpmClient, tpm: Tpm, monkeypatch: pytest.MonkeyPatch,
        raised: Exception, code: int) -> None:
    def breaks(tpm: Tpm, call: Call) -> Result:
        call.params.u8("fullTest")
        call.done()
        raise raised

    _replace(monkeypatch, breaks)
    assert _error(tpm.execute(_command(TpmCc.SELF_TEST, b"\x01"))) == code


def test_a_new_engine_has_nothing_unsaved_and_runs_at_locality_zero(tpm: Tpm) -> None:
    assert tpm.changed is False and tpm.locality == 0
    assert (tpm.null_seed, tpm.null_proof, tpm.context_counter) == (b"", b"", 0)
    TpmClient(tpm.execute).startup()
    assert tpm.locality == 0
    tpm.execute(_command(TpmCc.GET_RANDOM, b"\x00\x08"), 3)
    assert tpm.locality == 3


@pytest.mark.parametrize(("code", "handle", "rest", "expected"), [
    (TpmCc.PCR_EXTEND, 24, _password() + struct.pack(">I", 0), TpmRc.VALUE),
    (TpmCc.HIERARCHY_CHANGE_AUTH, 0x40000099, _password() + b"\x00\x00", TpmRc.HANDLE),
    (TpmCc.NV_READ, 0x01500099, struct.pack(">I", 0x01500099) + _password() + bytes(4),
     TpmRc.HANDLE),
    (TpmCc.READ_PUBLIC, 0x80000005, None, TpmRc.HANDLE),
    (TpmCc.READ_PUBLIC, 0x81000099, None, TpmRc.HANDLE),
    (TpmCc.POLICY_GET_DIGEST, 0x03000099, None, TpmRc.HANDLE),
    (TpmCc.POLICY_GET_DIGEST, 0x02000099, None, TpmRc.HANDLE),
], ids=["PCR 24", "permanent", "NV index", "transient", "persistent", "policy session",
        "HMAC session"])
def test_a_handle_that_is_not_there_is_refused_at_the_door_by_its_number(
        client: TpmClient, tpm: Tpm, code: int, handle: int, rest: bytes | None,
        expected: int) -> None:
    """Rest is what follows the first handle: with an authorization area, or None (no
    sessions, no parameters)."""
    tag = TpmSt.NO_SESSIONS if rest is None else TpmSt.SESSIONS
    body = struct.pack(">I", handle) + (rest or b"")
    assert _error(tpm.execute(_command(code, body, tag))) == for_handle(expected, 1)
