"""Commands that do not unmarshal: the response code names the handle or parameter.

TCG "TPM 2.0 Library, Part 1", revision 1.59, section 18.7 and the reference's command
dispatcher: a handle area that ends inside a handle is TPM_RC_INSUFFICIENT for that handle; a
parameter is TPM_RC_INSUFFICIENT when the buffer ends inside it, TPM_RC_SIZE when its size is
above the maximum, TPM_RC_VALUE for another bad value, each with the parameter's number; bytes
after the last parameter are TPM_RC_SIZE with no number. tpm2-tools' ``tpm2_rc_decode`` reads
each code as the handle or parameter it names.
"""

from __future__ import annotations

import dataclasses
import struct
import subprocess
from collections.abc import Callable

import pytest

from cvm.errors import TruncatedError
from cvm.formats.tpm2.constants import TpmAlg, TpmCc, TpmRh, TpmSt
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.tpm2b import tpm2b, writer
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.dispatch import COMMANDS, Call, Handler, Result
from cvm.vtpm.engine import Tpm

PASSWORD = struct.pack(">IHBH", TpmRh.PW, 0, 1, 0)  # TPM_RS_PW, no nonce, continue, no auth


def _command(code: int, handles: bytes = b"", params: bytes = b"",
             sessions: bool = False) -> bytes:
    area = struct.pack(">I", len(PASSWORD)) + PASSWORD if sessions else b""
    body = handles + area + params
    tag = TpmSt.SESSIONS if sessions else TpmSt.NO_SESSIONS
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def _code(tpm: Tpm, command: bytes) -> int:
    _tag, _size, code = struct.unpack(">HII", tpm.execute(command)[:10])
    return int(code)


HASH_DATA = tpm2b(b"abc")
CASES = [
    # the handle area
    (_command(TpmCc.PCR_EXTEND, b"\x00\x00"), for_handle(TpmRc.INSUFFICIENT, 1),
     "handle(1):the TPM was unable to unmarshal a value because there were not enough octets"),
    (_command(TpmCc.EVENT_SEQUENCE_COMPLETE, struct.pack(">I", 16) + b"\x80"),
     for_handle(TpmRc.INSUFFICIENT, 2),
     "handle(2):the TPM was unable to unmarshal a value because there were not enough octets"),
    # parameters cut short
    (_command(TpmCc.HASH, params=b"\x00\x0aabc"), for_parameter(TpmRc.INSUFFICIENT, 1),
     "parameter(1):the TPM was unable to unmarshal a value because there were not enough"),
    (_command(TpmCc.HASH, params=HASH_DATA + b"\x00"), for_parameter(TpmRc.INSUFFICIENT, 2),
     "parameter(2):the TPM was unable to unmarshal a value because there were not enough"),
    (_command(TpmCc.HASH, params=HASH_DATA + writer().u16(TpmAlg.SHA256).to_bytes() + b"\x40"),
     for_parameter(TpmRc.INSUFFICIENT, 3),
     "parameter(3):the TPM was unable to unmarshal a value because there were not enough"),
    (_command(TpmCc.GET_CAPABILITY, params=bytes(8) + b"\x00"),
     for_parameter(TpmRc.INSUFFICIENT, 3),
     "parameter(3):the TPM was unable to unmarshal a value because there were not enough"),
    # a size above its maximum
    (_command(TpmCc.NV_DEFINE_SPACE, struct.pack(">I", TpmRh.OWNER), tpm2b(bytes(65)), True),
     for_parameter(TpmRc.SIZE, 1), "parameter(1):structure is the wrong size"),
    (_command(TpmCc.MAKE_CREDENTIAL, struct.pack(">I", TpmRh.OWNER),
              tpm2b(b"credential") + tpm2b(bytes(67))),
     for_parameter(TpmRc.SIZE, 2), "parameter(2):structure is the wrong size"),
    # another bad value: a signature scheme that is none
    (_command(TpmCc.VERIFY_SIGNATURE, struct.pack(">I", TpmRh.OWNER),
              tpm2b(bytes(32)) + struct.pack(">H", 0x7777) + bytes(64)),
     for_parameter(TpmRc.VALUE, 2), "parameter(2):value is out of range or is not correct"),
    # bytes after the last parameter
    (_command(TpmCc.GET_RANDOM, params=b"\x00\x08\x00"), TpmRc.SIZE,
     "structure is the wrong size"),
]
IDS = ["short handle 1", "short handle 2", "short TPM2B", "short hashAlg", "short hierarchy",
       "short propertyCount", "auth of 65", "objectName of 67", "no scheme", "trailing byte"]


@pytest.mark.parametrize(("command", "expected", "decoded"), CASES, ids=IDS)
def test_the_code_names_the_handle_or_parameter(client: TpmClient, tpm: Tpm, command: bytes,
                                                expected: int, decoded: str) -> None:
    assert _code(tpm, command) == expected


def _raising(after_parameters: bool) -> Handler:
    def handler(tpm: Tpm, call: Call) -> Result:
        call.params.u16("bytesRequested")
        if after_parameters:
            call.done()
        call.parameter(2)
        raise TruncatedError("a structure: a field needs 2 bytes at offset 0x0, only 0 left")
    return handler


@pytest.mark.parametrize(("after_parameters", "expected"), [
    (False, for_parameter(TpmRc.INSUFFICIENT, 2)),  # while reading parameter 2
    (True, for_parameter(TpmRc.INSUFFICIENT, 0)),  # the command's own data: no parameter's
])
def test_only_a_parse_error_in_the_parameters_names_one(
        client: TpmClient, tpm: Tpm, monkeypatch: pytest.MonkeyPatch, after_parameters: bool,
        expected: int) -> None:
    spec = COMMANDS[TpmCc.GET_RANDOM]
    monkeypatch.setitem(COMMANDS, TpmCc.GET_RANDOM,
                        dataclasses.replace(spec, handler=_raising(after_parameters)))
    assert _code(tpm, _command(TpmCc.GET_RANDOM, params=b"\x00\x08")) == expected


@pytest.mark.interop
@pytest.mark.parametrize(("command", "expected", "decoded"), CASES, ids=IDS)
def test_tpm2_rc_decode_reads_each_code_as_meant(require_tool: Callable[[str], str],
                                                 command: bytes, expected: int,
                                                 decoded: str) -> None:
    tool = require_tool("tpm2_rc_decode")
    printed = subprocess.run([tool, f"{expected:#x}"], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    assert printed.startswith("tpm:") and decoded in printed
