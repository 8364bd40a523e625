"""TPM2_Hash and its hash-check tickets, and TPM2_Sign with a restricted key that needs one."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TPM_GENERATED_VALUE, TpmAlg, TpmCc, TpmRh, TpmSt
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.formats.tpm2.signature import Ticket
from cvm.formats.tpm2.tpm2b import tpm2b, writer
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import ak_template, srk_template
from cvm.vtpm.tpm_object import verify_digest

GENERATED = TPM_GENERATED_VALUE.to_bytes(4, "big")


def _expected_ticket(tpm: Tpm, hierarchy: int, value: bytes) -> Ticket:
    """Part 2, TPMT_TK_HASHCHECK: HMAC-SHA256(proof, TPM_ST_HASHCHECK ‖ digest)."""
    mac = hmac.new(tpm.state.proofs[hierarchy], b"\x80\x24" + value, hashlib.sha256).digest()
    return Ticket(TpmSt.HASHCHECK, hierarchy, mac)


@pytest.mark.parametrize(("alg", "name"), [(TpmAlg.SHA1, "sha1"), (TpmAlg.SHA256, "sha256"),
                                           (TpmAlg.SHA384, "sha384")])
@pytest.mark.parametrize("hierarchy", [TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.PLATFORM])
def test_hash_gives_the_digest_and_a_ticket_of_the_hierarchy(
        client: TpmClient, tpm: Tpm, alg: int, name: str, hierarchy: int) -> None:
    data = b"data the TPM hashes" * 10
    value, ticket = client.hash(data, alg, hierarchy)
    assert value == hashlib.new(name, data).digest()
    assert ticket == _expected_ticket(tpm, hierarchy, value)


def test_no_ticket_for_the_null_hierarchy_or_for_what_could_be_an_attestation(
        client: TpmClient, tpm: Tpm) -> None:
    null = Ticket(TpmSt.HASHCHECK, TpmRh.NULL, b"")
    assert client.hash(b"anything", hierarchy=TpmRh.NULL)[1] == null
    forged = GENERATED + b"\x80\x18 a TPMS_ATTEST the TPM never made"
    value, ticket = client.hash(forged)
    assert value == hashlib.sha256(forged).digest() and ticket == null
    # the magic elsewhere in the data, or only part of it, is no reason to refuse a ticket
    for data in (b"x" + GENERATED, GENERATED[:3]):
        assert client.hash(data)[1] == _expected_ticket(tpm, TpmRh.OWNER,
                                                         hashlib.sha256(data).digest())


def _raw_hash(client: TpmClient, data: bytes, alg: int, hierarchy: int) -> int:
    with pytest.raises(StatusError) as refused:
        client.call(TpmCc.HASH, params=tpm2b(data) + writer().u16(alg).u32(hierarchy).to_bytes())
    return refused.value.code


def test_hash_refusals(client: TpmClient) -> None:
    assert _raw_hash(client, b"x", TpmAlg.NULL, TpmRh.OWNER) == for_parameter(TpmRc.HASH, 2)
    assert _raw_hash(client, b"x", TpmAlg.AES, TpmRh.OWNER) == for_parameter(TpmRc.HASH, 2)
    assert _raw_hash(client, b"x", TpmAlg.SHA256, TpmRh.LOCKOUT) == for_parameter(
        TpmRc.VALUE, 3)
    assert _raw_hash(client, b"x", TpmAlg.SHA256, 0x81000001) == for_parameter(TpmRc.VALUE, 3)
    assert client.hash(bytes(1024))[0] == hashlib.sha256(bytes(1024)).digest()
    assert _raw_hash(client, bytes(1025), TpmAlg.SHA256, TpmRh.OWNER) == for_parameter(
        TpmRc.SIZE, 1)  # TPM2B_MAX_BUFFER holds MAX_DIGEST_BUFFER (1024) bytes


def test_a_restricted_key_signs_a_digest_with_this_tpms_ticket_only(client: TpmClient,
                                                                    tpm: Tpm) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, ak_template("ecc"))
    ak = client.load(srk, blob, public)
    value, ticket = client.hash(b"a message for the attestation key")
    verify_digest(public, value, client.sign(ak, value, ticket=ticket))
    other, other_ticket = client.hash(b"another message")
    endorsement = client.hash(b"a message for the attestation key", hierarchy=TpmRh.ENDORSEMENT)

    def refused(digest: bytes, with_ticket: Ticket) -> int:
        with pytest.raises(StatusError) as error:
            client.sign(ak, digest, ticket=with_ticket)
        return error.value.code

    not_valid = for_parameter(TpmRc.TICKET, 3)
    assert refused(value, Ticket.null(TpmSt.HASHCHECK)) == not_valid
    assert refused(value, other_ticket) == not_valid  # another digest's ticket
    assert refused(other, ticket) == not_valid
    assert refused(value, Ticket(TpmSt.HASHCHECK, TpmRh.NULL, ticket.digest)) == not_valid
    assert refused(value, Ticket(TpmSt.VERIFIED, TpmRh.OWNER, ticket.digest)) == not_valid
    tampered = bytes([ticket.digest[0] ^ 1]) + ticket.digest[1:]
    assert refused(value, Ticket(TpmSt.HASHCHECK, TpmRh.OWNER, tampered)) == not_valid
    # a ticket is bound to the hierarchy named in it: the endorsement one is good as such...
    verify_digest(public, value, client.sign(ak, value, ticket=endorsement[1]))
    # ...and not when it claims to be the owner's
    assert refused(value, Ticket(TpmSt.HASHCHECK, TpmRh.OWNER,
                                 endorsement[1].digest)) == not_valid
    forged = client.hash(GENERATED + b"\x80\x18 not a real TPMS_ATTEST")
    assert refused(forged[0], forged[1]) == not_valid
    assert tpm.state.proofs[TpmRh.OWNER] != tpm.state.proofs[TpmRh.ENDORSEMENT]
