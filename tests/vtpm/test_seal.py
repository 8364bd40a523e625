"""Sealing to PCR policies and unsealing: success, and every refusal with its TPM_RC."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmRh, TpmSe
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc, for_parameter, for_session
from cvm.formats.tpm2.sensitive import PrivateBlob
from cvm.formats.tpm2.signature import Signature
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.policy import PolicyDigest, approved_policy_hash
from cvm.vtpm.templates import public_from_pem, sealed_template, srk_template

SEL7 = PcrSelectionList.of("sha256", [7])
SECRET = b"the disk key, 32 bytes long!...."


def _measure(client: TpmClient, data: bytes = b"abc") -> bytes:
    client.pcr_extend(7, {TpmAlg.SHA256: hashlib.sha256(data).digest()})
    return client.pcr_read(SEL7)[2][0]


def _seal(client: TpmClient, policy: bytes, pin: bytes = b"") -> tuple[int, int]:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, sealed_template(policy), data=SECRET, auth=pin)
    return srk, client.load(srk, blob, public)


def _unseal(client: TpmClient, item: int, pin: bytes | None = None,
            selection: PcrSelectionList = SEL7) -> bytes:
    session = client.start_auth_session(TpmSe.POLICY)
    try:
        client.policy_pcr(session, selection)
        if pin is not None:
            client.policy_auth_value(session)
        return client.unseal(item, Auth(pin or b"", session))
    finally:
        client.flush(session.handle)


def test_unseal_needs_the_predicted_pcrs(client: TpmClient) -> None:
    value = _measure(client)
    _, item = _seal(client, PolicyDigest.start().pcr(SEL7, [value]).value)
    assert _unseal(client, item) == SECRET
    _measure(client, b"evil bootloader")
    with pytest.raises(StatusError) as refused:
        _unseal(client, item)
    assert refused.value.code == 0x99D
    assert "TPM_RC_POLICY_FAIL (session 1)" in str(refused.value)


def test_policy_of_another_bank_fails(client: TpmClient) -> None:
    value = _measure(client)
    _, item = _seal(client, PolicyDigest.start().pcr(SEL7, [value]).value)
    with pytest.raises(StatusError) as refused:
        _unseal(client, item, selection=PcrSelectionList.of("sha1", [7]))
    assert refused.value.code == for_session(TpmRc.POLICY_FAIL, 1)


def test_pin_and_dictionary_attack_lockout(client: TpmClient, clock: Any) -> None:
    value = _measure(client)
    policy = PolicyDigest.start().pcr(SEL7, [value]).auth_value().value
    _, item = _seal(client, policy, pin=b"1234")
    assert _unseal(client, item, pin=b"1234") == SECRET
    for _ in range(3):
        with pytest.raises(StatusError) as refused:
            _unseal(client, item, pin=b"0000")
        assert refused.value.code == 0x98E
    with pytest.raises(StatusError) as refused:
        _unseal(client, item, pin=b"1234")
    assert refused.value.code == TpmRc.LOCKOUT
    clock.now += 1000
    assert _unseal(client, item, pin=b"1234") == SECRET
    client.dictionary_attack_lock_reset()
    assert _unseal(client, item, pin=b"1234") == SECRET


def test_password_auth_is_refused_when_a_policy_is_required(client: TpmClient) -> None:
    value = _measure(client)
    _, item = _seal(client, PolicyDigest.start().pcr(SEL7, [value]).value)
    with pytest.raises(StatusError) as refused:
        client.unseal(item)
    assert refused.value.code == TpmRc.AUTH_UNAVAILABLE


def test_pcr_change_during_the_session(client: TpmClient) -> None:
    value = _measure(client)
    _, item = _seal(client, PolicyDigest.start().pcr(SEL7, [value]).value)
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_pcr(session, SEL7)
    client.pcr_extend(16, {TpmAlg.SHA256: bytes(32)})
    with pytest.raises(StatusError) as refused:
        client.unseal(item, Auth(b"", session))
    assert refused.value.code == TpmRc.PCR_CHANGED
    with pytest.raises(StatusError) as refused:
        client.policy_pcr(session, SEL7, pcr_digest=bytes(32))
    assert refused.value.code == for_parameter(TpmRc.VALUE, 1)


def test_tampered_blob_fails_integrity(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, sealed_template(), data=SECRET, auth=b"pw")
    flipped = bytearray(blob.encrypted)
    flipped[5] ^= 1
    with pytest.raises(StatusError) as refused:
        client.load(srk, PrivateBlob(blob.integrity, blob.iv, bytes(flipped)), public)
    assert refused.value.code == 0x1DF
    item = client.load(srk, blob, public)
    assert client.unseal(item, Auth(b"pw")) == SECRET
    with pytest.raises(StatusError) as refused:
        client.unseal(item, Auth(b"pw!"))
    assert refused.value.code == 0x98E


def test_sealed_blob_carries_the_reference_layout(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, sealed_template(bytes(32)), data=bytes(32))
    assert len(blob.to_tpm2b()) == 2 + 0x9E
    assert (len(blob.integrity), len(blob.iv), len(blob.encrypted)) == (32, 16, 106)
    assert public.to_tpm2b()[:10].hex() == "004e0008000b00000012"


def test_hmac_session_unseal(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, sealed_template(), data=SECRET, auth=b"secret pin")
    item = client.load(srk, blob, public)
    session = client.start_auth_session(TpmSe.HMAC)
    assert client.unseal(item, Auth(b"secret pin", session)) == SECRET
    assert client.unseal(item, Auth(b"secret pin", session)) == SECRET
    bound = client.start_auth_session(TpmSe.HMAC, bind=item, bind_auth=b"secret pin")
    assert client.unseal(item, Auth(b"secret pin", bound)) == SECRET
    with pytest.raises(StatusError):
        client.unseal(item, Auth(b"wrong", session))


def test_policy_password(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, sealed_template(PolicyDigest.start().password().value),
                                 data=SECRET, auth=b"pw")
    item = client.load(srk, blob, public)
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_password(session)
    assert client.unseal(item, Auth(b"pw", session)) == SECRET


def test_policy_or_branches(client: TpmClient) -> None:
    old, new = _measure(client), hashlib.sha256(b"x").digest()
    branches = [PolicyDigest.start().pcr(SEL7, [v]).value for v in (new, old)]
    _, item = _seal(client, PolicyDigest.start().or_(branches).value)
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_pcr(session, SEL7)
    client.policy_or(session, branches)
    assert client.unseal(item, Auth(b"", session)) == SECRET
    client.policy_restart(session)
    with pytest.raises(StatusError) as refused:
        client.policy_or(session, branches)
    assert refused.value.code == for_parameter(TpmRc.VALUE, 1)


def test_policy_authorize_with_signed_pcr_policy(client: TpmClient) -> None:
    key = rsa.generate_private_key(65537, 2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    public = public_from_pem(pem)
    value = _measure(client)
    approved = PolicyDigest.start().pcr(SEL7, [value]).value
    sealed_policy = PolicyDigest.start().authorize(public.name()).value
    _, item = _seal(client, sealed_policy)
    signature = key.sign(approved, padding.PKCS1v15(), hashes.SHA256())
    signer = client.load_external(public, TpmRh.OWNER)
    a_hash = approved_policy_hash(TpmAlg.SHA256, approved, b"")
    ticket = client.verify_signature(signer, a_hash, Signature(TpmAlg.RSASSA, TpmAlg.SHA256,
                                                               sig=signature))
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_pcr(session, SEL7)
    client.policy_authorize(session, approved, b"", public.name(), ticket)
    assert client.unseal(item, Auth(b"", session)) == SECRET
    with pytest.raises(StatusError) as refused:
        client.verify_signature(signer, a_hash, Signature(TpmAlg.RSASSA, TpmAlg.SHA256,
                                                          sig=bytes(256)))
    assert refused.value.code == for_parameter(TpmRc.SIGNATURE, 2)


def test_trial_session_cannot_authorize(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    trial = client.start_auth_session(TpmSe.TRIAL)
    client.policy_pcr(trial, SEL7, pcr_digest=bytes(32))
    digest = client.policy_get_digest(trial)
    assert digest == PolicyDigest.start().pcr_digest(SEL7, bytes(32)).value
    blob, public = client.create(srk, sealed_template(digest), data=SECRET)
    item = client.load(srk, blob, public)
    with pytest.raises(StatusError) as refused:
        client.unseal(item, Auth(b"", trial))
    assert refused.value.code == for_session(TpmRc.AUTH_TYPE, 1)


def test_sealed_data_limit(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    with pytest.raises(StatusError) as refused:
        client.create(srk, sealed_template(), data=bytes(129))
    assert refused.value.code == for_parameter(TpmRc.SIZE, 1)
