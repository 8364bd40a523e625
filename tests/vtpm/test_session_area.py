"""The authorization area checked session by session (Part 1 sections 18.6-18.8, 19.6.5,
21.2): the attributes a session may carry, the password session's empty nonce, the first
session's HMAC covering the nonces of later decrypt and encrypt sessions, the response's
session area, and the flush of a session used without continueSession.

Commands are assembled here byte by byte, with the sessions' nonces chosen by the test, so
each case says exactly which nonceTPM values the first session's HMAC must cover."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from cvm.formats.tpm2.command import AuthCommand, Command, Response
from cvm.formats.tpm2.constants import TpmAlg, TpmaSession, TpmCc, TpmRh, TpmSe
from cvm.formats.tpm2.response_code import TpmRc, for_session
from cvm.formats.tpm2.tpm2b import tpm2b
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.parameter_encryption import cfb_crypt
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.session import command_hmac, cp_hash
from cvm.vtpm.templates import sealed_template, srk_template

SHA256 = TpmAlg.SHA256
CONT = TpmaSession.CONTINUE_SESSION
DEC = TpmaSession.DECRYPT
ENC = TpmaSession.ENCRYPT


def _create_params(tpm: Tpm, client: TpmClient, srk: int) -> bytes:
    """The parameters of a TPM2_Create the client builds (inSensitive first)."""
    wire: list[bytes] = []
    recording = TpmClient(lambda data: wire.append(data) or tpm.execute(data),
                          names=client.names)
    recording.create(srk, sealed_template(), data=b"many sessions")
    (create,) = (data for data in wire if data[6:10] == TpmCc.CREATE.to_bytes(4, "big"))
    return Command.parse(create, 1).parameters


def _send(tpm: Tpm, code: int, handles: tuple[int, ...], names: list[bytes], params: bytes,
          sessions: Sequence[tuple[int, int]], covered: Sequence[int]) -> int:
    """Send ``code`` with the unbound, unsalted (so empty-keyed) HMAC ``sessions`` given as
    (handle, attributes); session 1's HMAC covers the nonceTPM of the sessions at the
    (0-based) indices ``covered``. Returns the response code."""
    nonces = [bytes([0xA0 + i]) * 32 for i in range(len(sessions))]
    decrypter = next((i for i, (_, a) in enumerate(sessions) if a & DEC), None)
    if decrypter is not None:
        handle = sessions[decrypter][0]
        params = cfb_crypt(params, SHA256, 128, b"", nonces[decrypter],
                           tpm.sessions[handle].nonce_tpm, encrypt=True)
    cp = cp_hash(SHA256, code, names, params)
    area = []
    for index, (handle, attributes) in enumerate(sessions):
        others = b"".join(tpm.sessions[sessions[i][0]].nonce_tpm for i in covered) \
            if index == 0 else b""
        mac = command_hmac(SHA256, b"", cp, nonces[index], tpm.sessions[handle].nonce_tpm,
                           attributes, others)
        area.append(AuthCommand(handle, nonces[index], attributes, mac))
    command = Command(code, handles, tuple(area), params)
    return int.from_bytes(tpm.execute(command.to_bytes())[6:10], "big")


@pytest.mark.parametrize(("attributes", "covered"), [
    ([CONT, CONT | DEC], [1]),
    ([CONT, CONT | ENC], [1]),
    ([CONT, CONT | DEC | ENC], [1]),  # one session doing both is covered once
    ([CONT, CONT | DEC, CONT | ENC], [1, 2]),
    ([CONT, CONT | ENC, CONT | DEC], [2, 1]),  # decrypt's nonce first, then encrypt's
    ([CONT | DEC, CONT | ENC], [1]),  # the first session's own nonce is not repeated
])
def test_the_first_hmac_covers_later_decrypt_and_encrypt_nonces(
    tpm: Tpm, client: TpmClient, attributes: list[int], covered: list[int],
) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True))
    params = _create_params(tpm, client, srk)
    handles = [client.start_auth_session(TpmSe.HMAC, symmetric_bits=128).handle
               for _ in attributes]
    sessions = list(zip(handles, attributes, strict=True))
    names = [client.name_of(srk)]
    # the SRK is noDA: a wrong HMAC is TPM_RC_BAD_AUTH
    assert _send(tpm, TpmCc.CREATE, (srk,), names, params, sessions, []) == \
        for_session(TpmRc.BAD_AUTH, 1)
    assert _send(tpm, TpmCc.CREATE, (srk,), names, params, sessions, covered) == 0


def test_an_extra_first_session_covers_the_nonce_of_the_decrypting_second(
    tpm: Tpm, client: TpmClient,
) -> None:
    """StartAuthSession needs no authorization: both sessions are extra, and the first one's
    HMAC still covers the second's nonceTPM."""
    first = client.start_auth_session(TpmSe.HMAC, symmetric_bits=128).handle
    second = client.start_auth_session(TpmSe.HMAC, symmetric_bits=128).handle
    params = (tpm2b(b"\x11" * 32) + tpm2b(b"") + bytes([TpmSe.HMAC])
              + TpmAlg.NULL.to_bytes(2, "big") + SHA256.to_bytes(2, "big"))
    names = [TpmRh.NULL.to_bytes(4, "big")] * 2
    sessions = [(first, CONT | ENC), (second, CONT | DEC)]
    code = TpmCc.START_AUTH_SESSION
    handles = (TpmRh.NULL, TpmRh.NULL)
    assert _send(tpm, code, handles, names, params, sessions, []) == \
        for_session(TpmRc.AUTH_FAIL, 1)
    assert _send(tpm, code, handles, names, params, sessions, [1]) == 0


