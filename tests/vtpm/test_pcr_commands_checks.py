"""What TPM2_PCR_Extend, PCR_Event, PCR_Reset and PCR_Read refuse, and what PCR_Read returns
(Part 3 sections 22.2–22.4 and 22.8): each refusal with its exact response code, and the
selection PCR_Read echoes byte for byte."""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmCc, TpmRh
from cvm.formats.tpm2.pcr_selection import PcrSelection, PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.tpm2b import tpm2b, writer
from cvm.guest.tpm.client import Auth, TpmClient

SHA256_PCR7 = PcrSelectionList.of("sha256", [7])


def _digest_values(*pairs: tuple[int, bytes]) -> bytes:
    body = writer().u32(len(pairs))
    for alg, value in pairs:
        body.u16(alg).put(value)
    return body.to_bytes()


def _extend_raw(client: TpmClient, pcr: int, body: bytes) -> None:
    client.call(TpmCc.PCR_EXTEND, (pcr,), body, (Auth(),))


def _code(call: object) -> int:
    with pytest.raises(StatusError) as refused:
        call()  # type: ignore[operator]
    return refused.value.code


def test_an_extend_takes_up_to_sixteen_digests_and_refuses_seventeen(client: TpmClient) -> None:
    """TPML_DIGEST_VALUES holds at most HASH_COUNT (16) entries; the 17th is TPM_RC_SIZE on
    parameter 1, and nothing is extended."""
    step = hashlib.sha256(b"step").digest()
    _extend_raw(client, 7, _digest_values(*[(TpmAlg.SHA256, step)] * 16))
    expected = bytes(32)
    for _ in range(16):
        expected = hashlib.sha256(expected + step).digest()
    counter, _, values = client.pcr_read(SHA256_PCR7)
    assert values == [expected]
    assert _code(lambda: _extend_raw(
        client, 7, _digest_values(*[(TpmAlg.SHA256, step)] * 17))) == for_parameter(TpmRc.SIZE, 1)
    assert client.pcr_read(SHA256_PCR7) == (counter, SHA256_PCR7, [expected])


def test_an_extend_with_an_unknown_hash_is_refused_on_parameter_one(client: TpmClient) -> None:
    body = _digest_values((TpmAlg.NULL, b""))
    assert _code(lambda: _extend_raw(client, 7, body)) == for_parameter(TpmRc.HASH, 1)
    body = _digest_values((TpmAlg.SHA256, bytes(32)), (0x0099, bytes(32)))
    assert _code(lambda: _extend_raw(client, 7, body)) == for_parameter(TpmRc.HASH, 1)
    assert client.pcr_read(SHA256_PCR7)[2] == [bytes(32)]


@pytest.mark.parametrize("code", [TpmCc.PCR_EXTEND, TpmCc.PCR_EVENT, TpmCc.PCR_RESET])
def test_a_handle_that_is_no_pcr_is_refused_as_a_value_on_handle_one(
        client: TpmClient, code: TpmCc) -> None:
    """The hierarchy handles pass the engine's handle check; the PCR commands refuse them
    with TPM_RC_VALUE on handle 1, and no PCR changes."""
    params = {TpmCc.PCR_EXTEND: _digest_values((TpmAlg.SHA256, bytes(32))),
              TpmCc.PCR_EVENT: tpm2b(b"event"), TpmCc.PCR_RESET: b""}[code]
    before = client.pcr_read(PcrSelectionList.of("sha256", range(8)))
    refused = _code(lambda: client.call(code, (TpmRh.OWNER,), params, (Auth(),)))
    assert refused == for_handle(TpmRc.VALUE, 1)
    assert client.pcr_read(PcrSelectionList.of("sha256", range(8))) == before


def test_pcr_event_takes_1024_bytes_and_refuses_more(client: TpmClient) -> None:
    digests = client.pcr_event(9, b"e" * 1024)
    assert digests[TpmAlg.SHA256] == hashlib.sha256(b"e" * 1024).digest()
    assert set(digests) == {TpmAlg.SHA1, TpmAlg.SHA256, TpmAlg.SHA384}
    before = client.pcr_read(PcrSelectionList.of("sha256", [9]))
    refused = _code(lambda: client.pcr_event(9, b"e" * 1025))
    assert refused == for_parameter(TpmRc.SIZE, 1)
    assert client.pcr_read(PcrSelectionList.of("sha256", [9])) == before


def test_pcr_read_echoes_an_unallocated_bank_with_its_selection_size(client: TpmClient) -> None:
    """An unallocated bank comes back with an empty bitmap of the size asked for, and the
    banks after it are still read."""
    selection = PcrSelectionList((PcrSelection.of("sha512", [0, 7], 3),
                                  PcrSelection.of("sha256", [7], 3)))
    _, selected, values = client.pcr_read(selection)
    assert selected.to_bytes() == PcrSelectionList(
        (PcrSelection(TpmAlg.SHA512, bytes(3)), PcrSelection.of("sha256", [7], 3))).to_bytes()
    assert values == [bytes(32)]
    selection = PcrSelectionList((PcrSelection.of("sha512", [1], 4),))
    _, selected, values = client.pcr_read(selection)
    assert selected.to_bytes() == PcrSelectionList(
        (PcrSelection(TpmAlg.SHA512, bytes(4)),)).to_bytes()
    assert values == []


def test_pcr_read_drops_pcrs_past_23_and_keeps_the_selection_size(client: TpmClient) -> None:
    selection = PcrSelectionList((PcrSelection.of("sha256", [23, 24, 31], 4),))
    _, selected, values = client.pcr_read(selection)
    assert selected.to_bytes() == PcrSelectionList(
        (PcrSelection.of("sha256", [23], 4),)).to_bytes()
    assert values == [bytes(32)]
