"""Quote, Sign and the credential commands (Part 3 sections 18.4, 20.2, 12.5–12.6): the
attestation's clock fields exactly as the reference TPM obfuscates them (Part 3 section
18.2.2, ``FillInAttestInfo``: only for keys outside the endorsement and platform
hierarchies), and each refusal with its exact response code."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
from collections.abc import Callable
from dataclasses import replace

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.attest import QuoteAttest
from cvm.formats.tpm2.constants import TpmAlg, TpmaObject, TpmCc, TpmRh, TpmSe, TpmSt
from cvm.formats.tpm2.pcr_selection import PcrSelection, PcrSelectionList
from cvm.formats.tpm2.public import EccParms, RsaParms, SymDefObject
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.signature import SigScheme, Ticket
from cvm.formats.tpm2.tpm2b import tpm2b, writer
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm import attestation_commands
from cvm.vtpm.attestation_commands import FIRMWARE_VERSION
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import ak_template, ek_template, signing_key_template, srk_template

SELECTION = PcrSelectionList.of("sha256", [0, 7])


def _code(call: Callable[[], object]) -> int:
    with pytest.raises(StatusError) as refused:
        call()
    return refused.value.code


def _mask(tpm: Tpm, qualified_name: bytes) -> bytes:
    """KDFa(SHA-256, shProof, "OBFUSCATE", qualifiedSigner, ∅, 128)."""
    block = (b"\x00\x00\x00\x01OBFUSCATE\x00" + qualified_name + (128).to_bytes(4, "big"))
    return std_hmac.new(tpm.proof(TpmRh.OWNER), block, hashlib.sha256).digest()[:16]


@pytest.mark.parametrize("hierarchy", [TpmRh.OWNER, TpmRh.NULL])
def test_a_quote_by_an_owner_or_null_key_obfuscates_the_counters(
        tpm: Tpm, client: TpmClient, hierarchy: int) -> None:
    tpm.state.reset_count, tpm.state.restart_count = 0xFFFF_FFF0, 0x1234_5678
    ak, _ = client.create_primary(hierarchy, ak_template())
    message, _ = client.quote(ak, b"nonce", SELECTION)
    attest = QuoteAttest.from_bytes(message)
    mask = _mask(tpm, attest.qualified_signer)
    second = int.from_bytes(mask[8:], "big")
    assert attest.firmware_version == (FIRMWARE_VERSION + int.from_bytes(mask[:8], "big")) % (
        2**64)
    assert attest.clock_info.reset_count == (0xFFFF_FFF0 + (second >> 32)) % 2**32
    assert attest.clock_info.restart_count == (0x1234_5678 + second) % 2**32
    assert attest.clock_info.clock == tpm.now_ms()
    assert attest.clock_info.safe


@pytest.mark.parametrize("hierarchy", [TpmRh.ENDORSEMENT, TpmRh.PLATFORM])
def test_a_quote_by_an_endorsement_or_platform_key_shows_the_counters(
        tpm: Tpm, client: TpmClient, hierarchy: int) -> None:
    tpm.state.reset_count, tpm.state.restart_count = 5, 9
    ak, _ = client.create_primary(hierarchy, ak_template())
    attest = QuoteAttest.from_bytes(client.quote(ak, b"nonce", SELECTION)[0])
    assert (attest.firmware_version, attest.clock_info.reset_count,
            attest.clock_info.restart_count) == (FIRMWARE_VERSION, 5, 9)


@pytest.mark.parametrize("selection", [
    PcrSelectionList.of("sha512", [0]),
    PcrSelectionList((PcrSelection.of("sha256", [24], 4),)),
    PcrSelectionList((PcrSelection.of("sha256", [0], 3), PcrSelection.of("sha512", [1], 3))),
])
def test_a_quote_of_an_unallocated_pcr_is_refused(
        client: TpmClient, selection: PcrSelectionList) -> None:
    ak, _ = client.create_primary(TpmRh.ENDORSEMENT, ak_template())
    assert _code(lambda: client.quote(ak, b"", selection)) == for_parameter(TpmRc.VALUE, 3)


def test_quote_and_sign_need_a_signing_key_with_its_private_part(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    assert _code(lambda: client.quote(srk, b"", SELECTION)) == for_handle(TpmRc.KEY, 1)
    _, public = client.create_primary(TpmRh.OWNER, signing_key_template())
    public_only = client.load_external(public, TpmRh.OWNER)
    ecdsa = SigScheme(TpmAlg.ECDSA, TpmAlg.SHA256)
    assert _code(lambda: client.sign(public_only, bytes(32), ecdsa)) == for_handle(TpmRc.KEY, 1)


def test_sign_needs_a_digest_of_the_schemes_size(client: TpmClient) -> None:
    key, _ = client.create_primary(TpmRh.OWNER, signing_key_template())
    ecdsa = SigScheme(TpmAlg.ECDSA, TpmAlg.SHA256)
    assert _code(lambda: client.sign(key, bytes(31), ecdsa)) == for_parameter(TpmRc.SIZE, 1)
    assert _code(lambda: client.sign(key, bytes(48), ecdsa)) == for_parameter(TpmRc.SIZE, 1)
    client.sign(key, bytes(32), ecdsa)


def test_a_restricted_key_signs_no_external_digest_even_with_a_ticket(
        client: TpmClient) -> None:
    ak, _ = client.create_primary(TpmRh.ENDORSEMENT, ak_template())
    scheme = SigScheme(TpmAlg.ECDSA, TpmAlg.SHA256).write(writer()).to_bytes()
    for ticket in (Ticket(TpmSt.HASHCHECK, TpmRh.OWNER, b"\x01" * 32),
                   Ticket(TpmSt.HASHCHECK, TpmRh.NULL, b"")):
        params = tpm2b(bytes(32)) + scheme + ticket.to_bytes()
        assert _code(lambda params=params: client.call(TpmCc.SIGN, (ak,), params, (Auth(),))) == (
            for_parameter(TpmRc.TICKET, 3))


# ---- credentials -------------------------------------------------------------------------------
def _ek_auth(client: TpmClient) -> Auth:
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_secret(session, TpmRh.ENDORSEMENT)
    return Auth(b"", session, continue_session=False)


def test_credentials_need_a_storage_key(client: TpmClient) -> None:
    ak, ak_public = client.create_primary(TpmRh.ENDORSEMENT, ak_template())
    assert _code(lambda: client.make_credential(ak, b"c", ak_public.name())) == for_handle(
        TpmRc.TYPE, 1)
    assert _code(lambda: client.activate_credential(ak, ak, b"", b"")) == for_handle(
        TpmRc.TYPE, 2)
    srk = srk_template()
    assert isinstance(srk.parameters, EccParms)
    decrypt_only = replace(srk, attributes=srk.attributes & ~TpmaObject.RESTRICTED,
                           parameters=replace(srk.parameters, symmetric=SymDefObject()))
    key, _ = client.create_primary(TpmRh.OWNER, decrypt_only)
    assert _code(lambda: client.make_credential(key, b"c", ak_public.name())) == for_handle(
        TpmRc.TYPE, 1)


def test_activation_needs_the_eks_private_part_and_a_secret_that_decrypts(
        client: TpmClient) -> None:
    ek, ek_public = client.create_primary(TpmRh.ENDORSEMENT, ek_template("rsa"))
    ak, ak_public = client.create_primary(TpmRh.ENDORSEMENT, ak_template())
    blob, secret = client.make_credential(ek, b"credential", ak_public.name())
    bad_secret = secret[:-1] + bytes([secret[-1] ^ 1])
    assert _code(lambda: client.activate_credential(ak, ek, blob, bad_secret,
                                                    key_auth=_ek_auth(client))) == (
        for_parameter(TpmRc.VALUE, 2))
    public_only = client.load_external(
        replace(ek_public, attributes=ek_public.attributes | TpmaObject.USER_WITH_AUTH),
        TpmRh.ENDORSEMENT)
    assert _code(lambda: client.activate_credential(ak, public_only, blob, secret)) == (
        for_handle(TpmRc.KEY, 2))


@pytest.mark.parametrize("below", [1, 2])
def test_the_obfuscated_firmware_version_wraps_at_64_bits(
        tpm: Tpm, client: TpmClient, monkeypatch: pytest.MonkeyPatch, below: int) -> None:
    """Every bit of the 64-bit sum is kept: the version just below 2**64 plus the mask."""
    monkeypatch.setattr(attestation_commands, "FIRMWARE_VERSION", 2**64 - below)
    ak, _ = client.create_primary(TpmRh.OWNER, ak_template())
    attest = QuoteAttest.from_bytes(client.quote(ak, b"", SELECTION)[0])
    mask = _mask(tpm, attest.qualified_signer)
    assert attest.firmware_version == int.from_bytes(mask[:8], "big") - below


def test_the_signing_and_credential_keys_must_be_objects(client: TpmClient) -> None:
    """A hierarchy or PCR handle passes the engine's handle check but is no object."""
    assert _code(lambda: client.quote(TpmRh.OWNER, b"", SELECTION)) == for_handle(
        TpmRc.HANDLE, 1)
    assert _code(lambda: client.make_credential(TpmRh.OWNER, b"c", bytes(34))) == for_handle(
        TpmRc.HANDLE, 1)
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template("rsa"))
    assert _code(lambda: client.activate_credential(7, srk, b"", b"")) == for_handle(
        TpmRc.HANDLE, 1)


