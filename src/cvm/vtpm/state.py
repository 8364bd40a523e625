"""The vTPM's non-volatile state and its byte serialisation.

What a TPM keeps across power cycles (TCG "TPM 2.0 Library, Part 1", revision 1.59, section
37 "Non-Volatile Memory" and section 14 "Hierarchies"): the primary seeds and proofs of the
platform, storage (owner) and endorsement hierarchies, the hierarchy authValues, the
dictionary-attack counters, parameters and timers, NV indices, persistent objects, resetCount /
restartCount, the saved PCRs of an orderly Shutdown(STATE), and the floor below which no new
NV counter may start (so deleting and redefining a counter cannot roll it back).

The dictionary-attack timers are kept on the TPM clock (``clock_ms``, which persists): the time
of the last failure, from which ``recoveryTime`` forgives one failure at a time, and the time
lockoutAuth was disabled, from which ``lockoutRecovery`` re-enables it. ``da_used`` records that
a DA-protected authValue was checked since the last Startup without an orderly Shutdown since:
the next Startup then counts one failure, as the reference TPM does (``USE_DA_USED``), so
cutting the power in the middle of a wrong guess does not make the guess free.

The serialisation is cvm's own (there is no TCG format for it): ``"CVMTPMNV" ‖ u32 version``
then the fields in a fixed order, big-endian, TPM2B-style sizes. Protection at rest
(encryption, rollback) is the SVSM's job, not this module's; in the SVSM these bytes exist
between calls only in its VMPL0 state pages (:mod:`cvm.guest.svsm.svsm`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cvm.errors import FormatError, UsageError
from cvm.formats.tpm2.constants import TpmRh
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.sensitive import Sensitive
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, writer
from cvm.vtpm.tpm_object import TpmObject

STATE_MAGIC = b"CVMTPMNV"
STATE_VERSION = 2
SEED_SIZE = 32
HIERARCHIES: tuple[int, ...] = (TpmRh.PLATFORM, TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.LOCKOUT)
DEFAULT_MAX_TRIES = 3
DEFAULT_RECOVERY_TIME = 1000
DEFAULT_LOCKOUT_RECOVERY = 1000
# failedTries, maxTries, recoveryTime, lockoutRecovery, resetCount, restartCount (u32 each),
# clock, nvCounterFloor (u64), orderly (u8), selfHealTimer, lockoutTimer (u64),
# lockOutAuthEnabled, daUsed (u8): one fixed run, read and written at once
_COUNTERS = struct.Struct(">6IQQBQQBB")
# the fast reader's runs: magic, version and the three hierarchies' seed and proof at their
# full size; the three counts (saved PCR banks, NV indices, persistent objects) after the fixed
# run of counters
_HEAD = struct.Struct(">8sI" + f"H{SEED_SIZE}s" * 6)
_FULL_SIZES = [SEED_SIZE] * 6
_COUNTERS_AND_COUNTS = struct.Struct(_COUNTERS.format + "III")  # both runs in one call
_NO_AUTHS = bytes(8)  # four empty authValues: four zero sizes (the usual state)
_MAX_AUTH = 64


@dataclass
class NvIndex:
    """A defined NV index: its public area, authValue and data."""

    public: NvPublic
    auth_value: bytes
    data: bytes = b""


@dataclass
class PersistentState:
    """Everything the vTPM must remember across a power cycle."""

    seeds: dict[int, bytes]
    proofs: dict[int, bytes]
    auths: dict[int, bytes] = field(default_factory=dict)
    failed_tries: int = 0
    max_tries: int = DEFAULT_MAX_TRIES
    recovery_time: int = DEFAULT_RECOVERY_TIME
    lockout_recovery: int = DEFAULT_LOCKOUT_RECOVERY
    reset_count: int = 0
    restart_count: int = 0
    clock_ms: int = 0
    self_heal_ms: int = 0
    lockout_timer_ms: int = 0
    lockout_auth_enabled: bool = True
    da_used: bool = False
    nv_counter_floor: int = 0
    orderly_state: bool = False
    saved_pcrs: dict[int, list[bytes]] = field(default_factory=dict)
    nv: dict[int, NvIndex] = field(default_factory=dict)
    persistent: dict[int, TpmObject] = field(default_factory=dict)

    @classmethod
    def manufacture(cls, take: Callable[[int], bytes]) -> PersistentState:
        """Fresh seeds and proofs (TPM manufacture); ``take(n)`` gives n random bytes."""
        seeds = {h: take(SEED_SIZE) for h in HIERARCHIES[:3]}
        proofs = {h: take(SEED_SIZE) for h in HIERARCHIES[:3]}
        return cls(seeds, proofs, {h: b"" for h in HIERARCHIES})

    def to_bytes(self) -> bytes:
        sink = writer().put(STATE_MAGIC).u32(STATE_VERSION)
        for handle in HIERARCHIES[:3]:
            put_tpm2b(sink, self.seeds[handle])
            put_tpm2b(sink, self.proofs[handle])
        for handle in HIERARCHIES:
            put_tpm2b(sink, self.auths.get(handle, b""))
        try:
            sink.put(_COUNTERS.pack(
                self.failed_tries, self.max_tries, self.recovery_time, self.lockout_recovery,
                self.reset_count, self.restart_count, self.clock_ms, self.nv_counter_floor,
                self.orderly_state, self.self_heal_ms, self.lockout_timer_ms,
                self.lockout_auth_enabled, self.da_used))
        except struct.error:
            raise UsageError("vTPM state: a counter or timer is out of range") from None
        sink.u32(len(self.saved_pcrs))
        for bank, values in sorted(self.saved_pcrs.items()):
            sink.u16(bank).u32(len(values))
            for value in values:
                put_tpm2b(sink, value)
        sink.u32(len(self.nv))
        for _, index in sorted(self.nv.items()):
            sink.put(index.public.to_tpm2b())
            put_tpm2b(sink, index.auth_value)
            put_tpm2b(sink, index.data)
        sink.u32(len(self.persistent))
        for handle, item in sorted(self.persistent.items()):
            assert item.sensitive is not None
            sink.u32(handle).u32(item.hierarchy)
            sink.put(item.public.to_tpm2b())
            put_tpm2b(sink, item.sensitive.to_bytes())
            put_tpm2b(sink, item.qualified_name)
        return sink.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> PersistentState:
        """Parse the state; strict. The SVSM parses it at every vTPM command: the usual state
        (full-size seeds and proofs, no saved PCRs, NV indices or persistent objects) is read
        in struct runs, anything else by the field-by-field reader, which names what is wrong."""
        state = _unpack(bytes(data))
        return state if state is not None else cls._from_bytes_checked(data)

    @classmethod
    def _from_bytes_checked(cls, data: bytes) -> PersistentState:
        source = reader(data, "vTPM state")
        if source.take(len(STATE_MAGIC), "magic") != STATE_MAGIC:
            raise FormatError("vTPM state: bad magic")
        if source.u32("version") != STATE_VERSION:
            raise FormatError("vTPM state: unsupported version")
        seeds: dict[int, bytes] = {}
        proofs: dict[int, bytes] = {}
        auths: dict[int, bytes] = {}
        for handle in HIERARCHIES[:3]:
            seeds[handle] = read_tpm2b(source, "seed", SEED_SIZE)
            proofs[handle] = read_tpm2b(source, "proof", SEED_SIZE)
        for handle in HIERARCHIES:
            auths[handle] = read_tpm2b(source, "auth", 64)
        state = cls(seeds, proofs, auths)
        (state.failed_tries, state.max_tries, state.recovery_time, state.lockout_recovery,
         state.reset_count, state.restart_count, state.clock_ms, state.nv_counter_floor,
         orderly, state.self_heal_ms, state.lockout_timer_ms, enabled, used,
         ) = _COUNTERS.unpack(source.take(_COUNTERS.size, "counters and timers"))
        state.orderly_state = _flag(orderly, "orderly")
        state.lockout_auth_enabled = _flag(enabled, "lockOutAuthEnabled")
        state.da_used = _flag(used, "daUsed")
        for _ in range(source.u32("saved PCR banks")):
            bank = source.u16("bank")
            state.saved_pcrs[bank] = [
                read_tpm2b(source, "PCR", 64) for _ in range(source.u32("PCR count"))
            ]
        for _ in range(source.u32("NV count")):
            nv_public = NvPublic.read_tpm2b(source)
            auth = read_tpm2b(source, "NV auth", 64)
            state.nv[nv_public.nv_index] = NvIndex(nv_public, auth, read_tpm2b(source, "NV data"))
        for _ in range(source.u32("persistent count")):
            handle = source.u32("handle")
            hierarchy = source.u32("hierarchy")
            public = Public.read_tpm2b(source)
            sensitive = Sensitive.from_bytes(read_tpm2b(source, "sensitive"))
            qn = read_tpm2b(source, "qualified name", 66)
            state.persistent[handle] = TpmObject(public, sensitive, hierarchy, qn)
        source.expect_end()
        return state


def _unpack(data: bytes) -> PersistentState | None:
    """The usual state in struct runs; None for anything else (the strict reader decides)."""
    length = len(data)
    if length < _HEAD.size:
        return None
    magic, version, *pairs = _HEAD.unpack_from(data)
    if magic != STATE_MAGIC or version != STATE_VERSION or pairs[0::2] != _FULL_SIZES:
        return None
    platform, owner, endorsement = HIERARCHIES[:3]
    seeds = {platform: pairs[1], owner: pairs[5], endorsement: pairs[9]}
    proofs = {platform: pairs[3], owner: pairs[7], endorsement: pairs[11]}
    offset = _HEAD.size
    if data[offset : offset + len(_NO_AUTHS)] == _NO_AUTHS:
        auths = dict.fromkeys(HIERARCHIES, b"")
        offset += len(_NO_AUTHS)
    else:
        auths = {}
        for handle in HIERARCHIES:
            begin = offset + 2
            offset = begin + int.from_bytes(data[begin - 2 : begin], "big")
            if offset - begin > _MAX_AUTH or offset > length:
                return None
            auths[handle] = data[begin:offset]
    if offset + _COUNTERS_AND_COUNTS.size != length:
        return None
    (failed_tries, max_tries, recovery_time, lockout_recovery, reset_count, restart_count,
     clock_ms, nv_counter_floor, orderly, self_heal_ms, lockout_timer_ms, enabled, used,
     saved_banks, nv_count, persistent_count) = _COUNTERS_AND_COUNTS.unpack_from(data, offset)
    if orderly > 1 or enabled > 1 or used > 1 or saved_banks or nv_count or persistent_count:
        return None
    # positional, in the order of the fields (a keyword call costs as much again)
    return PersistentState(
        seeds, proofs, auths, failed_tries, max_tries, recovery_time, lockout_recovery,
        reset_count, restart_count, clock_ms, self_heal_ms, lockout_timer_ms, enabled == 1,
        used == 1, nv_counter_floor, orderly == 1)


def _flag(value: int, what: str) -> bool:
    if value > 1:
        raise FormatError(f"vTPM state: {what} is {value}, not a boolean")
    return value == 1
