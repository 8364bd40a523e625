"""Salted sessions and AES-CFB parameter encryption (Part 1 sections 19.6.12, 21)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.command import AuthCommand, Command, Response
from cvm.formats.tpm2.constants import TpmAlg, TpmaObject, TpmaSession, TpmCc, TpmRh, TpmSe
from cvm.formats.tpm2.public import RsaParms
from cvm.formats.tpm2.response_code import TpmRc, for_parameter, for_session
from cvm.formats.tpm2.tpm2b import read_tpm2b, reader
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.parameter_encryption import cfb_crypt
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.session import command_hmac, cp_hash, response_hmac, rp_hash
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


# ---- a session beyond the authorizations, used only to encrypt (Part 1 section 19.6.5) ------
def _unseal_with_extra(client: TpmClient, tpm: Tpm, item: int, attributes: int,
                       corrupt: bool = False) -> tuple[int, bytes]:
    """TPM2_Unseal with a password authorization and a second, salted HMAC session that
    encrypts the response; returns (response code, decrypted outData)."""
    srk = next(h for h, o in tpm.objects.items() if o.has(TpmaObject.DECRYPT) and h != item)
    extra = client.start_auth_session(TpmSe.HMAC, salt_key=srk, symmetric_bits=128)
    engine = tpm.sessions[extra.handle]
    nonce = bytes(range(32))
    names = [client.name_of(item)]
    cp = cp_hash(TpmAlg.SHA256, TpmCc.UNSEAL, names, b"")
    mac = command_hmac(TpmAlg.SHA256, engine.session_key, cp, nonce, engine.nonce_tpm,
                       attributes)
    if corrupt:
        mac = bytes([mac[0] ^ 1]) + mac[1:]
    sessions = (AuthCommand(TpmRh.PW, b"", TpmaSession.CONTINUE_SESSION, b"pw"),
                AuthCommand(extra.handle, nonce, attributes, mac))
    response = Response.parse(tpm.execute(Command(TpmCc.UNSEAL, (item,), sessions).to_bytes()), 0)
    if response.code:
        return response.code, b""
    acknowledged = response.sessions[1]
    assert acknowledged.hmac == response_hmac(
        TpmAlg.SHA256, engine.session_key, rp_hash(TpmAlg.SHA256, TpmCc.UNSEAL,
                                                  response.parameters),
        acknowledged.nonce, nonce, attributes)
    plain = cfb_crypt(response.parameters, TpmAlg.SHA256, 128, engine.session_key,
                      acknowledged.nonce, nonce, encrypt=False)
    return 0, read_tpm2b(reader(plain, "outData"), "outData")


def test_an_extra_session_encrypts_and_is_checked(tpm: Tpm, client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True))
    blob, public = client.create(srk, sealed_template(), data=b"through a second session",
                                 auth=b"pw")
    item = client.load(srk, blob, public)
    encrypt = TpmaSession.CONTINUE_SESSION | TpmaSession.ENCRYPT
    assert _unseal_with_extra(client, tpm, item, encrypt) == (0, b"through a second session")
    assert _unseal_with_extra(client, tpm, item, encrypt, corrupt=True)[0] == \
        for_session(TpmRc.AUTH_FAIL, 2)
    assert _unseal_with_extra(client, tpm, item, TpmaSession.CONTINUE_SESSION)[0] == \
        TpmRc.AUTH_CONTEXT


def test_a_salt_to_an_rsa_key_uses_its_exponent(client: TpmClient) -> None:
    template = srk_template("rsa", no_da=True)
    assert isinstance(template.parameters, RsaParms)
    odd = replace(template, parameters=replace(template.parameters, exponent=3))
    key, public = client.create_primary(TpmRh.OWNER, odd)
    assert isinstance(public.parameters, RsaParms) and public.parameters.exponent == 3
    session = client.start_auth_session(TpmSe.HMAC, salt_key=key, symmetric_bits=128)
    assert session.session_key  # the vTPM recovered the salt: the caller used e = 3


@pytest.mark.parametrize(("parameters", "plain"), [
    (b"", None), (b"\x00", None), (b"\x00\x05abcd", None),
    (b"\x00\x00", b"\x00\x00"), (b"\x00\x00tail", b"\x00\x00tail"),
])
def test_cfb_needs_a_whole_first_tpm2b(parameters: bytes, plain: bytes | None) -> None:
    def run() -> bytes:
        return cfb_crypt(parameters, TpmAlg.SHA256, 128, b"key", b"n1", b"n2", encrypt=False)

    if plain is None:
        with pytest.raises(StatusError) as refused:
            run()
        assert refused.value.code == for_parameter(TpmRc.SIZE, 1)
    else:
        assert run() == plain
    sealed = cfb_crypt(b"\x00\x04abcdrest", TpmAlg.SHA256, 128, b"key", b"n1", b"n2",
                       encrypt=True)
    assert sealed[:2] == b"\x00\x04" and sealed[6:] == b"rest" and sealed[2:6] != b"abcd"
    assert cfb_crypt(sealed, TpmAlg.SHA256, 128, b"key", b"n1", b"n2",
                     encrypt=False) == b"\x00\x04abcdrest"
