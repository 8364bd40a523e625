"""Authorization of commands: password, HMAC and policy sessions, dictionary-attack
protection, extra encryption sessions, parameter encryption and the response sessions.

TCG "TPM 2.0 Library, Part 1", revision 1.59: section 19 (authorizations: 19.6 HMAC
sessions, 19.7 policy sessions, 19.8 dictionary-attack protection), section 21 (session-based
encryption). The engine (:class:`cvm.vtpm.engine.Tpm`) mixes this in.

Dictionary-attack protection follows the reference implementation (Part 4, ``DA.c`` and
``SessionProcess.c``): a failed authValue check of a DA-protected entity counts one failure
(none while ``recoveryTime`` is 0, which disables the protection) and restarts the self-healing
timer; at ``maxTries`` failures every DA-protected authValue is refused (TPM_RC_LOCKOUT) until
each ``recoveryTime`` seconds of TPM time since the last failure forgive one, or
TPM2_DictionaryAttackLockReset. The hierarchies' authValues (owner, endorsement, platform) are
exempt, as are objects and NV indices with ``noDA``: a wrong value there is TPM_RC_BAD_AUTH and
counts nothing. A failed lockoutAuth disables lockoutAuth itself for ``lockoutRecovery``
seconds (with ``lockoutRecovery`` 0, until the next Startup). Timers run on the TPM clock, which
persists with the state, so a lockout outlives a restart of the TPM.
"""

from __future__ import annotations

import hmac as std_hmac
from collections.abc import Callable
from dataclasses import dataclass

from cvm.formats.tpm2.command import AuthCommand, AuthResponse, Command
from cvm.formats.tpm2.constants import TpmaSession, TpmRh
from cvm.formats.tpm2.response_code import TpmRc, for_session
from cvm.vtpm.dispatch import AuthRole, CommandSpec
from cvm.vtpm.parameter_encryption import DECRYPT_COMMANDS, ENCRYPT_COMMANDS, cfb_crypt
from cvm.vtpm.pcr import PcrBanks
from cvm.vtpm.session import Session, command_hmac, cp_hash, response_hmac, rp_hash
from cvm.vtpm.state import PersistentState
from cvm.vtpm.tpm_object import fail, strip_auth

LOCKOUT_NAME = TpmRh.LOCKOUT.to_bytes(4, "big")
MS_PER_S = 1000
# the session attributes as plain ints: tested against at every command, where an int & a flag
# member would build a flag object each time
_AUDIT, _DECRYPT, _ENCRYPT = (int(TpmaSession.AUDIT), int(TpmaSession.DECRYPT),
                              int(TpmaSession.ENCRYPT))
_CRYPT_FLAGS = ((_DECRYPT, DECRYPT_COMMANDS), (_ENCRYPT, ENCRYPT_COMMANDS))


