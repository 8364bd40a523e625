"""StartAuthSession and the enhanced-authorization (policy) commands; VerifySignature.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59: 11.1 (TPM2_StartAuthSession), 23.4
(TPM2_PolicySecret), 23.6 (TPM2_PolicyOR), 23.7 (TPM2_PolicyPCR), 23.11
(TPM2_PolicyCommandCode), 23.16 (TPM2_PolicyAuthorize), 23.17 (TPM2_PolicyAuthValue), 23.18
(TPM2_PolicyPassword), 23.19 (TPM2_PolicyGetDigest), 23.20 (TPM2_PolicyRestart) and 20.1
(TPM2_VerifySignature, whose ticket is ``HMAC(proof, TPM_ST_VERIFIED ‖ digest ‖ keyName)``,
Part 1 section 15.3). Digest updates go through :class:`cvm.vtpm.policy.PolicyDigest`.
Sessions may be salted with an RSA or ECC ``tpmKey`` and carry AES-CFB parameter encryption
(:mod:`cvm.vtpm.parameter_encryption`).
"""

from __future__ import annotations

import hmac as std_hmac
from typing import TYPE_CHECKING

from cvm.crypto.tpm_kdf import hmac
from cvm.errors import SignatureError
from cvm.formats.tpm2.constants import (
    TpmAlg,
    TpmaObject,
    TpmCc,
    TpmHt,
    TpmRh,
    TpmSe,
    TpmSt,
    digest_size,
    handle_type,
    is_hash_alg,
)
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.signature import Signature, Ticket
from cvm.formats.tpm2.tpm2b import read_tpm2b, tpm2b
from cvm.vtpm.dispatch import AuthRole, Call, Result, register
from cvm.vtpm.parameter_encryption import session_salt
from cvm.vtpm.policy import PolicyDigest, approved_policy_hash
from cvm.vtpm.session import (
    HMAC_SESSION_FIRST,
    MAX_LOADED_SESSIONS,
    POLICY_SESSION_FIRST,
    Session,
    session_key,
)
from cvm.vtpm.tpm_object import fail, verify_digest

if TYPE_CHECKING:
    from cvm.vtpm.engine import Tpm

NONCE_MIN = 16
POLICY_OR_MAX = 8


def start_auth_session(tpm: Tpm, call: Call) -> Result:
    nonce_caller = read_tpm2b(call.params, "nonceCaller", 64)
    encrypted_salt = read_tpm2b(call.parameter(2), "encryptedSalt")
    session_type = call.parameter(3).u8("sessionType")
    symmetric = call.parameter(4).u16("symmetric.algorithm")
    key_bits: int = 0
    mode: int = TpmAlg.NULL
    if symmetric != TpmAlg.NULL:
        key_bits, mode = call.params.u16("symmetric.keyBits"), call.params.u16("symmetric.mode")
    auth_hash = call.parameter(5).u16("authHash")
    call.done()
    tpm_key, bind = call.handles
    if session_type not in (TpmSe.HMAC, TpmSe.POLICY, TpmSe.TRIAL):
        raise fail(for_parameter(TpmRc.VALUE, 3), "unknown sessionType")
    if symmetric != TpmAlg.NULL and (
        symmetric != TpmAlg.AES or mode != TpmAlg.CFB or key_bits not in (128, 192, 256)
    ):
        raise fail(for_parameter(TpmRc.SYMMETRIC, 4), "parameter encryption is AES-CFB only")
    if not is_hash_alg(auth_hash):
        raise fail(for_parameter(TpmRc.HASH, 5), "authHash is not a supported hash")
    if not NONCE_MIN <= len(nonce_caller) <= digest_size(auth_hash):
        raise fail(for_parameter(TpmRc.SIZE, 1), "nonceCaller size out of range")
    salt = b""
    if tpm_key != TpmRh.NULL:
        key = tpm.lookup(tpm_key, 1)
        if not key.has(TpmaObject.DECRYPT):
            raise fail(for_handle(TpmRc.KEY, 1), "tpmKey is not a decryption key")
        salt = session_salt(key, encrypted_salt)
    elif encrypted_salt:
        raise fail(for_parameter(TpmRc.VALUE, 2), "encryptedSalt without tpmKey")
    if len(tpm.sessions) >= MAX_LOADED_SESSIONS:
        raise fail(TpmRc.SESSION_MEMORY, "no free session slot")
    first = HMAC_SESSION_FIRST if session_type == TpmSe.HMAC else POLICY_SESSION_FIRST
    handle = next(h for h in range(first, first + 0x100)
                  if h not in tpm.sessions and h not in tpm.saved_sessions)
    nonce_tpm = tpm.random(digest_size(auth_hash))
    session = Session(handle, session_type, auth_hash, nonce_tpm, nonce_caller,
                      policy=PolicyDigest.start(auth_hash), symmetric_bits=key_bits)
    bind_auth = b""
    if bind != TpmRh.NULL:
        entity = tpm.entity(bind, 2)
        session.bind_name = entity.name
        bind_auth = entity.auth_value
    session.session_key = session_key(auth_hash, bind_auth, salt, nonce_tpm, nonce_caller)
    tpm.sessions[handle] = session
    return Result((handle,), tpm2b(nonce_tpm))


