"""A TPM 2.0 client: builds command buffers, runs sessions, parses responses.

The caller side of TCG "TPM 2.0 Library, Part 1", revision 1.59, section 19 (authorization
sessions: password, HMAC, policy), over any transport that takes a command buffer and
returns a response buffer (the vTPM's :meth:`~cvm.vtpm.engine.Tpm.execute`, or the SVSM
vTPM protocol). A non-zero response code raises :class:`~cvm.errors.StatusError` with the
code and its Part 2 Table 16 name. Response HMACs are checked (IntegrityError otherwise).
"""

from __future__ import annotations

import hmac as std_hmac
import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cvm.errors import IntegrityError, StatusError
from cvm.formats.tpm2.command import AuthCommand, Command, Response
from cvm.formats.tpm2.constants import (
    TpmAlg,
    TpmaSession,
    TpmCc,
    TpmHt,
    TpmRh,
    TpmSe,
    TpmSt,
    digest_size,
    handle_type,
)
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.response_code import describe
from cvm.formats.tpm2.sensitive import PrivateBlob, SensitiveCreate
from cvm.formats.tpm2.signature import Signature, SigScheme, Ticket
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, tpm2b, writer
from cvm.vtpm.parameter_encryption import cfb_crypt, make_salt
from cvm.vtpm.session import (
    command_hmac,
    cp_hash,
    is_policy_type,
    response_hmac,
    rp_hash,
    session_key,
)
from cvm.wire import Reader

Transport = Callable[[bytes], bytes]
_COMMAND_NAMES = {int(code): code.name for code in TpmCc}
_OBJECT_KINDS = (int(TpmHt.TRANSIENT), int(TpmHt.PERSISTENT))
_NV_INDEX = int(TpmHt.NV_INDEX)
_PASSWORD, _CONTINUE = int(TpmRh.PW), int(TpmaSession.CONTINUE_SESSION)
_COUNT = struct.Struct(">I")
_ALG = struct.Struct(">H")


def _command_name(code: int) -> str:
    """TPM_CC ``code``'s name (ValueError for a code that is none)."""
    name = _COMMAND_NAMES.get(code)
    return name if name is not None else TpmCc(code).name


@dataclass
class ClientSession:
    """The caller's view of a session: nonces, key, and what its policy asks for."""

    handle: int
    session_type: int
    auth_hash: int
    nonce_tpm: bytes
    nonce_caller: bytes
    session_key: bytes = b""
    bind_name: bytes | None = None
    auth_value_needed: bool = False
    password_needed: bool = False
    symmetric_bits: int = 0

    @property
    def is_policy(self) -> bool:
        return is_policy_type(self.session_type)  # a plain function: mutation testing reaches it


@dataclass
class Auth:
    """One authorization: a password (``session`` None) or a session, and the authValue."""

    value: bytes = b""
    session: ClientSession | None = None
    continue_session: bool = True
    decrypt: bool = False
    encrypt: bool = False


@dataclass
class Reply:
    handles: tuple[int, ...]
    params: Reader


