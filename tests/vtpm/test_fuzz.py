"""Random and mutated command buffers get a TPM error response, never an exception."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.formats.tpm2.command import AuthCommand, Command, Response
from cvm.formats.tpm2.constants import TpmAlg, TpmCc, TpmRh, TpmSe
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.formats.tpm2.response_code import TpmRc
from cvm.formats.tpm2.tpm2b import writer
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.dispatch import COMMANDS
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import sealed_template, srk_template

CODES = [int(c) for c in TpmCc]


def _started() -> Tpm:
    tpm = Tpm(random=bytes)
    tpm.execute(Command(TpmCc.STARTUP, (), (), writer().u16(0).to_bytes()).to_bytes())
    return tpm


TPM = _started()


def _check(response: bytes, response_handles: int | None = None) -> None:
    code = int.from_bytes(response[6:10], "big")
    assert code != TpmRc.FAILURE
    assert int.from_bytes(response[2:6], "big") == len(response)
    if code:
        assert len(response) == 10
    elif response_handles is not None:
        Response.parse(response, response_handles)


@given(st.binary(max_size=300))
def test_random_buffers(data: bytes) -> None:
    _check(TPM.execute(data))


@settings(max_examples=300)
@given(st.sampled_from(CODES), st.lists(st.sampled_from([0, 7, TpmRh.OWNER, TpmRh.NULL,
                                                         0x80000000, 0x03000000, 0x01500001]),
                                        max_size=3),
       st.booleans(), st.binary(max_size=120))
def test_well_framed_random_commands(code: int, handles: list[int], password: bool,
                                     params: bytes) -> None:
    sessions = (AuthCommand(TpmRh.PW, b"", 1, b""),) if password else ()
    data = Command(code, tuple(handles), sessions, params).to_bytes()
    _check(TPM.execute(data))
    for index in range(0, len(data), 7):
        mutated = bytearray(data)
        mutated[index] ^= 0x5A
        _check(TPM.execute(bytes(mutated)))


def _populated() -> tuple[Tpm, list[int]]:
    """A TPM with an SRK, a sealed object, a policy session and an NV index loaded."""
    tpm = Tpm(random=seeded(b"fuzz"))
    client = TpmClient(tpm.execute, random=seeded(b"fuzz client"))
    client.startup()
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, sealed_template(), data=b"fuzz", auth=b"pw")
    item = client.load(srk, blob, public)
    session = client.start_auth_session(TpmSe.POLICY)
    client.nv_define_space(NvPublic(0x01500001, TpmAlg.SHA256, 0x00060006, b"", 16))
    return tpm, [srk, item, session.handle, 0x01500001, TpmRh.OWNER, TpmRh.NULL, 7, 16]


def seeded(seed: bytes) -> Callable[[int], bytes]:
    state = {"n": 0}

    def take(size: int) -> bytes:
        state["n"] += 1
        return hashlib.sha256(seed + state["n"].to_bytes(8, "big")).digest() * (size // 32 + 1)

    return lambda size: take(size)[:size]


POPULATED, LIVE_HANDLES = _populated()


@settings(max_examples=400)
@given(st.sampled_from(sorted(COMMANDS)), st.data())
def test_commands_with_live_handles_and_random_parameters(code: int, data: st.DataObject) -> None:
    spec = COMMANDS[code]
    handles = tuple(data.draw(st.sampled_from(LIVE_HANDLES)) for _ in range(spec.handles))
    auth_count = sum(1 for role in spec.auth if role is not None)
    sessions = tuple(
        AuthCommand(data.draw(st.sampled_from([TpmRh.PW, LIVE_HANDLES[2]])), b"", 1,
                    data.draw(st.sampled_from([b"", b"pw"])))
        for _ in range(auth_count)
    )
    params = data.draw(st.one_of(
        st.binary(max_size=160),
        st.lists(st.sampled_from([b"\x00\x20" + bytes(32), b"\x00\x0b", b"\x00\x00\x00\x01",
                                  b"\x00\x10", b"\x00\x00", b"\xff\xff", b"\x00\x01\x00\x0b\x03\x80"
                                  b"\x00\x00"]), max_size=8).map(b"".join),
    ))
    _check(POPULATED.execute(Command(code, handles, sessions, params).to_bytes()),
           spec.response_handles)