def _password_create(tpm: Tpm, client: TpmClient, area: tuple[AuthCommand, ...]) -> int:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True))
    params = _create_params(tpm, client, srk)
    return Response.parse(tpm.execute(Command(TpmCc.CREATE, (srk,), area, params).to_bytes()),
                          0).code


@pytest.mark.parametrize("attributes", [
    CONT | TpmaSession.AUDIT, CONT | TpmaSession.AUDIT_EXCLUSIVE | TpmaSession.AUDIT,
    CONT | 0x08, CONT | 0x10,
])
def test_audit_and_reserved_attributes_are_refused(tpm: Tpm, client: TpmClient,
                                                   attributes: int) -> None:
    area = (AuthCommand(TpmRh.PW, b"", attributes, b""),)
    assert _password_create(tpm, client, area) == for_session(TpmRc.ATTRIBUTES, 1)


@pytest.mark.parametrize("attributes", [CONT | DEC, CONT | ENC])
def test_a_password_session_encrypts_nothing(tpm: Tpm, client: TpmClient,
                                             attributes: int) -> None:
    area = (AuthCommand(TpmRh.PW, b"", attributes, b""),)
    assert _password_create(tpm, client, area) == for_session(TpmRc.ATTRIBUTES, 1)


def test_a_password_session_carries_no_nonce(tpm: Tpm, client: TpmClient) -> None:
    area = (AuthCommand(TpmRh.PW, b"\x01", CONT, b""),)
    assert _password_create(tpm, client, area) == for_session(TpmRc.NONCE, 1)


@pytest.mark.parametrize("flag", [DEC, ENC])
def test_two_sessions_may_not_both_decrypt_or_both_encrypt(tpm: Tpm, client: TpmClient,
                                                           flag: int) -> None:
    first = client.start_auth_session(TpmSe.HMAC, symmetric_bits=128).handle
    second = client.start_auth_session(TpmSe.HMAC, symmetric_bits=128).handle
    area = (AuthCommand(TpmRh.PW, b"", CONT, b""), AuthCommand(first, b"n" * 32, CONT | flag),
            AuthCommand(second, b"m" * 32, CONT | flag))
    assert _password_create(tpm, client, area) == for_session(TpmRc.ATTRIBUTES, 2)


def test_a_password_authorization_is_acknowledged_with_an_empty_session(
    tpm: Tpm, client: TpmClient,
) -> None:
    """Part 1 section 18.8: nonceTPM empty, continueSession set, hmac empty."""
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True))
    blob, public = client.create(srk, sealed_template(), data=b"ack", auth=b"pw")
    item = client.load(srk, blob, public)
    area = (AuthCommand(TpmRh.PW, b"", CONT, b"pw"),)
    raw = tpm.execute(Command(TpmCc.UNSEAL, (item,), area).to_bytes())
    assert raw[-5:] == b"\x00\x00\x01\x00\x00"
    assert Response.parse(raw, 0).sessions[0].nonce == b""


def test_a_policy_password_session_answers_without_an_hmac(tpm: Tpm, client: TpmClient) -> None:
    """PolicyPassword: the authValue goes in clear, and the response carries no HMAC."""
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True))
    digest = PolicyDigest.start().password().value
    blob, public = client.create(srk, sealed_template(digest), data=b"pw policy", auth=b"pw")
    item = client.load(srk, blob, public)
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_password(session)
    area = (AuthCommand(session.handle, b"c" * 32, CONT, b"pw"),)
    response = Response.parse(tpm.execute(Command(TpmCc.UNSEAL, (item,), area).to_bytes()), 0)
    assert response.code == 0
    assert response.sessions[0].hmac == b""
    assert len(response.sessions[0].nonce) == 32


def test_a_session_used_without_continue_session_is_flushed(tpm: Tpm, client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True))
    blob, public = client.create(srk, sealed_template(), data=b"once", auth=b"pw")
    item = client.load(srk, blob, public)
    kept = client.start_auth_session(TpmSe.HMAC)
    assert client.unseal(item, Auth(b"pw", kept)) == b"once"
    assert kept.handle in tpm.sessions
    assert client.unseal(item, Auth(b"pw", kept, continue_session=False)) == b"once"
    assert kept.handle not in tpm.sessions
