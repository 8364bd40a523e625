"""The vTPM engine: a TPM 2.0 that takes command buffers and returns response buffers.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59, section 5 and Part 1 section 18
("Command Processing"): header and size checks (TPM_RC_BAD_TAG, TPM_RC_COMMAND_SIZE,
TPM_RC_COMMAND_CODE), TPM_RC_INITIALIZE before Startup, handle validation, the authorization
area (password, HMAC and policy sessions, Part 1 section 19, with dictionary-attack
protection from section 19.8), then the command itself, then the response sessions (nonces
rolled, response HMACs). Every failure is a response carrying a TPM_RC from Part 2 Table 16;
:meth:`Tpm.execute` never raises for any input.

Randomness and the clock are injected, so runs are reproducible with a seed.
"""

from __future__ import annotations

import secrets
import struct
import time
from collections.abc import Callable

from cvm.errors import CvmError, FormatError, StatusError, TruncatedError
from cvm.formats.tpm2.command import (
    HEADER_SIZE,
    MAX_COMMAND_SIZE,
    AuthCommand,
    Command,
    Response,
)
from cvm.formats.tpm2.constants import (
    PCR_COUNT,
    TpmaNv,
    TpmaObject,
    TpmCc,
    TpmHt,
    TpmRh,
    TpmSt,
    handle_type,
)
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.sensitive import SensitiveCreate
from cvm.vtpm import (  # noqa: F401  (registers the command handlers)
    attestation_commands,
    context_commands,
    hash_commands,
    nv_commands,
    object_commands,
    pcr_commands,
    policy_commands,
    sequence_commands,
    startup_commands,
)
from cvm.vtpm.authorization import Authorization, Entity
from cvm.vtpm.dispatch import COMMANDS, Call, unmarshal_error
from cvm.vtpm.pcr import PcrBanks
from cvm.vtpm.sequence import Sequence
from cvm.vtpm.session import Session
from cvm.vtpm.state import PersistentState
from cvm.vtpm.tpm_object import (
    TpmObject,
    build,
    fail,
    primary_context,
    seeded_random,
    strip_auth,
)
from cvm.vtpm.volatile import VolatileState
from cvm.wire import Reader

MAX_LOADED_OBJECTS = 3
TRANSIENT_FIRST = 0x80000000
_PERMANENT_HANDLES = frozenset(int(h) for h in TpmRh) - {int(TpmRh.PW)}  # not TPM_RS_PW
_PASSWORD = int(TpmRh.PW)
_HEADER = struct.Struct(">HII")  # tag, commandSize, commandCode (Header's layout)
_TAGS = frozenset((int(TpmSt.NO_SESSIONS), int(TpmSt.SESSIONS)))
Random = Callable[[int], bytes]