def policy_session(tpm: Tpm, call: Call, number: int = 1) -> Session:
    handle = call.handles[number - 1]
    session = tpm.sessions.get(handle)
    if session is None or handle_type(handle) != TpmHt.POLICY_SESSION or not session.is_policy:
        raise fail(for_handle(TpmRc.VALUE, number), "not a policy session")
    return session


def policy_pcr(tpm: Tpm, call: Call) -> Result:
    given = read_tpm2b(call.params, "pcrDigest", 64)
    selection = PcrSelectionList.read(call.parameter(2))
    call.done()
    session = policy_session(tpm, call)
    for entry in selection.selections:
        if entry.hash_alg not in tpm.pcrs.values or any(p >= 24 for p in entry.pcrs):
            raise fail(for_parameter(TpmRc.VALUE, 2), "selection names an unallocated PCR")
    current = tpm.pcrs.current_digest(session.auth_hash, selection)
    if session.is_trial:
        value = given or current
    else:
        if given and not std_hmac.compare_digest(given, current):
            raise fail(for_parameter(TpmRc.VALUE, 1), "PCR values differ from pcrDigest")
        if session.pcr_counter is not None and session.pcr_counter != tpm.pcrs.update_counter:
            raise fail(TpmRc.PCR_CHANGED, "PCRs changed since the last PolicyPCR")
        session.pcr_counter = tpm.pcrs.update_counter
        value = current
    session.policy = session.policy.pcr_digest(selection, value)
    return Result()


def policy_auth_value(tpm: Tpm, call: Call) -> Result:
    call.done()
    session = policy_session(tpm, call)
    session.policy = session.policy.auth_value()
    session.auth_value_needed, session.password_needed = True, False
    return Result()


def policy_password(tpm: Tpm, call: Call) -> Result:
    call.done()
    session = policy_session(tpm, call)
    session.policy = session.policy.password()
    session.auth_value_needed, session.password_needed = False, True
    return Result()


def policy_command_code(tpm: Tpm, call: Call) -> Result:
    code = call.params.u32("code")
    call.done()
    session = policy_session(tpm, call)
    if session.command_code is not None and session.command_code != code:
        raise fail(for_parameter(TpmRc.VALUE, 1), "another command code is already set")
    session.command_code = code
    session.policy = session.policy.command_code(code)
    return Result()


def policy_or(tpm: Tpm, call: Call) -> Result:
    count = call.params.u32("pHashList.count")
    if count > POLICY_OR_MAX:
        raise fail(for_parameter(TpmRc.SIZE, 1), "more than 8 digests")
    branches = [read_tpm2b(call.params, "digest", 64) for _ in range(count)]
    call.done()
    session = policy_session(tpm, call)
    if count < 2 or any(len(b) != len(session.policy.value) for b in branches):
        raise fail(for_parameter(TpmRc.SIZE, 1), "PolicyOR needs 2..8 session-hash digests")
    if not session.is_trial and session.policy.value not in branches:
        raise fail(for_parameter(TpmRc.VALUE, 1), "current policy is not one of the branches")
    session.policy = session.policy.or_(branches)
    return Result()


def verified_ticket(tpm: Tpm, hierarchy: int, value: bytes, key_name: bytes) -> Ticket:
    """TPMT_TK_VERIFIED for ``value`` signed by the key ``key_name`` of ``hierarchy``."""
    if hierarchy == TpmRh.NULL:
        return Ticket(TpmSt.VERIFIED, TpmRh.NULL, b"")
    mac = hmac("sha256", tpm.proof(hierarchy), TpmSt.VERIFIED.to_bytes(2, "big"), value, key_name)
    return Ticket(TpmSt.VERIFIED, hierarchy, mac)


