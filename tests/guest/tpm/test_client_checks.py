"""The guest's TPM client (:mod:`cvm.guest.tpm.client`), its own checks: a response HMAC that
does not verify is refused, a PolicyPassword session sends the password and expects no HMAC,
a refused command names itself and its response code, and the Name of an object the client
has not seen is read from the TPM (not the handle's bytes)."""

from __future__ import annotations

import pytest

from cvm.crypto.drbg import SeededRandom
from cvm.errors import FormatError, IntegrityError, StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmaNv, TpmCc, TpmNt, TpmRh, TpmSe
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.templates import ak_template, ek_template, sealed_template, srk_template

SECRET = b"sealed with an authValue"
AUTH = b"object password"
ST_SESSIONS = b"\x80\x02"


@pytest.fixture
def tpm() -> Tpm:
    return Tpm(random=SeededRandom(b"client checks"), clock=lambda: 1000.0)


@pytest.fixture
def client(tpm: Tpm) -> TpmClient:
    client = TpmClient(tpm.execute, random=SeededRandom(b"client checks client"))
    client.startup()
    return client


def _object(client: TpmClient, policy: bytes = b"") -> int:
    primary, _ = client.create_primary(TpmRh.OWNER, srk_template())
    private, public = client.create(primary, sealed_template(policy), data=SECRET, auth=AUTH)
    item = client.load(primary, private, public)
    client.flush(primary)
    return item


def test_an_hmac_session_authorizes_and_its_response_hmac_is_checked(tpm: Tpm,
                                                                      client: TpmClient) -> None:
    item = _object(client)
    session = client.start_auth_session(TpmSe.HMAC)
    assert client.unseal(item, Auth(AUTH, session)) == SECRET

    def tampering(command: bytes) -> bytes:
        response = bytearray(tpm.execute(command))
        if response[:2] == ST_SESSIONS:
            response[-1] ^= 1  # the last byte of the session's response HMAC
        return bytes(response)

    other = TpmClient(tampering, random=SeededRandom(b"tampered"), names=client.names)
    session = other.start_auth_session(TpmSe.HMAC)
    with pytest.raises(IntegrityError, match=r"^response HMAC does not verify$"):
        other.unseal(item, Auth(AUTH, session))


def test_a_policy_password_session_sends_the_password(client: TpmClient) -> None:
    item = _object(client, PolicyDigest.start().password().value)
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_password(session)
    assert client.unseal(item, Auth(AUTH, session)) == SECRET
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_password(session)
    with pytest.raises(StatusError) as refused:
        client.unseal(item, Auth(b"wrong", session))
    assert refused.value.code == 0x98E  # TPM_RC_AUTH_FAIL, session 1


def test_a_refused_command_names_itself_and_the_response_code(client: TpmClient) -> None:
    item = _object(client)
    with pytest.raises(StatusError) as refused:
        client.unseal(item, Auth(b"wrong"))
    assert refused.value.code == 0x98E
    assert str(refused.value) == "TPM command UNSEAL failed: TPM_RC_AUTH_FAIL (session 1)"


def test_a_client_reads_the_name_of_an_object_it_has_not_seen(tpm: Tpm,
                                                            client: TpmClient) -> None:
    """An HMAC session's cpHash holds the object's Name: a second client on the same TPM, with
    no Name cached, asks the TPM for it."""
    item = _object(client)
    fresh = TpmClient(tpm.execute, random=SeededRandom(b"fresh"))
    session = fresh.start_auth_session(TpmSe.HMAC)
    assert fresh.unseal(item, Auth(AUTH, session)) == SECRET
    assert fresh.names[item] == client.names[item]


def test_a_permanent_handles_name_is_its_four_bytes(client: TpmClient) -> None:
    """TPM_RH_OWNER's Name is 0x40000001 (Part 1, 16): an HMAC session over it verifies."""
    session = client.start_auth_session(TpmSe.HMAC)
    client.hierarchy_change_auth(TpmRh.OWNER, b"owner", Auth(b"", session))
    assert client.name_of(TpmRh.OWNER) == b"\x40\x00\x00\x01"
    session = client.start_auth_session(TpmSe.HMAC)
    client.hierarchy_change_auth(TpmRh.OWNER, b"", Auth(b"owner", session))


@pytest.mark.parametrize(("decrypt", "encrypt"), [(True, False), (False, True), (True, True)])
def test_the_first_sessions_hmac_covers_a_later_sessions_nonce(
        client: TpmClient, decrypt: bool, encrypt: bool) -> None:
    """Part 1, 19.6.5: a later session that decrypts or encrypts adds its nonceTPM (once) to
    the first session's HMAC; the vTPM checks that HMAC."""
    ek, _ = client.create_primary(TpmRh.ENDORSEMENT, ek_template("ecc"))
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, ak_public = client.create(srk, ak_template("ecc"))
    ak = client.load(srk, blob, ak_public)
    credential_blob, secret = client.make_credential(ek, b"verifier secret", ak_public.name())
    first = client.start_auth_session(TpmSe.HMAC)
    second = client.start_auth_session(TpmSe.POLICY, symmetric_bits=128)
    client.policy_secret(second, TpmRh.ENDORSEMENT)
    assert client.activate_credential(
        ak, ek, credential_blob, secret, activate_auth=Auth(b"", first),
        key_auth=Auth(b"", second, decrypt=decrypt, encrypt=encrypt)) == b"verifier secret"