class Tpm(Authorization):
    """A TPM 2.0 with its state; :meth:`execute` is the only door in."""

    def __init__(
        self,
        state: PersistentState | None = None,
        random: Random | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.random: Random = random or secrets.token_bytes
        self.clock = clock or time.monotonic
        self.state = state or PersistentState.manufacture(self.random)
        self.pcrs = PcrBanks()
        self.objects: dict[int, TpmObject] = {}
        self.sequences: dict[int, Sequence] = {}
        self.sessions: dict[int, Session] = {}
        self.saved_sessions: dict[int, tuple[Session, int]] = {}
        self.context_counter = 0
        self.started = False
        self.null_seed = b""
        self.null_proof = b""
        self.locality = 0
        self.changed = False
        self.on_da_used: Callable[[], None] | None = None
        self._boot_time = self.clock()

    # ---- the door --------------------------------------------------------------------
    def execute(self, data: bytes, locality: int = 0) -> bytes:
        """Run one command buffer at ``locality``; return the response buffer."""
        try:
            return self._execute(bytes(data), locality)
        except StatusError as error:
            return Response(error.code).to_bytes(False)
        except FormatError as error:
            code = TpmRc.INSUFFICIENT if isinstance(error, TruncatedError) else TpmRc.VALUE
            return Response(for_parameter(code, 0)).to_bytes(False)
        except (CvmError, ValueError, KeyError, IndexError, OverflowError, AssertionError):
            return Response(TpmRc.FAILURE).to_bytes(False)

    def _execute(self, data: bytes, locality: int) -> bytes:
        if not (0 <= locality <= 4 or 32 <= locality <= 255):  # TPMA_LOCALITY: 0–4, 32–255
            raise fail(TpmRc.LOCALITY, f"locality {locality} does not exist")
        if len(data) < HEADER_SIZE or len(data) > MAX_COMMAND_SIZE:
            raise fail(TpmRc.COMMAND_SIZE, "command size out of range")
        tag, size, code = _HEADER.unpack_from(data)  # the length is checked above
        if tag not in _TAGS:
            raise fail(TpmRc.BAD_TAG, "bad command tag")
        if size != len(data):
            raise fail(TpmRc.COMMAND_SIZE, "commandSize does not match the buffer")
        spec = COMMANDS.get(code)
        if spec is None:
            raise fail(TpmRc.COMMAND_CODE, f"command code {code:#x} not implemented")
        if self.started == (spec.code == TpmCc.STARTUP):
            raise fail(TpmRc.INITIALIZE, "TPM2_Startup is needed first / only once")
        self.self_heal()
        present = (len(data) - HEADER_SIZE) // 4
        if present < spec.handles:  # Part 1 18.7: the handle that is not there, by number
            raise fail(for_handle(TpmRc.INSUFFICIENT, present + 1), "the handle area ends early")
        try:
            command = Command.parse(data, spec.handles)
        except FormatError:
            raise fail(TpmRc.AUTHSIZE, "malformed handle or authorization area") from None
        self.locality = locality
        handles = command.handles
        for number, handle in enumerate(handles, start=1):
            self._check_handle(handle, number)
        authorized = spec.authorized
        if len(command.sessions) < len(authorized):
            raise fail(TpmRc.AUTH_MISSING, "the command needs an authorization session")
        used: list[tuple[AuthCommand, Session | None, Entity | None]] = []
        if command.sessions:
            # the handles' names enter only HMAC computations: none for password sessions
            names = ([self.entity(handle, number).name
                      for number, handle in enumerate(handles, start=1)]
                     if any(s.session_handle != _PASSWORD for s in command.sessions) else [])
            for number, session_cmd in enumerate(command.sessions, start=1):
                self._check_session_attributes(spec.code, session_cmd, number, command.sessions)
                if number <= len(authorized):
                    position, role = authorized[number - 1]
                    entity = self.entity(handles[position], number)
                    session = self._authorize(spec, command, names, session_cmd, entity, role,
                                              number)
                    used.append((session_cmd, session, entity))
                else:
                    used.append((session_cmd, self._audit_only(spec, command, names,
                                                                session_cmd, number), None))
        parameters = self._decrypt(command.parameters, used)
        params = Reader(parameters, "parameters", endian="big")
        policy_auth = tuple(s is not None and s.is_policy for _, s, _ in used)
        call = Call(spec.code, list(command.handles), params, locality, policy_auth)
        try:
            result = spec.handler(self, call)
        except FormatError as error:
            if call.parsed:  # not the parameters: the command's own data
                raise
            raise unmarshal_error(call, error) from None
        if not call.parsed:
            raise fail(TpmRc.FAILURE, "handler did not check its parameters")
        for _, session, _ in used:
            if session is not None:
                session.nonce_tpm = self.random(len(session.nonce_tpm))
        out = self._encrypt(result.parameters, used)
        responses = tuple(self._acknowledge(spec.code, out, entry) for entry in used)
        response = Response(0, result.handles, out, responses)
        return response.to_bytes(bool(command.sessions))

    # ---- handles and entities ----------------------------------------------------------
    def _check_handle(self, handle: int, number: int) -> None:
        kind = handle_type(handle)
        ok = (
            (kind == TpmHt.PCR and handle < PCR_COUNT)
            or (kind == TpmHt.PERMANENT and handle in _PERMANENT_HANDLES)
            or (kind == TpmHt.TRANSIENT and (handle in self.objects or handle in self.sequences))
            or (kind == TpmHt.PERSISTENT and handle in self.state.persistent)
            or (kind == TpmHt.NV_INDEX and handle in self.state.nv)
            or (kind in (TpmHt.HMAC_SESSION, TpmHt.POLICY_SESSION) and handle in self.sessions)
        )
        if not ok:
            code = TpmRc.VALUE if kind == TpmHt.PCR else TpmRc.HANDLE
            raise fail(for_handle(code, number), f"handle {handle:#010x} is not loaded")

    def lookup(self, handle: int, number: int) -> TpmObject:
        """The loaded or persistent object at ``handle`` (TPM_RC_HANDLE otherwise; a sequence
        is no object: TPM_RC_SEQUENCE)."""
        if handle in self.sequences:
            raise fail(TpmRc.SEQUENCE, f"{handle:#010x} is a sequence, not an object")
        item = self.objects.get(handle) or self.state.persistent.get(handle)
        if item is None:
            raise fail(for_handle(TpmRc.HANDLE, number), f"no object at {handle:#010x}")
        return item

    def entity(self, handle: int, number: int) -> Entity:
        kind = handle_type(handle)
        sequence = self.sequences.get(handle)
        if sequence is not None:
            # no nameAlg, so an empty Name; DA-exempt; its authValue serves USER roles
            return Entity(b"", sequence.auth_value, b"", False)
        if kind in (TpmHt.TRANSIENT, TpmHt.PERSISTENT):
            item = self.lookup(handle, number)
            return Entity(item.name, item.auth_value, item.public.auth_policy,
                          not item.has(TpmaObject.NO_DA),
                          item.has(TpmaObject.USER_WITH_AUTH),
                          item.has(TpmaObject.ADMIN_WITH_POLICY))
        if kind == TpmHt.NV_INDEX:
            index = self.state.nv[handle]
            return Entity(index.public.name(), strip_auth(index.auth_value),
                          index.public.auth_policy,
                          not index.public.attributes & TpmaNv.NO_DA)
        name = handle.to_bytes(4, "big")
        if kind == TpmHt.PERMANENT:
            # Every hierarchy but lockout is DA-exempt (Part 1 19.8.1; the reference's
            # IsDAExempted); lockoutAuth has its own protection (lockoutRecovery).
            auth = self.state.auths.get(handle, b"")
            return Entity(name, strip_auth(auth), b"", handle == TpmRh.LOCKOUT)
        return Entity(name, b"", b"", False)

    def load_object(self, item: TpmObject) -> int:
        handle = self._free_slot()
        self.objects[handle] = item
        return handle

    def load_sequence(self, sequence: Sequence) -> int:
        """Give ``sequence`` a transient slot and handle (it shares the objects' slots)."""
        handle = self._free_slot()
        self.sequences[handle] = sequence
        return handle

    def _free_slot(self) -> int:
        if len(self.objects) + len(self.sequences) >= MAX_LOADED_OBJECTS:
            raise fail(TpmRc.OBJECT_MEMORY, "no free transient object slot")
        return next(h for h in range(TRANSIENT_FIRST, TRANSIENT_FIRST + 0x1000)
                    if h not in self.objects and h not in self.sequences)

    def proof(self, hierarchy: int) -> bytes:
        if hierarchy == TpmRh.NULL:
            return self.null_proof
        return self.state.proofs[hierarchy]

    def seed(self, hierarchy: int) -> bytes:
        if hierarchy == TpmRh.NULL:
            return self.null_seed
        return self.state.seeds[hierarchy]

    def primary_public(self, hierarchy: int, template: Public) -> Public:
        """The public area TPM2_CreatePrimary(hierarchy, template) returns (no slot used)."""
        context = primary_context(template, b"")
        public, _ = build(template, SensitiveCreate(), seeded_random(self.seed(hierarchy),
                                                                      context), context)
        return public

    def volatile(self) -> VolatileState:
        """The state a TPM reset clears (PCRs, null seed, objects, sequences, sessions)."""
        return VolatileState(self.started, self.null_seed, self.null_proof, self.pcrs,
                             self.objects, self.sessions, self.saved_sessions,
                             self.context_counter, self.sequences)

    def restore_volatile(self, volatile: VolatileState) -> None:
        self.started, self.null_seed, self.null_proof = (
            volatile.started, volatile.null_seed, volatile.null_proof)
        self.pcrs, self.objects, self.sessions = volatile.pcrs, volatile.objects, volatile.sessions
        self.saved_sessions = volatile.saved_sessions
        self.context_counter = volatile.context_counter
        self.sequences = volatile.sequences

    def now_ms(self) -> int:
        """The TPM clock: the stored clock plus the time since this engine started."""
        return self.state.clock_ms + int((self.clock() - self._boot_time) * 1000)

    def resume_clock(self, since: float) -> None:
        """Count the time since ``since`` (a reading of this engine's clock, e.g. when the
        state was saved) as time the TPM ran: a TPM kept powered between runs. A ``since``
        in the future (a clock set back) adds nothing; the TPM clock never goes back."""
        self._boot_time = min(self._boot_time, since)

    def save_clock(self) -> None:
        """Fold the time elapsed since boot into the non-volatile clock (before saving it)."""
        now = self.clock()
        self.state.clock_ms += int((now - self._boot_time) * 1000)
        self._boot_time = now
        self.mark_changed()