def test_the_tpm2b_limits_of_quote_sign_and_make_credential(client: TpmClient) -> None:
    """qualifyingData and a digest are TPM2B_DATA/TPM2B_DIGEST (64 bytes), the credential a
    TPM2B_DIGEST and the object's Name a TPM2B_NAME (66 bytes): one byte more is refused
    while the parameters are read."""
    ak, _ = client.create_primary(TpmRh.ENDORSEMENT, ak_template())
    client.quote(ak, b"q" * 64, SELECTION)
    assert _code(lambda: client.quote(ak, b"q" * 65, SELECTION)) == for_parameter(
        TpmRc.SIZE, 1)
    key, _ = client.create_primary(TpmRh.OWNER, signing_key_template())
    ecdsa = SigScheme(TpmAlg.ECDSA, TpmAlg.SHA256)
    assert _code(lambda: client.sign(key, bytes(65), ecdsa)) == for_parameter(TpmRc.SIZE, 1)
    ek, _ = client.create_primary(TpmRh.ENDORSEMENT, ek_template("rsa"))
    client.make_credential(ek, b"c" * 32, b"n" * 66)  # at most a digest of the EK's nameAlg
    assert _code(lambda: client.make_credential(ek, b"c" * 33, b"n" * 34)) == for_parameter(
        TpmRc.SIZE, 1)
    assert _code(lambda: client.make_credential(ek, b"c" * 65, b"n" * 34)) == for_parameter(
        TpmRc.SIZE, 1)
    assert _code(lambda: client.make_credential(ek, b"c", b"n" * 67)) == for_parameter(
        TpmRc.SIZE, 2)


def test_a_credential_to_an_rsa_key_uses_its_exponent(client: TpmClient) -> None:
    srk = srk_template("rsa")
    assert isinstance(srk.parameters, RsaParms)
    exponent_3 = replace(srk, parameters=replace(srk.parameters, exponent=3))
    key, _ = client.create_primary(TpmRh.OWNER, exponent_3)
    ak, ak_public = client.create_primary(TpmRh.ENDORSEMENT, ak_template())
    blob, secret = client.make_credential(key, b"credential", ak_public.name())
    assert client.activate_credential(ak, key, blob, secret) == b"credential"
