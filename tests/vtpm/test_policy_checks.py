"""Each check of the enhanced-authorization commands refuses what the TPM 2.0 reference refuses:
a forged or misdirected PolicyAuthorize ticket, a command other than PolicyCommandCode's, and a
PolicySecret bound to another session's nonceTPM."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmCc, TpmRh, TpmSe, TpmSt
from cvm.formats.tpm2.response_code import TpmRc, for_parameter, for_session
from cvm.formats.tpm2.signature import Signature, Ticket
from cvm.formats.tpm2.tpm2b import tpm2b
from cvm.guest.tpm.client import Auth, ClientSession, TpmClient
from cvm.vtpm.policy import PolicyDigest, approved_policy_hash
from cvm.vtpm.templates import public_from_pem, sealed_template, srk_template

from .conftest import seeded_random

SECRET = b"released only to the right policy"


def _code(action: object) -> int:
    with pytest.raises(StatusError) as refused:
        action()  # type: ignore[operator]
    return int(refused.value.code)


def _sealed(client: TpmClient, policy: bytes) -> int:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, sealed_template(policy), data=SECRET)
    item = client.load(srk, blob, public)
    client.flush(srk)
    return item


# ---- PolicyAuthorize: the ticket's HMAC under the hierarchy's proof ---------------------------
class Signer:
    def __init__(self, client: TpmClient) -> None:
        self.key = rsa.generate_private_key(65537, 2048)
        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public = public_from_pem(pem)
        self.client = client
        self.handle = client.load_external(self.public, TpmRh.OWNER)

    def ticket(self, approved: bytes, policy_ref: bytes = b"") -> Ticket:
        a_hash = approved_policy_hash(TpmAlg.SHA256, approved, policy_ref)
        signature = self.key.sign(a_hash, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        return self.client.verify_signature(self.handle, a_hash,
                                            Signature(TpmAlg.RSASSA, TpmAlg.SHA256, sig=signature))


@pytest.fixture
def authorized(client: TpmClient) -> tuple[TpmClient, Signer, bytes, int]:
    signer = Signer(client)
    approved = PolicyDigest.start().auth_value().value
    item = _sealed(client, PolicyDigest.start().authorize(signer.public.name()).value)
    return client, signer, approved, item


def _authorize(client: TpmClient, signer: Signer, approved: bytes, ticket: Ticket,
               policy_ref: bytes = b"") -> ClientSession:
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_auth_value(session)
    client.policy_authorize(session, approved, policy_ref, signer.public.name(), ticket)
    return session


def test_a_genuine_ticket_authorizes(authorized: tuple[TpmClient, Signer, bytes, int]) -> None:
    client, signer, approved, item = authorized
    session = _authorize(client, signer, approved, signer.ticket(approved))
    assert client.unseal(item, Auth(b"", session)) == SECRET


def test_a_forged_ticket_is_refused(authorized: tuple[TpmClient, Signer, bytes, int]) -> None:
    client, signer, approved, _ = authorized
    genuine = signer.ticket(approved)
    for digest in (bytes(32), bytes([genuine.digest[0] ^ 1]) + genuine.digest[1:],
                   genuine.digest[:-1]):
        forged = Ticket(TpmSt.VERIFIED, TpmRh.OWNER, digest)
        assert _code(lambda f=forged: _authorize(client, signer, approved, f)) == \
            for_parameter(TpmRc.VALUE, 4)


def test_a_ticket_for_another_policy_or_ref_is_refused(
        authorized: tuple[TpmClient, Signer, bytes, int]) -> None:
    client, signer, approved, _ = authorized
    other = PolicyDigest.start().password().command_code(TpmCc.UNSEAL).value
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_auth_value(session)
    with pytest.raises(StatusError) as refused:
        client.policy_authorize(session, approved, b"", signer.public.name(),
                                signer.ticket(other))
    assert refused.value.code == for_parameter(TpmRc.VALUE, 4)
    with pytest.raises(StatusError) as refused:
        client.policy_authorize(session, approved, b"ref", signer.public.name(),
                                signer.ticket(approved))
    assert refused.value.code == for_parameter(TpmRc.VALUE, 4)
    assert client.policy_get_digest(session) == PolicyDigest.start().auth_value().value


def test_a_ticket_of_another_hierarchy_or_tpm_is_refused(
        authorized: tuple[TpmClient, Signer, bytes, int], make_tpm: object) -> None:
    client, signer, approved, _ = authorized
    genuine = signer.ticket(approved)
    moved = Ticket(TpmSt.VERIFIED, TpmRh.ENDORSEMENT, genuine.digest)
    assert _code(lambda: _authorize(client, signer, approved, moved)) == \
        for_parameter(TpmRc.VALUE, 4)
    null = Ticket(TpmSt.VERIFIED, TpmRh.NULL, b"")
    assert _code(lambda: _authorize(client, signer, approved, null)) == \
        for_parameter(TpmRc.TICKET, 4)
    other = TpmClient(make_tpm(seed=b"another tpm").execute,  # type: ignore[operator]
                      random=seeded_random(b"other"))
    other.startup()
    foreign = Signer.__new__(Signer)
    foreign.key, foreign.public, foreign.client = signer.key, signer.public, other
    foreign.handle = other.load_external(signer.public, TpmRh.OWNER)
    assert _code(lambda: _authorize(client, signer, approved, foreign.ticket(approved))) == \
        for_parameter(TpmRc.VALUE, 4)


# ---- PolicyCommandCode: the session authorizes that one command ------------------------------
def test_policy_command_code_limits_the_command(client: TpmClient) -> None:
    item = _sealed(client, PolicyDigest.start().command_code(TpmCc.UNSEAL).value)
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_command_code(session, TpmCc.UNSEAL)
    assert client.unseal(item, Auth(b"", session)) == SECRET

    change = PolicyDigest.start().command_code(TpmCc.NV_READ).value
    other = _sealed(client, change)
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_command_code(session, TpmCc.NV_READ)
    assert client.policy_get_digest(session) == change
    assert _code(lambda: client.unseal(other, Auth(b"", session))) == \
        for_session(TpmRc.POLICY_CC, 1)
    assert _code(lambda: client.policy_command_code(session, TpmCc.UNSEAL)) == \
        for_parameter(TpmRc.VALUE, 1)
    client.policy_command_code(session, TpmCc.NV_READ)


# ---- PolicySecret: bound to the session by its nonceTPM ---------------------------------------
def _policy_secret(client: TpmClient, session: ClientSession, nonce: bytes) -> None:
    params = tpm2b(nonce) + tpm2b(b"") + tpm2b(b"") + bytes(4)
    client.call(TpmCc.POLICY_SECRET, (TpmRh.OWNER, session.handle), params, (Auth(),))


def test_policy_secret_is_bound_to_the_session_nonce(client: TpmClient) -> None:
    expected = PolicyDigest.start().secret(TpmRh.OWNER.to_bytes(4, "big")).value
    item = _sealed(client, expected)
    first = client.start_auth_session(TpmSe.POLICY)
    second = client.start_auth_session(TpmSe.POLICY)
    assert first.nonce_tpm != second.nonce_tpm
    for nonce in (second.nonce_tpm, bytes(len(first.nonce_tpm)), first.nonce_tpm[:-1]):
        assert _code(lambda n=nonce: _policy_secret(client, first, n)) == \
            for_parameter(TpmRc.NONCE, 1)
    assert client.policy_get_digest(first) == PolicyDigest.start().value
    _policy_secret(client, first, first.nonce_tpm)
    assert client.policy_get_digest(first) == expected
    assert client.unseal(item, Auth(b"", first)) == SECRET
