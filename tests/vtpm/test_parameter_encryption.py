"""Salted sessions and AES-CFB parameter encryption (Part 1 sections 19.6.12, 21)."""

from __future__ import annotations

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmRh, TpmSe
from cvm.formats.tpm2.response_code import TpmRc, for_session
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.templates import sealed_template, srk_template

SECRET = b"parameter-encrypted secret"


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_salted_encrypted_session_round_trip(tpm: Tpm, client: TpmClient, kind: str) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(kind))
    session = client.start_auth_session(TpmSe.HMAC, salt_key=srk, symmetric_bits=128)
    assert session.session_key
    wire: list[bytes] = []
    recording = TpmClient(lambda data: wire.append(data) or tpm.execute(data),
                          names=client.names)
    secure = Auth(b"", session, decrypt=True, encrypt=True)
    blob, public = recording.create(srk, sealed_template(), data=SECRET, auth=b"pw",
                                    parent_auth=secure)
    assert SECRET not in wire[-1]
    item = recording.load(srk, blob, public)
    unseal_auth = Auth(b"pw", session, encrypt=True)
    assert recording.unseal(item, unseal_auth) == SECRET
    policy = client.start_auth_session(TpmSe.POLICY, salt_key=srk, symmetric_bits=128)
    client.policy_auth_value(policy)
    digest = PolicyDigest.start().auth_value().value
    blob, public = client.create(srk, sealed_template(digest), data=SECRET, auth=b"pin")
    client.flush(item)
    item = client.load(srk, blob, public)
    assert client.unseal(item, Auth(b"pin", policy, encrypt=True)) == SECRET


def test_encryption_needs_a_cipher_and_a_tpm2b(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    plain = client.start_auth_session(TpmSe.HMAC)
    with pytest.raises(StatusError) as refused:
        client.create(srk, sealed_template(), data=SECRET,
                      parent_auth=Auth(b"", plain, decrypt=True))
    assert refused.value.code == for_session(TpmRc.SYMMETRIC, 1)
    ciphered = client.start_auth_session(TpmSe.HMAC, symmetric_bits=128)
    with pytest.raises(StatusError) as refused:
        client.pcr_extend(16, {}, Auth(b"", ciphered, decrypt=True))
    assert refused.value.code == for_session(TpmRc.ATTRIBUTES, 1)
