"""The exact response code of every refusal of the policy commands and VerifySignature, with
malformed and out-of-range parameters sent as raw command buffers; and the TPMT_TK_VERIFIED
ticket as Part 1 section 15.3 defines it, computed independently of the vTPM."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmCc, TpmRh, TpmSe, TpmSt
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.signature import Signature, Ticket
from cvm.formats.tpm2.tpm2b import tpm2b, writer
from cvm.guest.tpm.client import Auth, ClientSession, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.policy import PolicyDigest, approved_policy_hash
from cvm.vtpm.templates import public_from_pem, srk_template

PARSE_ERROR = for_parameter(TpmRc.SIZE, 1)  # a TPM2B above its maximum size, parameter 1
D32 = bytes(range(32))


def _code(client: TpmClient, code: int, handles: tuple[int, ...], params: bytes,
          auths: tuple[Auth, ...] = ()) -> int:
    try:
        client.call(code, handles, params, auths)
    except StatusError as refused:
        return int(refused.code)
    return 0


def _or(client: TpmClient, session: ClientSession, branches: list[bytes],
        count: int | None = None) -> int:
    body = writer().u32(len(branches) if count is None else count)
    params = body.to_bytes() + b"".join(tpm2b(b) for b in branches)
    return _code(client, TpmCc.POLICY_OR, (session.handle,), params)


def test_policy_or_refusals(client: TpmClient) -> None:
    session = client.start_auth_session(TpmSe.POLICY)
    zero = bytes(32)
    assert _or(client, session, [zero] * 9) == for_parameter(TpmRc.SIZE, 1)
    assert _or(client, session, [zero]) == for_parameter(TpmRc.SIZE, 1)
    assert _or(client, session, [zero, bytes(20)]) == for_parameter(TpmRc.SIZE, 1)
    assert _or(client, session, [zero, bytes(65)]) == PARSE_ERROR
    assert _or(client, session, [D32, D32[::-1]]) == for_parameter(TpmRc.VALUE, 1)
    assert client.policy_get_digest(session) == zero
    assert _or(client, session, [D32] * 7 + [zero]) == 0
    assert client.policy_get_digest(session) == PolicyDigest.start().or_([D32] * 7 + [zero]).value
    trial = client.start_auth_session(TpmSe.TRIAL)
    assert _or(client, trial, [D32, D32[::-1]]) == 0


def _authorize(client: TpmClient, session: ClientSession, approved: bytes, policy_ref: bytes,
               key_sign: bytes, ticket: bytes) -> int:
    params = tpm2b(approved) + tpm2b(policy_ref) + tpm2b(key_sign) + ticket
    return _code(client, TpmCc.POLICY_AUTHORIZE, (session.handle,), params)


def test_policy_authorize_refusals(client: TpmClient) -> None:
    session = client.start_auth_session(TpmSe.POLICY)
    null = Ticket(TpmSt.VERIFIED, TpmRh.NULL, b"").to_bytes()
    name = TpmAlg.SHA256.to_bytes(2, "big") + D32
    size3 = for_parameter(TpmRc.SIZE, 3)
    for key_sign in (b"", b"\x00", name[:2], name[:-1], name + b"\x00",
                     TpmAlg.RSA.to_bytes(2, "big") + D32, TpmAlg.SHA1.to_bytes(2, "big") + D32):
        assert _authorize(client, session, bytes(32), b"", key_sign, null) == size3
    assert _authorize(client, session, bytes(32), b"", bytes(67), null) == for_parameter(
        TpmRc.SIZE, 3)
    assert _authorize(client, session, bytes(65), b"", name, null) == PARSE_ERROR
    assert _authorize(client, session, bytes(32), bytes(65), name, null) == for_parameter(
        TpmRc.SIZE, 2)
    assert _authorize(client, session, D32, b"", name, null) == for_parameter(TpmRc.VALUE, 1)
    assert _authorize(client, session, bytes(32), b"", name, null) == \
        for_parameter(TpmRc.TICKET, 4)
    creation = Ticket(TpmSt.CREATION, TpmRh.OWNER, D32).to_bytes()
    assert _authorize(client, session, bytes(32), b"", name, creation) == \
        for_parameter(TpmRc.TICKET, 4)
    assert client.policy_get_digest(session) == bytes(32)
    sha384 = TpmAlg.SHA384.to_bytes(2, "big") + bytes(48)
    trial = client.start_auth_session(TpmSe.TRIAL)
    assert _authorize(client, trial, D32, b"ref", sha384, null) == 0
    assert client.policy_get_digest(trial) == PolicyDigest.start().authorize(sha384, b"ref").value


def _secret(client: TpmClient, session: ClientSession, nonce: bytes = b"", cp_hash: bytes = b"",
            policy_ref: bytes = b"", expiration: int = 0) -> int:
    params = tpm2b(nonce) + tpm2b(cp_hash) + tpm2b(policy_ref) + expiration.to_bytes(4, "big")
    return _code(client, TpmCc.POLICY_SECRET, (TpmRh.OWNER, session.handle), params, (Auth(),))


def test_policy_secret_refusals(client: TpmClient) -> None:
    session = client.start_auth_session(TpmSe.POLICY)
    assert _secret(client, session, nonce=bytes(65)) == PARSE_ERROR
    assert _secret(client, session, cp_hash=bytes(65)) == for_parameter(TpmRc.SIZE, 2)
    assert _secret(client, session, policy_ref=bytes(65)) == for_parameter(TpmRc.SIZE, 3)
    assert _secret(client, session, cp_hash=D32) == for_parameter(TpmRc.VALUE, 2)
    assert _secret(client, session, expiration=1) == for_parameter(TpmRc.VALUE, 2)
    assert client.policy_get_digest(session) == bytes(32)
    assert _secret(client, session, policy_ref=b"ref") == 0
    owner = TpmRh.OWNER.to_bytes(4, "big")
    assert client.policy_get_digest(session) == PolicyDigest.start().secret(owner, b"ref").value
    hmac_session = client.start_auth_session(TpmSe.HMAC)
    assert _secret(client, hmac_session) == for_handle(TpmRc.VALUE, 2)


def test_policy_command_code_and_password_state(client: TpmClient, tpm: Tpm) -> None:
    session = client.start_auth_session(TpmSe.POLICY)
    params = writer().u32(TpmCc.UNSEAL).to_bytes()
    assert _code(client, TpmCc.POLICY_COMMAND_CODE, (session.handle,), params + b"\x00") == \
        TpmRc.SIZE  # trailing bytes: no parameter's
    client.policy_auth_value(session)
    client.policy_password(session)
    engine = tpm.sessions[session.handle]
    assert (engine.auth_value_needed, engine.password_needed) == (False, True)
    client.policy_auth_value(session)
    assert (engine.auth_value_needed, engine.password_needed) == (True, False)
    client.policy_command_code(session, TpmCc.UNSEAL)
    client.policy_restart(session)
    assert (engine.auth_value_needed, engine.password_needed, engine.command_code,
            engine.pcr_counter) == (False, False, None, None)
    assert engine.policy == PolicyDigest.start()


# ---- VerifySignature and its ticket ------------------------------------------------------------
def _rsa_signer() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(65537, 2048)
    return key, key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("hierarchy", [TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.PLATFORM])
def test_verified_ticket_is_the_hmac_of_part_1(client: TpmClient, tpm: Tpm,
                                               hierarchy: int) -> None:
    key, pem = _rsa_signer()
    public = public_from_pem(pem)
    handle = client.load_external(public, hierarchy)
    value = hashlib.sha256(b"approved policy").digest()
    signature = key.sign(value, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    ticket = client.verify_signature(handle, value,
                                     Signature(TpmAlg.RSASSA, TpmAlg.SHA256, sig=signature))
    expected = hmac.new(tpm.state.proofs[hierarchy],
                        TpmSt.VERIFIED.to_bytes(2, "big") + value + public.name(),
                        hashlib.sha256).digest()
    assert ticket == Ticket(TpmSt.VERIFIED, hierarchy, expected)


def test_verify_signature_refusals_and_the_null_ticket(client: TpmClient) -> None:
    key, pem = _rsa_signer()
    public = public_from_pem(pem)
    handle = client.load_external(public, TpmRh.NULL)
    value = hashlib.sha256(b"anything").digest()
    good = Signature(TpmAlg.RSASSA, TpmAlg.SHA256,
                     sig=key.sign(value, padding.PKCS1v15(), Prehashed(hashes.SHA256())))
    assert client.verify_signature(handle, value, good) == Ticket(TpmSt.VERIFIED, TpmRh.NULL, b"")
    params = tpm2b(bytes(65)) + good.to_bytes()
    assert _code(client, TpmCc.VERIFY_SIGNATURE, (handle,), params) == PARSE_ERROR
    bad = Signature(TpmAlg.RSASSA, TpmAlg.SHA256, sig=bytes(256))
    params = tpm2b(value) + bad.to_bytes()
    assert _code(client, TpmCc.VERIFY_SIGNATURE, (handle,), params) == \
        for_parameter(TpmRc.SIGNATURE, 2)
    other = hashlib.sha256(b"something else").digest()
    params = tpm2b(other) + good.to_bytes()
    assert _code(client, TpmCc.VERIFY_SIGNATURE, (handle,), params) == \
        for_parameter(TpmRc.SIGNATURE, 2)


def test_verify_signature_needs_a_signing_key(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True))
    value = hashlib.sha256(b"x").digest()
    params = tpm2b(value) + Signature(TpmAlg.ECDSA, TpmAlg.SHA256, r=b"\x01", s=b"\x01").to_bytes()
    assert _code(client, TpmCc.VERIFY_SIGNATURE, (srk,), params) == \
        for_handle(TpmRc.ATTRIBUTES, 1)


def test_approved_policy_hash_is_over_policy_and_ref() -> None:
    assert approved_policy_hash(TpmAlg.SHA256, D32, b"ref") == \
        hashlib.sha256(D32 + b"ref").digest()
    assert approved_policy_hash(TpmAlg.SHA384, D32, b"") == hashlib.sha384(D32).digest()


def test_policy_restart_keeps_the_session_hash(client: TpmClient, tpm: Tpm) -> None:
    session = client.start_auth_session(TpmSe.POLICY, auth_hash=TpmAlg.SHA384)
    client.policy_auth_value(session)
    client.policy_restart(session)
    assert client.policy_get_digest(session) == bytes(48)
    assert tpm.sessions[session.handle].policy == PolicyDigest.start(TpmAlg.SHA384)


def test_a_salt_key_needs_a_private_part(client: TpmClient) -> None:
    srk, public = client.create_primary(TpmRh.OWNER, srk_template(no_da=True))
    outside = client.load_external(public, TpmRh.OWNER)
    params = (tpm2b(bytes(16)) + tpm2b(b"\x00" * 8) + bytes([TpmSe.HMAC])
              + TpmAlg.NULL.to_bytes(2, "big") + TpmAlg.SHA256.to_bytes(2, "big"))
    assert _code(client, TpmCc.START_AUTH_SESSION, (outside, TpmRh.NULL), params) == \
        for_handle(TpmRc.KEY, 1)
    assert _code(client, TpmCc.START_AUTH_SESSION, (srk, TpmRh.NULL), params) == \
        for_parameter(TpmRc.VALUE, 2)


def test_policy_pcr_refusals(client: TpmClient) -> None:
    session = client.start_auth_session(TpmSe.POLICY)

    def policy_pcr(digest: bytes, selection: bytes) -> int:
        return _code(client, TpmCc.POLICY_PCR, (session.handle,), tpm2b(digest) + selection)

    def select(alg: int, bitmap: bytes) -> bytes:
        return (1).to_bytes(4, "big") + alg.to_bytes(2, "big") + bytes([len(bitmap)]) + bitmap

    assert policy_pcr(bytes(65), select(TpmAlg.SHA256, b"\x80\x00\x00")) == PARSE_ERROR
    assert policy_pcr(b"", select(TpmAlg.SHA256, b"\x00\x00\x00\x01")) == \
        for_parameter(TpmRc.VALUE, 2)
    assert policy_pcr(b"", select(TpmAlg.SHA512, b"\x80\x00\x00")) == \
        for_parameter(TpmRc.VALUE, 2)
    assert client.policy_get_digest(session) == bytes(32)
    assert policy_pcr(b"", select(TpmAlg.SHA256, b"\x00\x00\x80")) == 0


def test_a_second_policy_pcr_needs_unchanged_pcrs(client: TpmClient) -> None:
    session = client.start_auth_session(TpmSe.POLICY)
    selection = PcrSelectionList.of("sha256", [7])
    client.policy_pcr(session, selection)
    client.policy_pcr(session, selection)
    client.pcr_extend(7, {TpmAlg.SHA256: D32})
    with pytest.raises(StatusError) as refused:
        client.policy_pcr(session, selection)
    assert refused.value.code == TpmRc.PCR_CHANGED
