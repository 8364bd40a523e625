"""The engine's header checks: size range, tag, commandSize, command code (Part 1 18.2)."""

from __future__ import annotations

import struct

import pytest

from cvm.formats.tpm2.constants import TpmCc, TpmSt
from cvm.formats.tpm2.response_code import TpmRc
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.engine import Tpm


def _code(response: bytes) -> int:
    _tag, size, code = struct.unpack(">HII", response[:10])
    assert size == len(response)
    return code


def _get_random(tag: int = TpmSt.NO_SESSIONS, code: int = TpmCc.GET_RANDOM,
                extra: int = 0) -> bytes:
    return struct.pack(">HIIH", tag, 12 + extra, code, 8)


def test_a_well_formed_header_is_answered(client: TpmClient, tpm: Tpm) -> None:
    response = tpm.execute(_get_random())
    assert _code(response) == 0 and len(response) == 10 + 2 + 8


@pytest.mark.parametrize(("command", "expected"), [
    (_get_random(tag=0x8003), TpmRc.BAD_TAG),
    (_get_random(tag=TpmSt.SESSIONS + 1), TpmRc.BAD_TAG),
    (_get_random(extra=1), TpmRc.COMMAND_SIZE),
    (_get_random(extra=-1), TpmRc.COMMAND_SIZE),
    (_get_random(code=0x1FF), TpmRc.COMMAND_CODE),
    (_get_random()[:9], TpmRc.COMMAND_SIZE),
    (struct.pack(">HII", TpmSt.NO_SESSIONS, 4097, TpmCc.GET_RANDOM) + bytes(4087),
     TpmRc.COMMAND_SIZE),
], ids=["tag 0x8003", "tag after SESSIONS", "size one over", "size one under",
        "unknown code", "short of a header", "over the maximum"])
def test_a_bad_header_is_refused_with_its_code(client: TpmClient, tpm: Tpm, command: bytes,
                                               expected: int) -> None:
    assert _code(tpm.execute(command)) == expected


def test_the_largest_command_passes_the_size_check(client: TpmClient, tpm: Tpm) -> None:
    command = struct.pack(">HII", TpmSt.NO_SESSIONS, 4096, TpmCc.GET_RANDOM) + bytes(4086)
    assert _code(tpm.execute(command)) != TpmRc.COMMAND_SIZE
