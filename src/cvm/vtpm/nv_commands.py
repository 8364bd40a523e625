"""NV_DefineSpace, NV_UndefineSpace, NV_Write, NV_Read, NV_Increment, NV_Extend, NV_ReadPublic.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59, section 31 (NV storage): 31.3
(DefineSpace: attribute consistency, counters and bit fields are 8 bytes, extend indices one
digest), 31.4 (UndefineSpace), 31.7 (NV_Write: ordinary indices only, TPM_RC_NV_RANGE,
TPM_RC_NV_LOCKED), 31.8 (NV_Increment: a counter starts at the largest count the TPM has ever
held, so redefining an index cannot roll it back — Part 1 section 37.2.2), 31.9 (NV_Extend),
31.13 (NV_Read: TPM_RC_NV_UNINITIALIZED before the first write) and 31.6 (NV_ReadPublic).
Access: with ``authHandle == nvIndex`` AUTHREAD/AUTHWRITE (password, HMAC) or
POLICYREAD/POLICYWRITE (policy session); with TPM_RH_OWNER OWNERREAD/OWNERWRITE; with
TPM_RH_PLATFORM PPREAD/PPWRITE (TPM_RC_NV_AUTHORIZATION otherwise).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from cvm.formats.tpm2.constants import TpmaNv, TpmCc, TpmNt, TpmRh, digest, digest_size
from cvm.formats.tpm2.nv_public import MAX_NV_INDEX_SIZE, NvPublic
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.tpm2b import read_tpm2b, tpm2b
from cvm.vtpm.dispatch import AuthRole, Call, Result, register
from cvm.vtpm.state import NvIndex
from cvm.vtpm.tpm_object import fail, strip_auth

if TYPE_CHECKING:
    from cvm.vtpm.engine import Tpm

COUNTER_SIZE = 8
_READ = (TpmaNv.PPREAD, TpmaNv.OWNERREAD, TpmaNv.AUTHREAD, TpmaNv.POLICYREAD)
_WRITE = (TpmaNv.PPWRITE, TpmaNv.OWNERWRITE, TpmaNv.AUTHWRITE, TpmaNv.POLICYWRITE)


def _check_access(call: Call, index: NvIndex, write: bool) -> None:
    pp, owner, auth, policy = _WRITE if write else _READ
    attributes = index.public.attributes
    handle = call.handles[0]
    needed: int
    if handle == index.public.nv_index:
        needed = policy if call.policy_auth[0] else auth
    elif handle == TpmRh.OWNER:
        needed = owner
    elif handle == TpmRh.PLATFORM:
        needed = pp
    else:
        needed = 0
    if not needed or not attributes & needed:
        raise fail(TpmRc.NV_AUTHORIZATION, "this authorization may not access the index")


def _index(tpm: Tpm, call: Call) -> NvIndex:
    index = tpm.state.nv.get(call.handles[1])
    if index is None:
        raise fail(for_handle(TpmRc.HANDLE, 2), "NV index is not defined")
    return index


def _written(index: NvIndex, data: bytes) -> NvIndex:
    attributes = index.public.attributes | TpmaNv.WRITTEN
    return replace(index, public=index.public.with_attributes(attributes), data=data)


def nv_define_space(tpm: Tpm, call: Call) -> Result:
    auth = read_tpm2b(call.params, "auth", 64)
    public = NvPublic.read_tpm2b(call.parameter(2))
    call.done()
    handle = call.handles[0]
    bad = for_parameter(TpmRc.ATTRIBUTES, 2)
    if handle not in (TpmRh.OWNER, TpmRh.PLATFORM):
        raise fail(for_handle(TpmRc.HIERARCHY, 1), "only owner or platform define NV indices")
    attributes = public.attributes
    if bool(attributes & TpmaNv.PLATFORMCREATE) != (handle == TpmRh.PLATFORM):
        raise fail(bad, "PLATFORMCREATE must match the authorizing hierarchy")
    if attributes & (TpmaNv.WRITTEN | TpmaNv.WRITELOCKED | TpmaNv.READLOCKED):
        raise fail(bad, "WRITTEN/WRITELOCKED/READLOCKED are set by the TPM")
    if not any(attributes & a for a in _READ) or not any(attributes & a for a in _WRITE):
        raise fail(bad, "an index needs a read and a write authorization")
    if attributes & TpmaNv.POLICY_DELETE and handle != TpmRh.PLATFORM:
        raise fail(bad, "POLICY_DELETE is for platform indices")
    if len(strip_auth(auth)) > digest_size(public.name_alg):
        raise fail(for_parameter(TpmRc.SIZE, 1), "auth is longer than the nameAlg digest")
    size = public.data_size
    if public.nt in (TpmNt.COUNTER, TpmNt.BITS) and size != COUNTER_SIZE:
        raise fail(for_parameter(TpmRc.SIZE, 2), "counters and bit fields are 8 bytes")
    if public.nt == TpmNt.EXTEND and size != digest_size(public.name_alg):
        raise fail(for_parameter(TpmRc.SIZE, 2), "an extend index holds one digest")
    if size > MAX_NV_INDEX_SIZE:
        raise fail(for_parameter(TpmRc.SIZE, 2), "index larger than MAX_NV_INDEX_SIZE")
    if public.nv_index in tpm.state.nv:
        raise fail(TpmRc.NV_DEFINED, f"NV index {public.nv_index:#010x} is already defined")
    tpm.state.nv[public.nv_index] = NvIndex(public, strip_auth(auth))
    tpm.mark_changed()
    return Result()


def nv_undefine_space(tpm: Tpm, call: Call) -> Result:
    call.done()
    index = _index(tpm, call)
    attributes = index.public.attributes
    if call.handles[0] not in (TpmRh.OWNER, TpmRh.PLATFORM):
        raise fail(for_handle(TpmRc.HIERARCHY, 1), "only owner or platform delete NV indices")
    if bool(attributes & TpmaNv.PLATFORMCREATE) != (call.handles[0] == TpmRh.PLATFORM):
        raise fail(for_handle(TpmRc.NV_AUTHORIZATION, 1), "index of the other hierarchy")
    if attributes & TpmaNv.POLICY_DELETE:
        raise fail(for_handle(TpmRc.ATTRIBUTES, 2), "POLICY_DELETE index")
    if index.public.nt == TpmNt.COUNTER and index.data:
        floor = int.from_bytes(index.data, "big")
        tpm.state.nv_counter_floor = max(tpm.state.nv_counter_floor, floor)
    del tpm.state.nv[index.public.nv_index]
    tpm.mark_changed()
    return Result()


def nv_write(tpm: Tpm, call: Call) -> Result:
    data = read_tpm2b(call.params, "data", 1024)
    offset = call.parameter(2).u16("offset")
    call.done()
    index = _index(tpm, call)
    _check_access(call, index, write=True)
    public = index.public
    if public.nt != TpmNt.ORDINARY:
        raise fail(for_handle(TpmRc.ATTRIBUTES, 2), "only ordinary indices take NV_Write")
    if public.attributes & TpmaNv.WRITELOCKED:
        raise fail(TpmRc.NV_LOCKED, "index is write-locked")
    if offset + len(data) > public.data_size:
        raise fail(TpmRc.NV_RANGE, "write beyond the end of the index")
    if public.attributes & TpmaNv.WRITEALL and len(data) != public.data_size:
        raise fail(TpmRc.NV_RANGE, "WRITEALL index must be written whole")
    old = index.data or b"\xff" * public.data_size
    tpm.state.nv[public.nv_index] = _written(
        index, old[:offset] + data + old[offset + len(data):]
    )
    tpm.mark_changed()
    return Result()


def nv_increment(tpm: Tpm, call: Call) -> Result:
    call.done()
    index = _index(tpm, call)
    _check_access(call, index, write=True)
    if index.public.nt != TpmNt.COUNTER:
        raise fail(for_handle(TpmRc.ATTRIBUTES, 2), "not a counter index")
    if index.public.attributes & TpmaNv.WRITELOCKED:
        raise fail(TpmRc.NV_LOCKED, "index is write-locked")
    current = int.from_bytes(index.data, "big") if index.data else tpm.state.nv_counter_floor
    value = (current + 1) & (2**64 - 1)
    tpm.state.nv[index.public.nv_index] = _written(index, value.to_bytes(COUNTER_SIZE, "big"))
    tpm.mark_changed()
    return Result()


def nv_extend(tpm: Tpm, call: Call) -> Result:
    data = read_tpm2b(call.params, "data", 1024)
    call.done()
    index = _index(tpm, call)
    _check_access(call, index, write=True)
    public = index.public
    if public.nt != TpmNt.EXTEND:
        raise fail(for_handle(TpmRc.ATTRIBUTES, 2), "not an extend index")
    old = index.data or bytes(public.data_size)
    tpm.state.nv[public.nv_index] = _written(index, digest(public.name_alg, old, data))
    tpm.mark_changed()
    return Result()


def nv_read(tpm: Tpm, call: Call) -> Result:
    size = call.params.u16("size")
    offset = call.parameter(2).u16("offset")
    call.done()
    index = _index(tpm, call)
    _check_access(call, index, write=False)
    public = index.public
    if public.attributes & TpmaNv.READLOCKED:
        raise fail(TpmRc.NV_LOCKED, "index is read-locked")
    if not public.attributes & TpmaNv.WRITTEN:
        raise fail(TpmRc.NV_UNINITIALIZED, "index has not been written")
    if offset + size > public.data_size:
        raise fail(TpmRc.NV_RANGE, "read beyond the end of the index")
    return Result(parameters=tpm2b(index.data[offset:offset + size]))


def nv_read_public(tpm: Tpm, call: Call) -> Result:
    call.done()
    index = tpm.state.nv.get(call.handles[0])
    if index is None:
        raise fail(for_handle(TpmRc.HANDLE, 1), "NV index is not defined")
    return Result(parameters=index.public.to_tpm2b() + tpm2b(index.public.name()))


# This module's rows of the command table (Part 3: handles, authorization roles,
# response handles), registered explicitly so each handler stays a plain function.
register(TpmCc.NV_DEFINE_SPACE, nv_define_space, handles=1, auth=(AuthRole.USER,))
register(TpmCc.NV_UNDEFINE_SPACE, nv_undefine_space, handles=2, auth=(AuthRole.USER,))
register(TpmCc.NV_WRITE, nv_write, handles=2, auth=(AuthRole.USER,))
register(TpmCc.NV_INCREMENT, nv_increment, handles=2, auth=(AuthRole.USER,))
register(TpmCc.NV_EXTEND, nv_extend, handles=2, auth=(AuthRole.USER,))
register(TpmCc.NV_READ, nv_read, handles=2, auth=(AuthRole.USER,))
register(TpmCc.NV_READ_PUBLIC, nv_read_public, handles=1)