def policy_authorize(tpm: Tpm, call: Call) -> Result:
    approved = read_tpm2b(call.params, "approvedPolicy", 64)
    policy_ref = read_tpm2b(call.parameter(2), "policyRef", 64)
    key_sign = read_tpm2b(call.parameter(3), "keySign", 66)
    ticket = Ticket.read(call.parameter(4))
    call.done()
    session = policy_session(tpm, call)
    alg = int.from_bytes(key_sign[:2], "big")  # a Name: nameAlg ‖ digest
    if not is_hash_alg(alg) or len(key_sign) != 2 + digest_size(alg):
        raise fail(for_parameter(TpmRc.SIZE, 3), "keySign is not a key Name")
    if not session.is_trial:
        if not std_hmac.compare_digest(approved, session.policy.value):
            raise fail(for_parameter(TpmRc.VALUE, 1), "policy differs from approvedPolicy")
        if ticket.tag != TpmSt.VERIFIED or ticket.hierarchy == TpmRh.NULL:
            raise fail(for_parameter(TpmRc.TICKET, 4), "not a usable TPMT_TK_VERIFIED")
        a_hash = approved_policy_hash(alg, approved, policy_ref)
        expected = verified_ticket(tpm, ticket.hierarchy, a_hash, key_sign)
        if not std_hmac.compare_digest(expected.digest, ticket.digest):
            raise fail(for_parameter(TpmRc.VALUE, 4), "ticket does not match the policy")
    session.policy = session.policy.authorize(key_sign, policy_ref)
    return Result()


def policy_secret(tpm: Tpm, call: Call) -> Result:
    nonce_tpm = read_tpm2b(call.params, "nonceTPM", 64)
    cp_hash_a = read_tpm2b(call.parameter(2), "cpHashA", 64)
    policy_ref = read_tpm2b(call.parameter(3), "policyRef", 64)
    expiration = call.parameter(4).u32("expiration")
    call.done()
    session = policy_session(tpm, call, 2)
    if nonce_tpm and nonce_tpm != session.nonce_tpm:
        raise fail(for_parameter(TpmRc.NONCE, 1), "nonceTPM is not the session's nonce")
    if cp_hash_a or expiration:
        raise fail(for_parameter(TpmRc.VALUE, 2), "cpHashA and expiration are not supported")
    name = tpm.entity(call.handles[0], 1).name
    session.policy = session.policy.secret(name, policy_ref)
    return Result(parameters=tpm2b(b"") + Ticket(TpmSt.AUTH_SECRET).to_bytes())


def policy_get_digest(tpm: Tpm, call: Call) -> Result:
    call.done()
    return Result(parameters=tpm2b(policy_session(tpm, call).policy.value))


def policy_restart(tpm: Tpm, call: Call) -> Result:
    call.done()
    policy_session(tpm, call).restart()
    return Result()


def verify_signature(tpm: Tpm, call: Call) -> Result:
    value = read_tpm2b(call.params, "digest", 64)
    signature = Signature.read(call.parameter(2))
    call.done()
    key = tpm.lookup(call.handles[0], 1)
    if not key.has(TpmaObject.SIGN_ENCRYPT):
        raise fail(for_handle(TpmRc.ATTRIBUTES, 1), "not a signing key")
    try:
        verify_digest(key.public, value, signature)
    except SignatureError:
        raise fail(for_parameter(TpmRc.SIGNATURE, 2), "signature does not verify") from None
    ticket = verified_ticket(tpm, key.hierarchy, value, key.name)
    return Result(parameters=ticket.to_bytes())


# This module's rows of the command table (Part 3: handles, authorization roles,
# response handles), registered explicitly so each handler stays a plain function.
register(TpmCc.START_AUTH_SESSION, start_auth_session, handles=2, response_handles=1)
register(TpmCc.POLICY_PCR, policy_pcr, handles=1)
register(TpmCc.POLICY_AUTH_VALUE, policy_auth_value, handles=1)
register(TpmCc.POLICY_PASSWORD, policy_password, handles=1)
register(TpmCc.POLICY_COMMAND_CODE, policy_command_code, handles=1)
register(TpmCc.POLICY_OR, policy_or, handles=1)
register(TpmCc.POLICY_AUTHORIZE, policy_authorize, handles=1)
register(TpmCc.POLICY_SECRET, policy_secret, handles=2, auth=(AuthRole.USER,))
register(TpmCc.POLICY_GET_DIGEST, policy_get_digest, handles=1)
register(TpmCc.POLICY_RESTART, policy_restart, handles=1)
register(TpmCc.VERIFY_SIGNATURE, verify_signature, handles=1)