def test_a_response_stripped_of_its_session_area_is_refused(tpm: Tpm,
                                                           client: TpmClient) -> None:
    """A transport that turns a TPM_ST_SESSIONS response into TPM_ST_NO_SESSIONS (dropping
    the area that carries the response HMAC) is caught, not accepted unchecked."""
    item = _object(client)

    def stripping(command: bytes) -> bytes:
        response = tpm.execute(command)
        if response[:2] != ST_SESSIONS:
            return response
        size = int.from_bytes(response[10:14], "big")  # parameterSize (no response handles)
        body = response[6:10] + response[14:14 + size]
        return b"\x80\x01" + (6 + len(body)).to_bytes(4, "big") + body

    other = TpmClient(stripping, random=SeededRandom(b"stripped"), names=client.names)
    session = other.start_auth_session(TpmSe.HMAC)
    with pytest.raises(IntegrityError, match=r"^TPM command UNSEAL: the response carries 0 "
                                             r"session area\(s\) for 1 session\(s\)$"):
        other.unseal(item, Auth(AUTH, session))


def test_a_policy_session_without_policy_auth_value_keys_encryption_without_it(
        client: TpmClient) -> None:
    """Response encryption by a policy session that did not run PolicyAuthValue: the key is
    the session key alone, not session key ‖ authValue (Part 1, 21.3)."""
    seven = PcrSelectionList.of("sha256", [7])
    item = _object(client, PolicyDigest.start().pcr(seven, client.pcr_read(seven)[2]).value)
    session = client.start_auth_session(TpmSe.POLICY, symmetric_bits=128)
    client.policy_pcr(session, seven)
    assert client.unseal(item, Auth(AUTH, session, encrypt=True)) == SECRET


def test_a_malformed_reply_is_named_by_its_command(tpm: Tpm) -> None:
    def truncating(command: bytes) -> bytes:
        response = tpm.execute(command)
        if int.from_bytes(command[6:10], "big") != TpmCc.PCR_READ:
            return response
        return response[:2] + (len(response) - 4).to_bytes(4, "big") + response[6:-4]

    client = TpmClient(truncating)
    client.startup()
    with pytest.raises(FormatError, match=r"^PCR_READ reply: "):
        client.pcr_read(PcrSelectionList.of("sha256", [7]))


def test_a_client_reads_the_name_of_an_nv_index_it_has_not_seen(tpm: Tpm,
                                                                client: TpmClient) -> None:
    index = 0x01500001
    client.nv_define_space(NvPublic(index, TpmAlg.SHA256, int(
        TpmaNv.AUTHREAD | TpmaNv.AUTHWRITE | TpmaNv.NO_DA), b"", 8), b"nv")
    fresh = TpmClient(tpm.execute, random=SeededRandom(b"fresh nv"))
    session = fresh.start_auth_session(TpmSe.HMAC)
    fresh.nv_write(index, b"12345678", auth=Auth(b"nv", session))
    assert client.nv_read(index, 8, auth=Auth(b"nv")) == b"12345678"


def test_an_nv_indexs_name_is_read_again_before_each_use(tpm: Tpm, client: TpmClient) -> None:
    """Another client's first increment sets TPMA_NV_WRITTEN, which changes the counter's
    Name: this client's HMAC-authorized increment must not use the Name it cached before."""
    index = 0x01500002
    client.nv_define_space(NvPublic(index, TpmAlg.SHA256, int(
        TpmaNv.AUTHREAD | TpmaNv.AUTHWRITE | TpmaNv.NO_DA) | TpmNt.COUNTER << 4, b"", 8), b"nv")
    client.name_of(index)  # cached before the increment below
    TpmClient(tpm.execute).nv_increment(index, auth=Auth(b"nv"))
    session = client.start_auth_session(TpmSe.HMAC)
    client.nv_increment(index, auth=Auth(b"nv", session))
    assert client.nv_read(index, 8, auth=Auth(b"nv")) == (2).to_bytes(8, "big")


def test_an_nv_write_authorized_by_the_owner_names_the_owner(client: TpmClient) -> None:
    index = 0x01500003
    client.nv_define_space(NvPublic(index, TpmAlg.SHA256, int(
        TpmaNv.OWNERWRITE | TpmaNv.AUTHREAD | TpmaNv.NO_DA), b"", 8), b"nv")
    client.nv_write(index, b"by owner", auth=Auth(b""), auth_handle=TpmRh.OWNER)
    assert client.nv_read(index, 8, auth=Auth(b"nv")) == b"by owner"