def heal(state: PersistentState, now_ms: int, changed: Callable[[], None]) -> None:
    """The reference's ``DASelfHeal`` on ``state`` at TPM time ``now_ms``."""
    if state.failed_tries and not state.recovery_time:
        state.failed_tries = 0
        changed()
    elif state.failed_tries:
        steps = max(0, now_ms - state.self_heal_ms) // MS_PER_S // state.recovery_time
        if steps:
            state.failed_tries = max(0, state.failed_tries - steps)
            state.self_heal_ms += steps * state.recovery_time * MS_PER_S
            changed()
    if (not state.lockout_auth_enabled and state.lockout_recovery
            and max(0, now_ms - state.lockout_timer_ms) // MS_PER_S >= state.lockout_recovery):
        state.lockout_auth_enabled = True
        changed()


@dataclass
class Entity:
    """What an authorization is checked against."""

    name: bytes
    auth_value: bytes
    auth_policy: bytes
    da_protected: bool
    user_with_auth: bool = True
    admin_with_policy: bool = False



class Authorization:
    """The session half of the engine (state it needs is declared here, set by the engine)."""

    state: PersistentState
    pcrs: PcrBanks
    sessions: dict[int, Session]
    random: Callable[[int], bytes]
    clock: Callable[[], float]
    changed: bool
    on_da_used: Callable[[], None] | None
    now_ms: Callable[[], int]  # the TPM clock in milliseconds, defined by the engine

    def mark_changed(self) -> None:
        """Note that the non-volatile state changed (its owner persists it)."""
        self.changed = True

    # ---- extra sessions and parameter encryption ---------------------------------------
    def _check_session_attributes(self, code: int, auth: AuthCommand, number: int,
                                  sessions: tuple[AuthCommand, ...]) -> None:
        attributes = auth.attributes
        if attributes & _AUDIT or attributes & 0x18:
            raise fail(for_session(TpmRc.ATTRIBUTES, number), "audit sessions are not supported")
        for flag, allowed in _CRYPT_FLAGS:
            if not attributes & flag:
                continue
            if auth.session_handle == TpmRh.PW or code not in allowed:
                raise fail(for_session(TpmRc.ATTRIBUTES, number),
                           "this command's first parameter cannot be encrypted")
            if sum(1 for s in sessions if s.attributes & flag) > 1:
                raise fail(for_session(TpmRc.ATTRIBUTES, number), "two sessions encrypt")
            session = self.sessions.get(auth.session_handle)
            if session is not None and not session.symmetric_bits:
                raise fail(for_session(TpmRc.SYMMETRIC, number), "session has no cipher")

    def _audit_only(self, spec: CommandSpec, command: Command, names: list[bytes],
                    auth: AuthCommand, number: int) -> Session:
        """A session beyond the authorizations: it only encrypts; its HMAC is still checked."""
        session = self.sessions.get(auth.session_handle)
        if session is None or not auth.attributes & (TpmaSession.DECRYPT | TpmaSession.ENCRYPT):
            raise fail(TpmRc.AUTH_CONTEXT, "extra sessions must encrypt a parameter")
        session.nonce_caller = auth.nonce
        cp = cp_hash(session.auth_hash, spec.code, names, command.parameters)
        expected = command_hmac(session.auth_hash, session.session_key, cp, auth.nonce,
                                session.nonce_tpm, auth.attributes,
                                self._other_nonces(command, number))
        if not std_hmac.compare_digest(expected, auth.hmac):
            raise fail(for_session(TpmRc.AUTH_FAIL, number), "session HMAC is wrong")
        return session

    def _other_nonces(self, command: Command, number: int) -> bytes:
        """nonceTPM of the decrypt and encrypt sessions when they are not the first one."""
        if number != 1:
            return b""
        decrypt_index = next((i for i, s in enumerate(command.sessions)
                              if s.attributes & TpmaSession.DECRYPT), None)
        encrypt_index = next((i for i, s in enumerate(command.sessions)
                              if s.attributes & TpmaSession.ENCRYPT), None)
        indices = [i for i in (decrypt_index,) if i]
        if encrypt_index and encrypt_index != decrypt_index:
            indices.append(encrypt_index)
        others = (self.sessions.get(command.sessions[i].session_handle) for i in indices)
        return b"".join(other.nonce_tpm for other in others if other is not None)

    @staticmethod
    def _session_value(session: Session, entity: Entity | None) -> bytes:
        if entity is None:
            return session.session_key
        return session.hmac_key(entity.name, entity.auth_value)

    def _decrypt(self, parameters: bytes,
                 used: list[tuple[AuthCommand, Session | None, Entity | None]]) -> bytes:
        for auth, session, entity in used:
            if session is not None and auth.attributes & _DECRYPT:
                return cfb_crypt(parameters, session.auth_hash, session.symmetric_bits,
                                 self._session_value(session, entity), auth.nonce,
                                 session.nonce_tpm, encrypt=False)
        return parameters

    def _encrypt(self, parameters: bytes,
                 used: list[tuple[AuthCommand, Session | None, Entity | None]]) -> bytes:
        for auth, session, entity in used:
            if session is not None and auth.attributes & _ENCRYPT:
                return cfb_crypt(parameters, session.auth_hash, session.symmetric_bits,
                                 self._session_value(session, entity), session.nonce_tpm,
                                 session.nonce_caller, encrypt=True)
        return parameters

    # ---- authorization -----------------------------------------------------------------
    def _authorize(
        self, spec: CommandSpec, command: Command, names: list[bytes], auth: AuthCommand,
        entity: Entity, role: AuthRole, number: int,
    ) -> Session | None:
        if auth.session_handle == TpmRh.PW:
            if auth.nonce:
                raise fail(for_session(TpmRc.NONCE, number), "password session with a nonce")
            if role is AuthRole.USER and not entity.user_with_auth:
                raise fail(TpmRc.AUTH_UNAVAILABLE, "the object needs a policy (userWithAuth)")
            if role is AuthRole.ADMIN and entity.admin_with_policy:
                raise fail(TpmRc.AUTH_UNAVAILABLE, "the object needs a policy (adminWithPolicy)")
            self._check_lockout(entity)
            self._compare(entity, strip_auth(auth.hmac), number)
            return None
        session = self.sessions.get(auth.session_handle)
        if session is None:
            raise fail(for_session(TpmRc.HANDLE, number), "no such session")
        session.nonce_caller = auth.nonce
        if session.is_policy:
            if session.is_trial:
                raise fail(for_session(TpmRc.AUTH_TYPE, number), "a trial session cannot authorize")
            if not std_hmac.compare_digest(session.policy.value, entity.auth_policy):
                raise fail(for_session(TpmRc.POLICY_FAIL, number), "policy digest mismatch")
            if session.command_code is not None and session.command_code != spec.code:
                raise fail(for_session(TpmRc.POLICY_CC, number), "policy is for another command")
            if session.pcr_counter is not None and session.pcr_counter != self.pcrs.update_counter:
                raise fail(TpmRc.PCR_CHANGED, "PCRs changed since PolicyPCR")
            if session.password_needed:
                self._check_lockout(entity)
                self._compare(entity, strip_auth(auth.hmac), number)
                return session
        else:
            if role is AuthRole.USER and not entity.user_with_auth:
                raise fail(TpmRc.AUTH_UNAVAILABLE, "the object needs a policy (userWithAuth)")
            if role is AuthRole.ADMIN and entity.admin_with_policy:
                raise fail(TpmRc.AUTH_UNAVAILABLE, "the object needs a policy (adminWithPolicy)")
        uses_auth_value = not session.is_policy or session.auth_value_needed
        if uses_auth_value:
            self._check_lockout(entity)
        key = session.hmac_key(entity.name, entity.auth_value)
        cp = cp_hash(session.auth_hash, spec.code, names, command.parameters)
        extra = self._other_nonces(command, number)
        expected = command_hmac(session.auth_hash, key, cp, auth.nonce, session.nonce_tpm,
                                auth.attributes, extra)
        if not std_hmac.compare_digest(expected, auth.hmac):
            if not uses_auth_value:
                raise fail(for_session(TpmRc.AUTH_FAIL, number), "session HMAC is wrong")
            self._auth_failed(entity, number)
        return session

    def _compare(self, entity: Entity, given: bytes, number: int) -> None:
        if not std_hmac.compare_digest(given, entity.auth_value):
            self._auth_failed(entity, number)

    def _auth_failed(self, entity: Entity, number: int) -> None:
        state = self.state
        if entity.name == LOCKOUT_NAME:
            state.lockout_auth_enabled = False
            state.lockout_timer_ms = self.now_ms()
            self.mark_changed()
            raise fail(for_session(TpmRc.AUTH_FAIL, number), "lockout authorization failed")
        if not entity.da_protected:
            raise fail(for_session(TpmRc.BAD_AUTH, number), "authorization failed (DA-exempt)")
        if state.recovery_time:
            state.failed_tries += 1
        state.self_heal_ms = self.now_ms()
        self.mark_changed()
        raise fail(for_session(TpmRc.AUTH_FAIL, number),
                   f"authorization failed ({state.failed_tries} of "
                   f"{state.max_tries} tries before lockout)")

    def self_heal(self) -> None:
        """Forgive one failure per ``recoveryTime`` seconds since the last one; re-enable
        lockoutAuth ``lockoutRecovery`` seconds after it failed (reference ``DASelfHeal``)."""
        heal(self.state, self.now_ms(), self.mark_changed)

    def _check_lockout(self, entity: Entity) -> None:
        if entity.name != LOCKOUT_NAME and not entity.da_protected:
            return
        self._note_da_used()
        self.self_heal()
        if entity.name == LOCKOUT_NAME:
            if not self.state.lockout_auth_enabled:
                raise fail(TpmRc.LOCKOUT, "lockout authorization is locked out")
        elif self.state.failed_tries >= self.state.max_tries:
            raise fail(TpmRc.LOCKOUT, "dictionary-attack lockout is in effect")

    def _note_da_used(self) -> None:
        """Record, durably before the check runs, that a DA-protected authValue is used."""
        if self.state.da_used:
            return
        self.state.da_used = True
        self.mark_changed()
        if self.on_da_used is not None:
            self.on_da_used()

    def reset_lockout(self) -> None:
        """TPM2_DictionaryAttackLockReset: failedTries back to 0."""
        self.state.failed_tries = 0
        self.mark_changed()

    def _acknowledge(
        self, code: int, parameters: bytes,
        entry: tuple[AuthCommand, Session | None, Entity | None],
    ) -> AuthResponse:
        auth, session, entity = entry
        if session is None:
            return AuthResponse(b"", TpmaSession.CONTINUE_SESSION, b"")
        attributes = auth.attributes & (TpmaSession.CONTINUE_SESSION | TpmaSession.DECRYPT
                                        | TpmaSession.ENCRYPT)
        value = b""
        if not session.password_needed:
            key = self._session_value(session, entity)
            value = response_hmac(session.auth_hash, key, rp_hash(session.auth_hash, code,
                                  parameters), session.nonce_tpm, session.nonce_caller,
                                  attributes)
        if not attributes & TpmaSession.CONTINUE_SESSION and session.handle in self.sessions:
            del self.sessions[session.handle]
        return AuthResponse(session.nonce_tpm, attributes, value)
