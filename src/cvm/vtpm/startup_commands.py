"""Startup, Shutdown, SelfTest, GetRandom, GetCapability, hierarchy auth and DA commands.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59: 9.3 (TPM2_Startup: TPM Reset,
Restart and Resume), 9.4 (TPM2_Shutdown), 10.2 (TPM2_SelfTest), 16.1 (TPM2_GetRandom, at
most one digest of bytes per call), 30.2 (TPM2_GetCapability with TPMS_CAPABILITY_DATA,
Part 2 Table 121), 24.8 (TPM2_HierarchyChangeAuth), 25.2/25.3 (TPM2_DictionaryAttackLockReset
and TPM2_DictionaryAttackParameters).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cvm.formats.tpm2.constants import (
    PCR_COUNT,
    TpmAlg,
    TpmCap,
    TpmCc,
    TpmPt,
    TpmRh,
    TpmSu,
)
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.tpm2b import read_tpm2b, tpm2b, writer
from cvm.vtpm.dispatch import COMMANDS, AuthRole, Call, Result, register
from cvm.vtpm.tpm_object import fail, strip_auth

if TYPE_CHECKING:
    from cvm.vtpm.engine import Tpm

MAX_RANDOM = 64
MAX_CAP_ITEMS = 64
# TPMA_ALGORITHM (Part 2 Table 36): asymmetric 0, symmetric 1, hash 2, object 3, signing 8,
# encrypting 9, method 10; each as the reference TPM (swtpm) lists it, TPM_ALG_NULL not listed.
_ALGORITHMS: dict[int, int] = {
    TpmAlg.RSA: 0x009, TpmAlg.SHA1: 0x004, TpmAlg.HMAC: 0x104, TpmAlg.AES: 0x002,
    TpmAlg.KEYEDHASH: 0x30C, TpmAlg.XOR: 0x006, TpmAlg.SHA256: 0x004, TpmAlg.SHA384: 0x004,
    TpmAlg.SHA512: 0x004, TpmAlg.RSASSA: 0x101, TpmAlg.RSAPSS: 0x101,
    TpmAlg.ECDSA: 0x101, TpmAlg.KDF1_SP800_108: 0x404, TpmAlg.ECC: 0x009,
    TpmAlg.SYMCIPHER: 0x008, TpmAlg.CFB: 0x202,
}
MANUFACTURER_CVM = int.from_bytes(b"CVM\x00", "big")


def startup(tpm: Tpm, call: Call) -> Result:
    kind = call.params.u16("startupType")
    call.done()
    if kind not in (TpmSu.CLEAR, TpmSu.STATE):
        raise fail(for_parameter(TpmRc.VALUE, 1), "startupType is neither CLEAR nor STATE")
    state = tpm.state
    if kind == TpmSu.STATE:
        if not state.orderly_state:
            raise fail(for_parameter(TpmRc.VALUE, 1), "no Shutdown(STATE) to resume from")
        tpm.pcrs.restore(state.saved_pcrs, call.locality)
        state.restart_count += 1
    else:
        tpm.pcrs.startup_clear(call.locality)
        if state.orderly_state:
            state.restart_count += 1
        else:
            state.reset_count += 1
            state.restart_count = 0
    _da_startup(tpm)
    tpm.null_seed = tpm.random(32)
    tpm.null_proof = tpm.random(32)
    state.orderly_state = False
    state.saved_pcrs = {}
    tpm.started = True
    tpm.mark_changed()
    return Result()


def _da_startup(tpm: Tpm) -> None:
    """The reference's ``DAStartup``: lockoutAuth comes back at every Startup when
    lockoutRecovery is 0; a DA-protected authValue used since the last Startup without an
    orderly Shutdown counts as one failure (unless DA is off or already at maxTries)."""
    state = tpm.state
    if not state.lockout_recovery:
        state.lockout_auth_enabled = True
    if state.da_used and state.recovery_time and state.failed_tries < state.max_tries:
        state.failed_tries += 1
        state.self_heal_ms = tpm.now_ms()
    state.da_used = False
    tpm.self_heal()


def shutdown(tpm: Tpm, call: Call) -> Result:
    kind = call.params.u16("shutdownType")
    call.done()
    if kind not in (TpmSu.CLEAR, TpmSu.STATE):
        raise fail(for_parameter(TpmRc.VALUE, 1), "shutdownType is neither CLEAR nor STATE")
    tpm.state.orderly_state = kind == TpmSu.STATE
    tpm.state.saved_pcrs = tpm.pcrs.saved() if kind == TpmSu.STATE else {}
    tpm.state.da_used = False
    tpm.save_clock()
    tpm.mark_changed()
    return Result()


def self_test(tpm: Tpm, call: Call) -> Result:
    full = call.params.u8("fullTest")
    call.done()
    if full > 1:
        raise fail(for_parameter(TpmRc.VALUE, 1), "fullTest is not a TPMI_YES_NO")
    return Result()


def get_random(tpm: Tpm, call: Call) -> Result:
    requested = call.params.u16("bytesRequested")
    call.done()
    return Result(parameters=tpm2b(tpm.random(min(requested, MAX_RANDOM))))


def _handles(tpm: Tpm) -> list[int]:
    found = list(range(PCR_COUNT)) + [int(h) for h in TpmRh if h != TpmRh.PW]
    found += list(tpm.objects) + list(tpm.sequences) + list(tpm.state.persistent)
    found += list(tpm.state.nv)
    return sorted(found + list(tpm.sessions))


def _properties(tpm: Tpm) -> dict[int, int]:
    state = tpm.state
    return {
        TpmPt.FAMILY_INDICATOR: int.from_bytes(b"2.0\x00", "big"), TpmPt.LEVEL: 0,
        TpmPt.REVISION: 159, TpmPt.DAY_OF_YEAR: 1, TpmPt.YEAR: 2026,
        TpmPt.MANUFACTURER: MANUFACTURER_CVM, TpmPt.VENDOR_STRING_1: int.from_bytes(b"cvm ", "big"),
        TpmPt.FIRMWARE_VERSION_1: 0x00010000, TpmPt.FIRMWARE_VERSION_2: 0,
        TpmPt.HR_TRANSIENT_MIN: 3, TpmPt.HR_PERSISTENT_MIN: 7, TpmPt.HR_LOADED_MIN: 3,
        TpmPt.ACTIVE_SESSIONS_MAX: 64, TpmPt.PCR_COUNT: PCR_COUNT, TpmPt.NV_INDEX_MAX: 2048,
        TpmPt.INPUT_BUFFER: 1024, TpmPt.MAX_DIGEST: 64, TpmPt.PERMANENT: 0,
        TpmPt.STARTUP_CLEAR: 0x80000007, TpmPt.LOCKOUT_COUNTER: state.failed_tries,
        TpmPt.MAX_AUTH_FAIL: state.max_tries, TpmPt.LOCKOUT_INTERVAL: state.recovery_time,
        TpmPt.LOCKOUT_RECOVERY: state.lockout_recovery,
    }


def get_capability(tpm: Tpm, call: Call) -> Result:
    capability = call.params.u32("capability")
    first = call.parameter(2).u32("property")
    count = call.parameter(3).u32("propertyCount")
    call.done()
    body = writer().u32(capability)
    limit = min(count, MAX_CAP_ITEMS)
    items: list[tuple[int, int]]
    if capability == TpmCap.ALGS:
        items = [(alg, attrs) for alg, attrs in sorted(_ALGORITHMS.items()) if alg >= first]
        body.u32(min(len(items), limit))
        for alg, attrs in items[:limit]:
            body.u16(alg).u32(attrs)
    elif capability == TpmCap.HANDLES:
        kind = first >> 24
        items_h = [h for h in _handles(tpm) if h >> 24 == kind and h >= first]
        body.u32(min(len(items_h), limit))
        for handle in items_h[:limit]:
            body.u32(handle)
        items = list(enumerate(items_h))
    elif capability == TpmCap.COMMANDS:
        items = [(code, spec.handles) for code, spec in sorted(COMMANDS.items()) if code >= first]
        body.u32(min(len(items), limit))
        for code, handles in items[:limit]:
            response_handle = COMMANDS[code].response_handles
            body.u32(code | handles << 25 | response_handle << 28)
    elif capability == TpmCap.PCRS:
        items = [(0, 0)]
        tpm.pcrs.allocated().write(body)
    elif capability == TpmCap.TPM_PROPERTIES:
        items = [(pt, value) for pt, value in sorted(_properties(tpm).items()) if pt >= first]
        body.u32(min(len(items), limit))
        for pt, value in items[:limit]:
            body.u32(pt).u32(value)
    else:
        raise fail(for_parameter(TpmRc.VALUE, 1), f"capability {capability:#x} not supported")
    more = capability != TpmCap.PCRS and len(items) > limit
    return Result(parameters=bytes([int(more)]) + body.to_bytes())


def hierarchy_change_auth(tpm: Tpm, call: Call) -> Result:
    new_auth = read_tpm2b(call.params, "newAuth", 64)
    call.done()
    handle = call.handles[0]
    if handle not in (TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.PLATFORM, TpmRh.LOCKOUT):
        raise fail(for_handle(TpmRc.HIERARCHY, 1), "not a hierarchy")
    if len(strip_auth(new_auth)) > 32:
        raise fail(for_parameter(TpmRc.SIZE, 1), "newAuth is longer than a SHA-256 digest")
    tpm.state.auths[handle] = strip_auth(new_auth)
    tpm.mark_changed()
    return Result()


def dictionary_attack_lock_reset(tpm: Tpm, call: Call) -> Result:
    call.done()
    if call.handles[0] != TpmRh.LOCKOUT:
        raise fail(for_handle(TpmRc.HIERARCHY, 1), "only TPM_RH_LOCKOUT may reset the lockout")
    tpm.reset_lockout()
    return Result()


def dictionary_attack_parameters(tpm: Tpm, call: Call) -> Result:
    max_tries = call.params.u32("newMaxTries")
    recovery = call.parameter(2).u32("newRecoveryTime")
    lockout_recovery = call.parameter(3).u32("lockoutRecovery")
    call.done()
    if call.handles[0] != TpmRh.LOCKOUT:
        raise fail(for_handle(TpmRc.HIERARCHY, 1), "only TPM_RH_LOCKOUT may set DA parameters")
    state = tpm.state
    # failedTries is left as it is (Part 3 25.3 and the reference after its errata): lowering
    # maxTries below it locks out at once.
    state.max_tries, state.recovery_time, state.lockout_recovery = (
        max_tries, recovery, lockout_recovery
    )
    tpm.mark_changed()
    return Result()


# This module's rows of the command table (Part 3: handles, authorization roles,
# response handles), registered explicitly so each handler stays a plain function.
register(TpmCc.STARTUP, startup)
register(TpmCc.SHUTDOWN, shutdown)
register(TpmCc.SELF_TEST, self_test)
register(TpmCc.GET_RANDOM, get_random)
register(TpmCc.GET_CAPABILITY, get_capability)
register(TpmCc.HIERARCHY_CHANGE_AUTH, hierarchy_change_auth, handles=1, auth=(AuthRole.USER,))
register(TpmCc.DICTIONARY_ATTACK_LOCK_RESET, dictionary_attack_lock_reset,
         handles=1, auth=(AuthRole.USER,))
register(TpmCc.DICTIONARY_ATTACK_PARAMETERS, dictionary_attack_parameters,
         handles=1, auth=(AuthRole.USER,))