@dataclass
class TpmClient:
    """Typed TPM commands over ``transport``."""

    transport: Transport
    random: Callable[[int], bytes] = secrets.token_bytes
    names: dict[int, bytes] = field(default_factory=dict)

    # ---- the core ----------------------------------------------------------------------
    def name_of(self, handle: int) -> bytes:
        name = self.names.get(handle)
        if name is not None:
            return name
        kind = handle_type(handle)
        if kind in _OBJECT_KINDS:
            self.read_public(handle)
        elif kind == _NV_INDEX:
            self.nv_read_public(handle)
        return self.names.get(handle, handle.to_bytes(4, "big"))

    def call(self, code: int, handles: Sequence[int] = (), params: bytes = b"",
             auths: Sequence[Auth] = (), response_handles: int = 0) -> Reply:
        names = [self.name_of(h) for h in handles] if auths else []
        for auth in auths:
            if auth.session is not None:
                auth.session.nonce_caller = self.random(len(auth.session.nonce_tpm))
        params = self._crypt(params, auths, names, command=True)
        sessions = [self._authorize(code, names, params, auth, names[number],
                                    self._other_nonces(auths)
                                    if number == 0 and auth.session is not None else b"")
                    for number, auth in enumerate(auths)]  # a password uses no nonce
        command = Command(code, tuple(handles), tuple(sessions), params)
        response = Response.parse(self.transport(command.to_bytes()), response_handles)
        if response.code:
            raise StatusError(f"TPM command {_command_name(code)} failed: "
                              f"{describe(response.code)}", response.code)
        if len(response.sessions) != len(auths):  # a stripped area would go unchecked
            raise IntegrityError(f"TPM command {_command_name(code)}: the response carries "
                                 f"{len(response.sessions)} session area(s) for "
                                 f"{len(auths)} session(s)")
        for index, (auth, sent, acknowledged) in enumerate(
            zip(auths, sessions, response.sessions, strict=True)
        ):
            if auth.session is not None:
                self._acknowledge(code, response.parameters, auth, sent, acknowledged.nonce,
                                  acknowledged.hmac, names[index])
        out = self._crypt(response.parameters, auths, names, command=False)
        return Reply(response.handles, reader(out, f"{_command_name(code)} reply"))

    def _key(self, session: ClientSession, name: bytes, value: bytes) -> bytes:
        if session.is_policy:
            return session.session_key + (value if session.auth_value_needed else b"")
        if session.bind_name == name:
            return session.session_key
        return session.session_key + value

    @staticmethod
    def _attributes(auth: Auth) -> int:
        return ((TpmaSession.CONTINUE_SESSION if auth.continue_session else 0)
                | (TpmaSession.DECRYPT if auth.decrypt else 0)
                | (TpmaSession.ENCRYPT if auth.encrypt else 0))

    @staticmethod
    def _other_nonces(auths: Sequence[Auth]) -> bytes:
        """nonceTPM of later sessions that decrypt or encrypt (in the first session's HMAC)."""
        decrypt = next((i for i, a in enumerate(auths) if a.decrypt), None)
        encrypt = next((i for i, a in enumerate(auths) if a.encrypt), None)
        indices = [i for i in (decrypt,) if i]
        if encrypt and encrypt != decrypt:
            indices.append(encrypt)
        sessions = (auths[i].session for i in indices)
        return b"".join(s.nonce_tpm for s in sessions if s is not None)

    def _crypt(self, params: bytes, auths: Sequence[Auth], names: list[bytes],
               command: bool) -> bytes:
        """Parameter encryption by the session with decrypt (command) or encrypt (response)."""
        for index, auth in enumerate(auths):
            session = auth.session
            if session is None or not (auth.decrypt if command else auth.encrypt):
                continue
            if not session.symmetric_bits:
                return params  # the TPM refuses it (TPM_RC_SYMMETRIC)
            value = self._key(session, names[index], auth.value)
            newer, older = ((session.nonce_caller, session.nonce_tpm) if command
                            else (session.nonce_tpm, session.nonce_caller))
            return cfb_crypt(params, session.auth_hash, session.symmetric_bits, value, newer,
                             older, encrypt=command)
        return params

    def _authorize(self, code: int, names: list[bytes], params: bytes, auth: Auth,
                   name: bytes, other_nonces: bytes) -> AuthCommand:
        session = auth.session
        if session is None:
            return AuthCommand(_PASSWORD, b"", _CONTINUE, auth.value)
        attributes = self._attributes(auth)
        if session.is_policy and session.password_needed:
            return AuthCommand(session.handle, session.nonce_caller, attributes, auth.value)
        key = self._key(session, name, auth.value)
        cp = cp_hash(session.auth_hash, code, names, params)
        mac = command_hmac(session.auth_hash, key, cp, session.nonce_caller, session.nonce_tpm,
                           attributes, other_nonces)
        return AuthCommand(session.handle, session.nonce_caller, attributes, mac)

    def _acknowledge(self, code: int, params: bytes, auth: Auth, sent: AuthCommand,
                     nonce: bytes, mac: bytes, name: bytes) -> None:
        session = auth.session
        if session is None:
            return
        session.nonce_tpm = nonce
        if not session.password_needed:
            key = self._key(session, name, auth.value)
            expected = response_hmac(session.auth_hash, key,
                                     rp_hash(session.auth_hash, code, params), nonce,
                                     session.nonce_caller, sent.attributes)
            if not std_hmac.compare_digest(expected, mac):
                raise IntegrityError("response HMAC does not verify")

    # ---- basics ------------------------------------------------------------------------
    def startup(self, clear: bool = True) -> None:
        self.call(TpmCc.STARTUP, params=writer().u16(0 if clear else 1).to_bytes())

    def shutdown(self, clear: bool = True) -> None:
        self.call(TpmCc.SHUTDOWN, params=writer().u16(0 if clear else 1).to_bytes())

    def get_random(self, count: int) -> bytes:
        return read_tpm2b(self.call(TpmCc.GET_RANDOM, params=writer().u16(count).to_bytes())
                          .params, "randomBytes")

    def get_capability(self, capability: int, first: int, count: int) -> tuple[bool, bytes]:
        reply = self.call(TpmCc.GET_CAPABILITY,
                          params=writer().u32(capability).u32(first).u32(count).to_bytes())
        return reply.params.u8("moreData") == 1, reply.params.rest()

    def pcr_read(self, selection: PcrSelectionList) -> tuple[int, PcrSelectionList, list[bytes]]:
        reply = self.call(TpmCc.PCR_READ, params=selection.to_bytes())
        counter = reply.params.u32("pcrUpdateCounter")
        selected = PcrSelectionList.read(reply.params)
        values = [read_tpm2b(reply.params, "digest") for _ in range(reply.params.u32("count"))]
        return counter, selected, values

    def pcr_extend(self, pcr: int, digests: dict[int, bytes], auth: Auth | None = None) -> None:
        try:
            body = b"".join([_COUNT.pack(len(digests)),
                             *[_ALG.pack(alg) + value for alg, value in digests.items()]])
        except struct.error:  # an algorithm that does not fit: the writer's error
            writer_body = writer().u32(len(digests))
            for alg, value in digests.items():
                writer_body.u16(alg).put(value)
            body = writer_body.to_bytes()
        self.call(TpmCc.PCR_EXTEND, (pcr,), body, (auth or Auth(),))

    def pcr_event(self, pcr: int, data: bytes) -> dict[int, bytes]:
        reply = self.call(TpmCc.PCR_EVENT, (pcr,), tpm2b(data), (Auth(),))
        out = {}
        for _ in range(reply.params.u32("count")):
            alg = reply.params.u16("hashAlg")
            out[alg] = reply.params.take(digest_size(alg), "digest")
        return out

    def pcr_reset(self, pcr: int) -> None:
        self.call(TpmCc.PCR_RESET, (pcr,), b"", (Auth(),))

    # ---- objects -----------------------------------------------------------------------
    def create_primary(self, hierarchy: int, template: Public, auth: bytes = b"",
                       data: bytes = b"", hierarchy_auth: Auth | None = None) -> tuple[int, Public]:
        params = (SensitiveCreate(auth, data).to_tpm2b() + template.to_tpm2b() + tpm2b(b"")
                  + PcrSelectionList().to_bytes())
        reply = self.call(TpmCc.CREATE_PRIMARY, (hierarchy,), params,
                          (hierarchy_auth or Auth(),), 1)
        public = Public.read_tpm2b(reply.params)
        self.names[reply.handles[0]] = public.name()
        return reply.handles[0], public

    def create(self, parent: int, template: Public, data: bytes = b"", auth: bytes = b"",
               parent_auth: Auth | None = None) -> tuple[PrivateBlob, Public]:
        params = (SensitiveCreate(auth, data).to_tpm2b() + template.to_tpm2b() + tpm2b(b"")
                  + PcrSelectionList().to_bytes())
        reply = self.call(TpmCc.CREATE, (parent,), params, (parent_auth or Auth(),))
        blob = PrivateBlob.read_tpm2b(reply.params)
        return blob, Public.read_tpm2b(reply.params)

    def load(self, parent: int, blob: PrivateBlob, public: Public,
             parent_auth: Auth | None = None) -> int:
        reply = self.call(TpmCc.LOAD, (parent,), blob.to_tpm2b() + public.to_tpm2b(),
                          (parent_auth or Auth(),), 1)
        self.names[reply.handles[0]] = read_tpm2b(reply.params, "name")
        return reply.handles[0]

    def load_external(self, public: Public, hierarchy: int = TpmRh.OWNER,
                      sensitive: bytes = b"") -> int:
        params = tpm2b(sensitive) + public.to_tpm2b() + writer().u32(hierarchy).to_bytes()
        reply = self.call(TpmCc.LOAD_EXTERNAL, params=params, response_handles=1)
        self.names[reply.handles[0]] = read_tpm2b(reply.params, "name")
        return reply.handles[0]

    def read_public(self, handle: int) -> tuple[Public, bytes, bytes]:
        reply = self.call(TpmCc.READ_PUBLIC, (handle,))
        public = Public.read_tpm2b(reply.params)
        name = read_tpm2b(reply.params, "name")
        self.names[handle] = name
        return public, name, read_tpm2b(reply.params, "qualifiedName")

    def unseal(self, handle: int, auth: Auth | None = None) -> bytes:
        reply = self.call(TpmCc.UNSEAL, (handle,), b"", (auth or Auth(),))
        return read_tpm2b(reply.params, "outData")

    def flush(self, handle: int) -> None:
        self.call(TpmCc.FLUSH_CONTEXT, params=writer().u32(handle).to_bytes())
        self.names.pop(handle, None)

    def evict_control(self, handle: int, persistent: int, auth: Auth | None = None) -> None:
        self.call(TpmCc.EVICT_CONTROL, (TpmRh.OWNER, handle),
                  writer().u32(persistent).to_bytes(), (auth or Auth(),))

    def quote(self, key: int, nonce: bytes, selection: PcrSelectionList,
              scheme: SigScheme | None = None, auth: Auth | None = None
              ) -> tuple[bytes, Signature]:
        params = tpm2b(nonce) + (scheme or SigScheme()).write(writer()).to_bytes()
        reply = self.call(TpmCc.QUOTE, (key,), params + selection.to_bytes(), (auth or Auth(),))
        attest = read_tpm2b(reply.params, "quoted")
        return attest, Signature.read(reply.params)

    def hash(self, data: bytes, hash_alg: int = TpmAlg.SHA256,
             hierarchy: int = TpmRh.OWNER) -> tuple[bytes, Ticket]:
        """TPM2_Hash: the digest and the hash-check ticket a restricted key's Sign needs."""
        reply = self.call(TpmCc.HASH, params=tpm2b(data) + writer().u16(hash_alg)
                          .u32(hierarchy).to_bytes())
        return read_tpm2b(reply.params, "outHash"), Ticket.read(reply.params)

    def sign(self, key: int, value: bytes, scheme: SigScheme | None = None,
             auth: Auth | None = None, ticket: Ticket | None = None) -> Signature:
        params = tpm2b(value) + (scheme or SigScheme()).write(writer()).to_bytes()
        params += (ticket or Ticket.null(TpmSt.HASHCHECK)).to_bytes()
        reply = self.call(TpmCc.SIGN, (key,), params, (auth or Auth(),))
        return Signature.read(reply.params)

    def verify_signature(self, key: int, value: bytes, signature: Signature) -> Ticket:
        reply = self.call(TpmCc.VERIFY_SIGNATURE, (key,), tpm2b(value) + signature.to_bytes())
        return Ticket.read(reply.params)

    def make_credential(self, key: int, credential: bytes, name: bytes) -> tuple[bytes, bytes]:
        reply = self.call(TpmCc.MAKE_CREDENTIAL, (key,), tpm2b(credential) + tpm2b(name))
        return read_tpm2b(reply.params, "credentialBlob"), read_tpm2b(reply.params, "secret")

    def activate_credential(self, activate: int, key: int, blob: bytes, secret: bytes,
                            activate_auth: Auth | None = None,
                            key_auth: Auth | None = None) -> bytes:
        reply = self.call(TpmCc.ACTIVATE_CREDENTIAL, (activate, key), tpm2b(blob) + tpm2b(secret),
                          (activate_auth or Auth(), key_auth or Auth()))
        return read_tpm2b(reply.params, "certInfo")

    # ---- sessions and policies ---------------------------------------------------------
    def start_auth_session(self, session_type: int = TpmSe.POLICY,
                           auth_hash: int = TpmAlg.SHA256, bind: int = TpmRh.NULL,
                           bind_auth: bytes = b"", salt_key: int | None = None,
                           symmetric_bits: int = 0) -> ClientSession:
        """A session, optionally salted to the loaded key ``salt_key`` and with AES-CFB
        parameter encryption of ``symmetric_bits`` (0: none)."""
        nonce_caller = self.random(digest_size(auth_hash))
        salt, encrypted_salt = b"", b""
        if salt_key is not None:
            salt, encrypted_salt = make_salt(self.read_public(salt_key)[0], self.random)
        symmetric = writer().u16(TpmAlg.NULL)
        if symmetric_bits:
            symmetric = writer().u16(TpmAlg.AES).u16(symmetric_bits).u16(TpmAlg.CFB)
        params = (tpm2b(nonce_caller) + tpm2b(encrypted_salt) + bytes([session_type])
                  + symmetric.to_bytes() + writer().u16(auth_hash).to_bytes())
        reply = self.call(TpmCc.START_AUTH_SESSION,
                          (TpmRh.NULL if salt_key is None else salt_key, bind), params,
                          response_handles=1)
        nonce_tpm = read_tpm2b(reply.params, "nonceTPM")
        session = ClientSession(reply.handles[0], session_type, auth_hash, nonce_tpm,
                                nonce_caller, symmetric_bits=symmetric_bits)
        if bind != TpmRh.NULL:
            session.bind_name = self.name_of(bind)
        session.session_key = session_key(auth_hash, bind_auth.rstrip(b"\x00"), salt,
                                          nonce_tpm, nonce_caller)
        return session

    def policy_pcr(self, session: ClientSession, selection: PcrSelectionList,
                   pcr_digest: bytes = b"") -> None:
        self.call(TpmCc.POLICY_PCR, (session.handle,), tpm2b(pcr_digest) + selection.to_bytes())

    def policy_auth_value(self, session: ClientSession) -> None:
        self.call(TpmCc.POLICY_AUTH_VALUE, (session.handle,))
        session.auth_value_needed, session.password_needed = True, False

    def policy_password(self, session: ClientSession) -> None:
        self.call(TpmCc.POLICY_PASSWORD, (session.handle,))
        session.auth_value_needed, session.password_needed = False, True

    def policy_command_code(self, session: ClientSession, code: int) -> None:
        self.call(TpmCc.POLICY_COMMAND_CODE, (session.handle,), writer().u32(code).to_bytes())

    def policy_or(self, session: ClientSession, branches: Sequence[bytes]) -> None:
        body = writer().u32(len(branches))
        for branch in branches:
            put_tpm2b(body, branch)
        self.call(TpmCc.POLICY_OR, (session.handle,), body.to_bytes())

    def policy_authorize(self, session: ClientSession, approved: bytes, policy_ref: bytes,
                         key_name: bytes, ticket: Ticket) -> None:
        params = tpm2b(approved) + tpm2b(policy_ref) + tpm2b(key_name) + ticket.to_bytes()
        self.call(TpmCc.POLICY_AUTHORIZE, (session.handle,), params)

    def policy_secret(self, session: ClientSession, auth_handle: int,
                      auth: Auth | None = None) -> None:
        params = tpm2b(b"") + tpm2b(b"") + tpm2b(b"") + bytes(4)
        self.call(TpmCc.POLICY_SECRET, (auth_handle, session.handle), params, (auth or Auth(),))

    def policy_get_digest(self, session: ClientSession) -> bytes:
        reply = self.call(TpmCc.POLICY_GET_DIGEST, (session.handle,))
        return read_tpm2b(reply.params, "policyDigest")

    def policy_restart(self, session: ClientSession) -> None:
        self.call(TpmCc.POLICY_RESTART, (session.handle,))
        session.auth_value_needed = session.password_needed = False

    # ---- NV and dictionary attack ------------------------------------------------------
    def nv_define_space(self, public: NvPublic, auth: bytes = b"",
                        owner_auth: Auth | None = None) -> None:
        self.call(TpmCc.NV_DEFINE_SPACE, (TpmRh.OWNER,), tpm2b(auth) + public.to_tpm2b(),
                  (owner_auth or Auth(),))

    def nv_undefine_space(self, index: int, owner_auth: Auth | None = None) -> None:
        self.call(TpmCc.NV_UNDEFINE_SPACE, (TpmRh.OWNER, index), b"", (owner_auth or Auth(),))
        self.names.pop(index, None)

    def nv_read_public(self, index: int) -> tuple[NvPublic, bytes]:
        reply = self.call(TpmCc.NV_READ_PUBLIC, (index,))
        public = NvPublic.read_tpm2b(reply.params)
        name = read_tpm2b(reply.params, "nvName")
        self.names[index] = name
        return public, name

    def _nv_auth(self, index: int, auth_handle: int | None) -> tuple[int, int]:
        self.names.pop(index, None)
        return (auth_handle if auth_handle is not None else index), index

    def nv_write(self, index: int, data: bytes, offset: int = 0, auth: Auth | None = None,
                 auth_handle: int | None = None) -> None:
        handles = self._nv_auth(index, auth_handle)
        self.call(TpmCc.NV_WRITE, handles, tpm2b(data) + writer().u16(offset).to_bytes(),
                  (auth or Auth(),))
        self.names.pop(index, None)

    def nv_read(self, index: int, size: int, offset: int = 0, auth: Auth | None = None,
                auth_handle: int | None = None) -> bytes:
        handles = self._nv_auth(index, auth_handle)
        reply = self.call(TpmCc.NV_READ, handles, writer().u16(size).u16(offset).to_bytes(),
                          (auth or Auth(),))
        return read_tpm2b(reply.params, "data")

    def nv_increment(self, index: int, auth: Auth | None = None,
                     auth_handle: int | None = None) -> None:
        self.call(TpmCc.NV_INCREMENT, self._nv_auth(index, auth_handle), b"", (auth or Auth(),))
        self.names.pop(index, None)

    def nv_extend(self, index: int, data: bytes, auth: Auth | None = None,
                  auth_handle: int | None = None) -> None:
        self.call(TpmCc.NV_EXTEND, self._nv_auth(index, auth_handle), tpm2b(data),
                  (auth or Auth(),))
        self.names.pop(index, None)

    def dictionary_attack_lock_reset(self, auth: Auth | None = None) -> None:
        self.call(TpmCc.DICTIONARY_ATTACK_LOCK_RESET, (TpmRh.LOCKOUT,), b"", (auth or Auth(),))

    def dictionary_attack_parameters(self, max_tries: int, recovery_time: int,
                                     lockout_recovery: int, auth: Auth | None = None) -> None:
        params = writer().u32(max_tries).u32(recovery_time).u32(lockout_recovery).to_bytes()
        self.call(TpmCc.DICTIONARY_ATTACK_PARAMETERS, (TpmRh.LOCKOUT,), params,
                  (auth or Auth(),))

    def hierarchy_change_auth(self, hierarchy: int, new_auth: bytes,
                              auth: Auth | None = None) -> None:
        self.call(TpmCc.HIERARCHY_CHANGE_AUTH, (hierarchy,), tpm2b(new_auth), (auth or Auth(),))
