"""Authorization sessions: HMAC, policy and trial sessions, and the session HMACs.

TCG "TPM 2.0 Library, Part 1", revision 1.59, section 19 ("Authorizations and
Acknowledgments"): 19.6.8 (sessionKey = ``KDFa(authHash, bind.authValue ‖ salt, "ATH",
nonceTPM, nonceCaller, digest bits)``, empty for an unbound unsalted session), 19.6.5
(command HMAC = ``HMAC(sessionKey ‖ authValue, cpHash ‖ nonceCaller ‖ nonceTPM ‖
[nonceTPMdecrypt ‖ nonceTPMencrypt of other sessions, first session only] ‖
sessionAttributes)``), 19.6.13 (response HMAC = ``HMAC(sessionKey ‖ authValue, rpHash ‖
nonceTPM ‖ nonceCaller ‖ sessionAttributes)``), 18.7 (``cpHash = H(commandCode ‖ Name_1 ‖ … ‖
parameters)``, ``rpHash = H(responseCode ‖ commandCode ‖ parameters)``) and 19.7 (policy
sessions: ``policyDigest``, isAuthValueNeeded, isPasswordNeeded, the PCR update counter and
the command-code restriction).

Both sides use these functions: the vTPM to check commands, :mod:`cvm.guest.tpm.client` to
make them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cvm.crypto.tpm_kdf import hmac, kdfa
from cvm.formats.tpm2.constants import TpmSe, digest, digest_size, hash_name
from cvm.vtpm.policy import PolicyDigest

HMAC_SESSION_FIRST = 0x02000000
POLICY_SESSION_FIRST = 0x03000000
MAX_ACTIVE_SESSIONS = 64
MAX_LOADED_SESSIONS = 3


def session_key(auth_hash: int, bind_auth: bytes, salt: bytes, nonce_tpm: bytes,
                nonce_caller: bytes) -> bytes:
    """The sessionKey (empty when the session is neither bound nor salted)."""
    secret = bind_auth + salt
    if not secret:
        return b""
    return kdfa(hash_name(auth_hash), secret, b"ATH", nonce_tpm, nonce_caller,
                bits=digest_size(auth_hash) * 8)


def cp_hash(auth_hash: int, code: int, names: list[bytes], parameters: bytes) -> bytes:
    """``H(commandCode ‖ Name_1 ‖ … ‖ Name_n ‖ parameters)``."""
    return digest(auth_hash, code.to_bytes(4, "big"), *names, parameters)


def rp_hash(auth_hash: int, code: int, parameters: bytes) -> bytes:
    """``H(TPM_RC_SUCCESS ‖ commandCode ‖ parameters)``."""
    return digest(auth_hash, bytes(4), code.to_bytes(4, "big"), parameters)


def command_hmac(auth_hash: int, key: bytes, cp: bytes, nonce_caller: bytes, nonce_tpm: bytes,
                 attributes: int, other_nonces: bytes = b"") -> bytes:
    """The command HMAC; ``other_nonces`` is nonceTPMdecrypt ‖ nonceTPMencrypt of other
    sessions, which only the first session includes (Part 1 section 19.6.5)."""
    return hmac(hash_name(auth_hash), key, cp, nonce_caller, nonce_tpm, other_nonces,
                bytes([attributes]))


def response_hmac(auth_hash: int, key: bytes, rp: bytes, nonce_tpm: bytes, nonce_caller: bytes,
                  attributes: int) -> bytes:
    return hmac(hash_name(auth_hash), key, rp, nonce_tpm, nonce_caller, bytes([attributes]))


def is_policy_type(session_type: int) -> bool:
    """A policy or trial session (TPM_SE_POLICY, TPM_SE_TRIAL) carries a policyDigest."""
    return session_type in (TpmSe.POLICY, TpmSe.TRIAL)


def is_trial_type(session_type: int) -> bool:
    """A trial session computes digests and can authorize nothing."""
    return session_type == TpmSe.TRIAL


@dataclass
class Session:
    """One session as the TPM keeps it."""

    handle: int
    session_type: int
    auth_hash: int
    nonce_tpm: bytes
    nonce_caller: bytes
    session_key: bytes = b""
    bind_name: bytes | None = None
    policy: PolicyDigest = field(default_factory=PolicyDigest.start)
    pcr_counter: int | None = None
    auth_value_needed: bool = False
    password_needed: bool = False
    command_code: int | None = None
    symmetric_bits: int = 0

    @property
    def is_policy(self) -> bool:
        return is_policy_type(self.session_type)

    @property
    def is_trial(self) -> bool:
        return is_trial_type(self.session_type)

    def restart(self) -> None:
        """TPM2_PolicyRestart: back to the state after StartAuthSession."""
        self.policy = PolicyDigest.start(self.auth_hash)
        self.pcr_counter = None
        self.auth_value_needed = False
        self.password_needed = False
        self.command_code = None

    def hmac_key(self, entity_name: bytes, auth_value: bytes) -> bytes:
        """sessionKey ‖ authValue, the authValue left out when bound to this very entity or
        when a policy session does not ask for it."""
        if self.is_policy:
            return self.session_key + (auth_value if self.auth_value_needed else b"")
        if self.bind_name is not None and self.bind_name == entity_name:
            return self.session_key
        return self.session_key + auth_value
