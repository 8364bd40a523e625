"""Sealing to a PCR policy and unsealing it (:mod:`cvm.guest.tpm.seal`), decision by decision:
the policy's steps and their order, the PIN's authValue, the refusals before any TPM command,
the TPM's refusals, and every handle flushed whatever happens."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cvm.crypto.drbg import SeededRandom
from cvm.errors import StatusError, UsageError
from cvm.formats.tpm2.constants import TpmAlg, TpmRh
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.signature import Signature
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.guest.tpm.seal import SealPolicy, SignedPolicy, pin_auth_value, seal, unseal
from cvm.vtpm.engine import Tpm
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.templates import public_from_pem, srk_template

SECRET = b"\x5e" * 32
PIN = b"1234"
SEVEN = PcrSelectionList.of("sha256", [7])
ELEVEN = PcrSelectionList.of("sha256", [11])
POLICY_FAIL, AUTH_FAIL, SIGNATURE_FAIL = 0x99D, 0x98E, 0x2DB
_SIGNER = rsa.generate_private_key(65537, 2048)
SIGNER_PEM = _SIGNER.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def tpm() -> Tpm:
    return Tpm(random=SeededRandom(b"seal checks"), clock=lambda: 1000.0)


@pytest.fixture
def client(tpm: Tpm) -> TpmClient:
    client = TpmClient(tpm.execute, random=SeededRandom(b"seal checks client"))
    client.startup()
    client.pcr_extend(7, {TpmAlg.SHA256: hashlib.sha256(b"shim").digest()})
    return client


def _pcr(client: TpmClient, selection: PcrSelectionList) -> list[bytes]:
    return client.pcr_read(selection)[2]


def _signed(client: TpmClient, values: list[bytes] | None = None,
            signature: bytes | None = None) -> SignedPolicy:
    approved = PolicyDigest.start().pcr(ELEVEN, values or _pcr(client, ELEVEN)).value
    sig = signature if signature is not None else _SIGNER.sign(
        approved, padding.PKCS1v15(), hashes.SHA256())
    return SignedPolicy(public_from_pem(SIGNER_PEM), ELEVEN, approved,
                        Signature(TpmAlg.RSASSA, TpmAlg.SHA256, sig=sig))


def test_the_pin_auth_value_is_sha256_of_the_pin() -> None:
    assert pin_auth_value(PIN) == hashlib.sha256(PIN).digest()
    assert pin_auth_value(b"") == hashlib.sha256(b"").digest()


def test_the_policy_digest_has_its_steps_in_systemds_order() -> None:
    """PolicyAuthorize(signer) first, then PolicyPCR, then PolicyAuthValue; each only when the
    policy asks for it."""
    values = [bytes(range(32))]
    signer = public_from_pem(SIGNER_PEM)
    start = PolicyDigest.start()
    assert SealPolicy(SEVEN).digest(values) == start.pcr(SEVEN, values)
    assert SealPolicy(SEVEN, pin=True).digest(values) == start.pcr(SEVEN, values).auth_value()
    assert SealPolicy(SEVEN, signer=signer).digest(values) == start.authorize(
        signer.name()).pcr(SEVEN, values)
    assert SealPolicy(PcrSelectionList(), pin=True, signer=signer).digest([]) == start.authorize(
        signer.name()).auth_value()
    assert SealPolicy(PcrSelectionList()).digest([]) == start


def test_seal_binds_the_policy_and_the_pin_and_flushes_the_primary(tpm: Tpm,
                                                                  client: TpmClient) -> None:
    policy = SealPolicy(SEVEN, pin=True)
    digest = policy.digest(_pcr(client, SEVEN)).value
    blob = seal(client, SECRET, digest, PIN)
    assert blob.public.auth_policy == digest
    assert not tpm.objects
    assert unseal(client, blob, policy, PIN) == SECRET
    with pytest.raises(StatusError) as refused:
        unseal(client, blob, policy, b"4321")
    assert refused.value.code == AUTH_FAIL
    assert not tpm.objects and not tpm.sessions


def test_a_secret_sealed_without_a_pin_has_an_empty_auth_value(tpm: Tpm,
                                                               client: TpmClient) -> None:
    """Sealed with no policy and no PIN, the object opens with the empty password."""
    blob = seal(client, SECRET, b"")
    primary, _ = client.create_primary(TpmRh.OWNER, srk_template())
    item = client.load(primary, blob.private, blob.public)
    assert client.unseal(item, Auth(b"")) == SECRET
    with pytest.raises(StatusError):
        client.unseal(item, Auth(hashlib.sha256(b"").digest()))


def test_unseal_asks_for_what_the_policy_needs_before_any_command(tpm: Tpm,
                                                                  client: TpmClient) -> None:
    blob = seal(client, SECRET, SealPolicy(SEVEN).digest(_pcr(client, SEVEN)).value)
    commands: list[bytes] = []
    counting = TpmClient(lambda data: commands.append(data) or tpm.execute(data))
    with pytest.raises(UsageError, match=r"^this secret is sealed with a PIN: give the PIN$"):
        unseal(counting, blob, SealPolicy(SEVEN, pin=True))
    signer = public_from_pem(SIGNER_PEM)
    with pytest.raises(UsageError, match=r"^this secret needs a signed PCR policy$"):
        unseal(counting, blob, SealPolicy(SEVEN, signer=signer))
    assert commands == []


def test_changed_pcrs_are_refused_by_the_tpm_and_every_handle_is_flushed(
        tpm: Tpm, client: TpmClient) -> None:
    policy = SealPolicy(SEVEN)
    blob = seal(client, SECRET, policy.digest(_pcr(client, SEVEN)).value)
    client.pcr_extend(7, {TpmAlg.SHA256: hashlib.sha256(b"another loader").digest()})
    with pytest.raises(StatusError) as refused:
        unseal(client, blob, policy)
    assert refused.value.code == POLICY_FAIL
    assert not tpm.objects and not tpm.sessions


def test_a_signed_policy_unseals_for_the_signed_values_only(tpm: Tpm,
                                                           client: TpmClient) -> None:
    signer = public_from_pem(SIGNER_PEM)
    policy = SealPolicy(SEVEN, signer=signer)
    blob = seal(client, SECRET, policy.digest(_pcr(client, SEVEN)).value)
    assert unseal(client, blob, policy, signed=_signed(client)) == SECRET
    assert not tpm.objects and not tpm.sessions
    # a policy signed for other PCR 11 values: PolicyPCR over the live values is not the
    # approved policy, PolicyAuthorize refuses it (TPM_RC_VALUE, parameter 1)
    with pytest.raises(StatusError) as refused:
        unseal(client, blob, policy, signed=_signed(client, [b"\x11" * 32]))
    assert refused.value.code == 0x1C4
    # a signature that does not verify: TPM_RC_SIGNATURE from VerifySignature
    with pytest.raises(StatusError) as refused:
        unseal(client, blob, policy, signed=_signed(client, signature=bytes(256)))
    assert refused.value.code == SIGNATURE_FAIL
    assert not tpm.objects and not tpm.sessions


def test_a_signed_policy_with_a_pin_needs_both(client: TpmClient) -> None:
    signer = public_from_pem(SIGNER_PEM)
    policy = SealPolicy(SEVEN, pin=True, signer=signer)
    blob = seal(client, SECRET, policy.digest(_pcr(client, SEVEN)).value, PIN)
    assert unseal(client, blob, policy, PIN, _signed(client)) == SECRET
    with pytest.raises(StatusError):
        unseal(client, blob, policy, b"0000", _signed(client))


def test_a_policy_without_pcrs_skips_policy_pcr(client: TpmClient) -> None:
    policy = SealPolicy(PcrSelectionList(), pin=True)
    blob = seal(client, SECRET, policy.digest([]).value, PIN)
    assert unseal(client, blob, policy, PIN) == SECRET
