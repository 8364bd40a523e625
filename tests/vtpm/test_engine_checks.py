"""The vTPM engine's own checks, one by one: the locality a command runs at when none is
given, a command that is a header alone, the Names and dictionary-attack flags of the
entities it authorizes, the public area of a primary computed without a slot, and its clock."""

from __future__ import annotations

import hashlib
import struct

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmaNv, TpmCc, TpmNt, TpmRh, TpmSe, TpmSt, TpmSu
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.formats.tpm2.pcr_selection import PcrSelection, PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc, for_parameter, for_session
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import ek_template, srk_template

from .conftest import FakeClock, seeded_random

# The engine's own door, taken before the tests' autouse wrapper (conftest's
# ``changed_is_complete``) replaces it with one that always passes a locality.
EXECUTE = Tpm.execute


def _startup(kind: int = TpmSu.CLEAR) -> bytes:
    return struct.pack(">HIIH", TpmSt.NO_SESSIONS, 12, TpmCc.STARTUP, kind)


def _pcr0(tpm: Tpm) -> bytes:
    client = TpmClient(tpm.execute, random=seeded_random(b"client"))
    _, _, values = client.pcr_read(PcrSelectionList((PcrSelection.of(TpmAlg.SHA256, (0,)),)))
    return values[0]


def test_a_command_given_no_locality_runs_at_locality_0() -> None:
    tpm = Tpm(random=seeded_random(b"engine"), clock=FakeClock())
    assert EXECUTE(tpm, _startup()) == struct.pack(">HII", TpmSt.NO_SESSIONS, 10, 0)
    assert _pcr0(tpm) == bytes(32)  # PCR 0 ends in the Startup's locality (Part 1 34.3)
    other = Tpm(random=seeded_random(b"engine"), clock=FakeClock())
    other.execute(_startup(), 3)
    assert _pcr0(other) == bytes(31) + b"\x03"


def test_a_header_alone_reaches_the_command(tpm: Tpm, client: TpmClient) -> None:
    # ten bytes are a whole command: GetRandom then misses its first parameter
    response = tpm.execute(struct.pack(">HII", TpmSt.NO_SESSIONS, 10, TpmCc.GET_RANDOM))
    assert response == struct.pack(">HII", TpmSt.NO_SESSIONS, 10,
                                   for_parameter(TpmRc.INSUFFICIENT, 1))


def test_an_hmac_session_authorizes_a_pcr_by_its_handle(client: TpmClient, tpm: Tpm) -> None:
    session = client.start_auth_session(TpmSe.HMAC)
    digest = hashlib.sha256(b"event").digest()
    client.pcr_extend(16, {TpmAlg.SHA256: digest}, Auth(b"", session))
    expected = hashlib.sha256(bytes(32) + digest).digest()
    _, _, values = client.pcr_read(PcrSelectionList((PcrSelection.of(TpmAlg.SHA256, (16,)),)))
    assert values == [expected]


@pytest.mark.parametrize(("no_da", "counted"), [(False, 1), (True, 0)])
def test_a_wrong_nv_auth_value_counts_unless_the_index_is_no_da(
        client: TpmClient, tpm: Tpm, no_da: bool, counted: int) -> None:
    attributes = TpmaNv.AUTHREAD | TpmaNv.AUTHWRITE | (TpmaNv.NO_DA if no_da else 0)
    client.nv_define_space(NvPublic(0x01500001, TpmAlg.SHA256, attributes | TpmNt.ORDINARY << 4,
                                    b"", 8), b"right")
    with pytest.raises(StatusError) as refused:
        client.nv_write(0x01500001, b"x", auth=Auth(b"wrong"))
    # a DA-protected entity answers TPM_RC_AUTH_FAIL, an exempt one TPM_RC_BAD_AUTH
    assert refused.value.code == for_session(TpmRc.BAD_AUTH if no_da else TpmRc.AUTH_FAIL, 1)
    assert tpm.state.failed_tries == counted


@pytest.mark.parametrize(("hierarchy", "template"), [
    (TpmRh.OWNER, srk_template()), (TpmRh.ENDORSEMENT, ek_template("rsa")),
    (TpmRh.ENDORSEMENT, ek_template("ecc"))])
def test_primary_public_is_the_public_area_create_primary_returns(
        client: TpmClient, tpm: Tpm, hierarchy: int, template: object) -> None:
    _, created = client.create_primary(hierarchy, template)  # type: ignore[arg-type]
    assert tpm.primary_public(hierarchy, template) == created  # type: ignore[arg-type]


def test_the_tpm_clock_counts_milliseconds_since_boot(tpm: Tpm, clock: FakeClock) -> None:
    tpm.state.clock_ms = 7
    clock.now += 2.5
    assert tpm.now_ms() == 2507
