"""Session keys, cpHash/rpHash and the command and response HMACs against a real exchange:
tpm2-tools (ESAPI) talking to swtpm (libtpms), recorded byte for byte (vectors/README.md).

Both sides of cvm use :mod:`cvm.vtpm.session`, so a round trip through the vTPM cannot notice
a formula that is wrong on both; these HMACs were computed by two other implementations.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from cvm.formats.tpm2.command import Command, Response
from cvm.formats.tpm2.constants import TpmAlg, TpmaSession, TpmCc, TpmRh, TpmSe
from cvm.formats.tpm2.tpm2b import read_tpm2b, reader
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.session import (
    Session,
    command_hmac,
    cp_hash,
    response_hmac,
    rp_hash,
    session_key,
)

VECTORS = Path(__file__).parent / "vectors" / "swtpm_hmac_sessions.json"
SHA256 = TpmAlg.SHA256
OWNER = TpmRh.OWNER.to_bytes(4, "big")
ENDORSEMENT = TpmRh.ENDORSEMENT.to_bytes(4, "big")


def _exchanges() -> dict[str, tuple[bytes, bytes]]:
    document = json.loads(VECTORS.read_text())
    return {item["name"]: (bytes.fromhex(item["command"]), bytes.fromhex(item["response"]))
            for item in document["exchanges"]}


def _start(command: bytes, response: bytes) -> tuple[Session, int]:
    """The session swtpm opened: its nonces, from TPM2_StartAuthSession; and the bind handle."""
    parsed = Command.parse(command, 2)
    assert parsed.code == TpmCc.START_AUTH_SESSION
    fields = reader(parsed.parameters, "StartAuthSession")
    nonce_caller = read_tpm2b(fields, "nonceCaller")
    assert read_tpm2b(fields, "encryptedSalt") == b""
    assert fields.u8("sessionType") == TpmSe.HMAC
    # the ESAPI asks for AES-128-CFB; these commands encrypt no parameter with it
    assert (fields.u16("symmetric.algorithm"), fields.u16("symmetric.keyBits"),
            fields.u16("symmetric.mode")) == (TpmAlg.AES, 128, TpmAlg.CFB)
    assert fields.u16("authHash") == SHA256
    answer = Response.parse(response, 1)
    nonce_tpm = read_tpm2b(reader(answer.parameters, "nonceTPM"), "nonceTPM")
    return Session(answer.handles[0], TpmSe.HMAC, SHA256, nonce_tpm, nonce_caller), \
        parsed.handles[1]


def _check_create_primary(session: Session, entity: bytes, auth_value: bytes,
                          command: bytes, response: bytes) -> None:
    """The ESAPI's command HMAC and libtpms's response HMAC, recomputed; rolls the nonces."""
    parsed = Command.parse(command, 1)
    assert parsed.code == TpmCc.CREATE_PRIMARY
    assert parsed.handles == (int.from_bytes(entity, "big"),)
    (auth,) = parsed.sessions
    assert auth.session_handle == session.handle
    assert auth.attributes == TpmaSession.CONTINUE_SESSION
    key = session.hmac_key(entity, auth_value)
    cp = cp_hash(SHA256, TpmCc.CREATE_PRIMARY, [entity], parsed.parameters)
    assert command_hmac(SHA256, key, cp, auth.nonce, session.nonce_tpm,
                        auth.attributes) == auth.hmac
    answer = Response.parse(response, 1)
    (ack,) = answer.sessions
    rp = rp_hash(SHA256, TpmCc.CREATE_PRIMARY, answer.parameters)
    assert response_hmac(SHA256, key, rp, ack.nonce, auth.nonce, ack.attributes) == ack.hmac
    session.nonce_caller = auth.nonce
    session.nonce_tpm = ack.nonce


def test_a_bound_session_matches_swtpm_on_its_own_entity_and_another() -> None:
    """sessionKey = KDFa(SHA-256, ownerAuth, "ATH", nonceTPM, nonceCaller, 256); the HMAC key
    leaves the authValue out for the bound entity and appends it for any other."""
    exchanges = _exchanges()
    session, bind = _start(*exchanges["start_bound"])
    assert bind == TpmRh.OWNER
    session.session_key = session_key(SHA256, b"ownerpw", b"", session.nonce_tpm,
                                      session.nonce_caller)
    assert len(session.session_key) == 32
    session.bind_name = OWNER
    _check_create_primary(session, OWNER, b"ownerpw", *exchanges["create_primary_owner"])
    _check_create_primary(session, ENDORSEMENT, b"endorsepw",
                          *exchanges["create_primary_endorsement_bound"])


def test_an_unbound_unsalted_session_matches_swtpm() -> None:
    """Neither bound nor salted: the sessionKey is empty and the HMAC key is the authValue."""
    exchanges = _exchanges()
    session, bind = _start(*exchanges["start_unbound"])
    assert bind == TpmRh.NULL
    assert session_key(SHA256, b"", b"", session.nonce_tpm, session.nonce_caller) == b""
    assert session.hmac_key(ENDORSEMENT, b"endorsepw") == b"endorsepw"
    _check_create_primary(session, ENDORSEMENT, b"endorsepw",
                          *exchanges["create_primary_endorsement_unbound"])


@pytest.mark.parametrize("session_type", [TpmSe.POLICY, TpmSe.TRIAL])
def test_a_policy_session_keys_its_hmac_with_the_auth_value_only_after_policy_auth_value(
    session_type: TpmSe,
) -> None:
    """Part 1 section 19.6.17 / Part 3 TPM2_PolicyAuthValue: a policy session's HMAC key is the
    sessionKey alone unless the policy asked for the authValue (isAuthValueNeeded); its binding
    plays no part."""
    session = Session(0x03000000, session_type, SHA256, b"t" * 32, b"c" * 32,
                      session_key=b"k" * 32, bind_name=OWNER,
                      policy=PolicyDigest.start(SHA256))
    assert session.hmac_key(ENDORSEMENT, b"pw") == b"k" * 32
    assert session.hmac_key(OWNER, b"pw") == b"k" * 32
    session.auth_value_needed = True
    assert session.hmac_key(ENDORSEMENT, b"pw") == b"k" * 32 + b"pw"
    assert session.hmac_key(OWNER, b"pw") == b"k" * 32 + b"pw"


def test_the_first_sessions_hmac_covers_the_other_sessions_nonces() -> None:
    """Part 1 section 19.6.5: when the decrypt or encrypt session is not the first session, the
    first session's HMAC also covers nonceTPMdecrypt ‖ nonceTPMencrypt, between its own
    nonceTPM and its attributes (computed here with the standard library's HMAC)."""
    key, cp, caller, tpm_nonce = b"k" * 32, b"p" * 32, b"c" * 16, b"t" * 16
    others = b"d" * 16 + b"e" * 16
    expected = hmac.new(key, cp + caller + tpm_nonce + others + bytes([0x21]),
                        hashlib.sha256).digest()
    assert command_hmac(SHA256, key, cp, caller, tpm_nonce, 0x21, others) == expected
    assert command_hmac(SHA256, key, cp, caller, tpm_nonce, 0x21) != expected
