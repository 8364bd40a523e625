"""CreatePrimary, Create, Load, LoadExternal, ReadPublic, Unseal, FlushContext, EvictControl.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59: 24.1 (TPM2_CreatePrimary), 12.1
(TPM2_Create), 12.2 (TPM2_Load), 12.3 (TPM2_LoadExternal), 12.4 (TPM2_ReadPublic), 12.7
(TPM2_Unseal), 28.4 (TPM2_FlushContext) and 28.5 (TPM2_EvictControl). Creation data is
Part 2 Table 212 (TPMS_CREATION_DATA); the creation ticket is ``HMAC(proof, TPM_ST_CREATION
‖ Name ‖ creationHash)`` (Part 1 section 15.3 "Tickets").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cvm.crypto.tpm_kdf import hmac
from cvm.formats.tpm2.constants import (
    TpmAlg,
    TpmaObject,
    TpmCc,
    TpmHt,
    TpmRh,
    TpmSt,
    digest,
    handle_type,
)
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import KeyedHashParms, Public
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.sensitive import PrivateBlob, Sensitive, SensitiveCreate
from cvm.formats.tpm2.signature import Ticket
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, tpm2b, writer
from cvm.vtpm import protection
from cvm.vtpm.dispatch import AuthRole, Call, Result, register
from cvm.vtpm.tpm_object import (
    TpmObject,
    build,
    check_binding,
    check_template,
    fail,
    hierarchy_of,
    hierarchy_qn,
    primary_context,
    qualified_name,
    seeded_random,
    strip_auth,
    with_auth,
)

if TYPE_CHECKING:
    from cvm.vtpm.engine import Tpm

OWNER_PERSISTENT = range(0x81000000, 0x81800000)
PLATFORM_PERSISTENT = range(0x81800000, 0x82000000)


def _creation(
    tpm: Tpm, public: Public, hierarchy: int, parent: TpmObject | None, outside: bytes,
    selection: PcrSelectionList, locality: int,
) -> bytes:
    """TPM2B_CREATION_DATA ‖ TPM2B creationHash ‖ TPMT_TK_CREATION."""
    body = writer()
    selection.write(body)
    put_tpm2b(body, tpm.pcrs.current_digest(public.name_alg, selection)
              if selection.selections else b"")
    body.u8(1 << locality if locality < 5 else locality)
    if parent is None:
        body.u16(TpmAlg.NULL)
        put_tpm2b(body, hierarchy_qn(hierarchy))
        put_tpm2b(body, hierarchy_qn(hierarchy))
    else:
        body.u16(parent.public.name_alg)
        put_tpm2b(body, parent.name)
        put_tpm2b(body, parent.qualified_name)
    put_tpm2b(body, outside)
    data = body.to_bytes()
    creation_hash = digest(public.name_alg, data)
    ticket_digest = hmac("sha256", tpm.proof(hierarchy),
                         TpmSt.CREATION.to_bytes(2, "big"), public.name(), creation_hash)
    ticket = Ticket(TpmSt.CREATION, hierarchy, ticket_digest)
    return tpm2b(data) + tpm2b(creation_hash) + ticket.to_bytes()


def _read_create_parameters(call: Call) -> tuple[SensitiveCreate, Public, bytes, PcrSelectionList]:
    in_sensitive = SensitiveCreate.read_tpm2b(call.params)
    public = Public.read_tpm2b(call.parameter(2), "inPublic")
    outside = read_tpm2b(call.parameter(3), "outsideInfo", 64)
    selection = PcrSelectionList.read(call.parameter(4))
    call.done()
    return in_sensitive, public, outside, selection


def create_primary(tpm: Tpm, call: Call) -> Result:
    in_sensitive, template, outside, selection = _read_create_parameters(call)
    handle = call.handles[0]
    if handle not in (TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.PLATFORM, TpmRh.NULL):
        raise fail(for_handle(TpmRc.HIERARCHY, 1), "not a hierarchy")
    check_template(template, in_sensitive.data, parameter=2)
    context = primary_context(template, in_sensitive.data)
    random = seeded_random(tpm.seed(handle), context)
    public, sensitive = build(template, in_sensitive, random, derive_seed=context)
    hierarchy = hierarchy_of(handle)
    item = TpmObject(public, sensitive, hierarchy, qualified_name(hierarchy_qn(handle), public))
    object_handle = tpm.load_object(item)
    params = public.to_tpm2b()
    params += _creation(tpm, public, hierarchy, None, outside, selection, call.locality)
    return Result((object_handle,), params + tpm2b(public.name()))


def _storage_parent(tpm: Tpm, handle: int) -> TpmObject:
    parent = tpm.lookup(handle, 1)
    if not parent.is_storage_parent:
        raise fail(for_handle(TpmRc.TYPE, 1), "the parent is not a storage key")
    return parent


def create(tpm: Tpm, call: Call) -> Result:
    in_sensitive, template, outside, selection = _read_create_parameters(call)
    parent = _storage_parent(tpm, call.handles[0])
    check_template(template, in_sensitive.data, parameter=2)
    if template.has(TpmaObject.FIXED_TPM) and not parent.has(TpmaObject.FIXED_TPM):
        raise fail(for_parameter(TpmRc.ATTRIBUTES, 2), "fixedTPM child of a movable parent")
    public, sensitive = build(template, in_sensitive, tpm.random)
    blob = protection.wrap(parent, public, sensitive, tpm.random(protection.IV_SIZE))
    params = blob.to_tpm2b() + public.to_tpm2b()
    params += _creation(tpm, public, parent.hierarchy, parent, outside, selection, call.locality)
    return Result(parameters=params)


def load(tpm: Tpm, call: Call) -> Result:
    blob = PrivateBlob.read_tpm2b(call.params)
    public = Public.read_tpm2b(call.parameter(2), "inPublic")
    call.done()
    parent = _storage_parent(tpm, call.handles[0])
    if public.name_alg == TpmAlg.NULL:
        raise fail(for_parameter(TpmRc.HASH, 2), "nameAlg NULL cannot be loaded")
    sensitive = protection.unwrap(parent, public, blob)
    check_binding(public, sensitive)
    sensitive = with_auth(sensitive, strip_auth(sensitive.auth_value))
    item = TpmObject(public, sensitive, parent.hierarchy,
                     qualified_name(parent.qualified_name, public))
    handle = tpm.load_object(item)
    return Result((handle,), tpm2b(public.name()))


def load_external(tpm: Tpm, call: Call) -> Result:
    private_area = read_tpm2b(call.params, "inPrivate")
    public = Public.read_tpm2b(call.parameter(2), "inPublic")
    hierarchy = call.parameter(3).u32("hierarchy")
    call.done()
    if hierarchy not in (TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.PLATFORM, TpmRh.NULL):
        raise fail(for_parameter(TpmRc.VALUE, 3), "not a hierarchy")
    sensitive: Sensitive | None = None
    if private_area:
        if hierarchy != TpmRh.NULL:
            raise fail(for_parameter(TpmRc.HIERARCHY, 3), "external keys with a private part "
                       "belong to the null hierarchy")
        if public.has(TpmaObject.FIXED_TPM) or public.has(TpmaObject.FIXED_PARENT):
            raise fail(for_parameter(TpmRc.ATTRIBUTES, 2), "external objects are not fixed")
        sensitive = Sensitive.from_bytes(private_area)
        check_binding(public, sensitive)
    item = TpmObject(public, sensitive, hierarchy,
                     qualified_name(hierarchy_qn(hierarchy), public))
    handle = tpm.load_object(item)
    return Result((handle,), tpm2b(public.name()))


def read_public(tpm: Tpm, call: Call) -> Result:
    call.done()
    item = tpm.lookup(call.handles[0], 1)
    return Result(parameters=item.public.to_tpm2b() + tpm2b(item.name) +
                  tpm2b(item.qualified_name))


def unseal(tpm: Tpm, call: Call) -> Result:
    call.done()
    item = tpm.lookup(call.handles[0], 1)
    if not isinstance(item.public.parameters, KeyedHashParms) or item.sensitive is None:
        raise fail(for_handle(TpmRc.TYPE, 1), "not a sealed data object")
    if any(item.has(flag) for flag in (TpmaObject.RESTRICTED, TpmaObject.DECRYPT,
                                       TpmaObject.SIGN_ENCRYPT)):
        raise fail(for_handle(TpmRc.ATTRIBUTES, 1), "a key cannot be unsealed")
    return Result(parameters=tpm2b(item.sensitive.sensitive))


def flush_context(tpm: Tpm, call: Call) -> Result:
    handle = call.params.u32("flushHandle")
    call.done()
    if handle in tpm.objects:
        del tpm.objects[handle]
    elif handle in tpm.sequences:
        del tpm.sequences[handle]
    elif handle in tpm.sessions:
        del tpm.sessions[handle]
    elif handle in tpm.saved_sessions:
        del tpm.saved_sessions[handle]
    else:
        raise fail(for_parameter(TpmRc.HANDLE, 1), f"nothing to flush at {handle:#010x}")
    return Result()


def evict_control(tpm: Tpm, call: Call) -> Result:
    persistent = call.params.u32("persistentHandle")
    call.done()
    auth, handle = call.handles
    if auth not in (TpmRh.OWNER, TpmRh.PLATFORM):
        raise fail(for_handle(TpmRc.HIERARCHY, 1), "only owner or platform may persist")
    allowed = OWNER_PERSISTENT if auth == TpmRh.OWNER else PLATFORM_PERSISTENT
    item = tpm.lookup(handle, 2)
    if handle_type(handle) == TpmHt.PERSISTENT:
        if persistent != handle:
            raise fail(for_parameter(TpmRc.HANDLE, 1), "persistentHandle differs from object")
        if handle not in allowed:
            raise fail(for_handle(TpmRc.HIERARCHY, 2), "persistent object of another hierarchy")
        del tpm.state.persistent[handle]
        tpm.mark_changed()
        return Result()
    if item.sensitive is None or item.has(TpmaObject.ST_CLEAR):
        raise fail(for_handle(TpmRc.ATTRIBUTES, 2), "public-only or stClear objects stay")
    if item.hierarchy == TpmRh.NULL or (auth == TpmRh.OWNER and item.hierarchy == TpmRh.PLATFORM):
        raise fail(for_handle(TpmRc.HIERARCHY, 2), "object of another hierarchy")
    if persistent not in allowed:
        raise fail(for_parameter(TpmRc.RANGE, 1), f"{persistent:#010x} is out of range")
    if persistent in tpm.state.persistent:
        raise fail(TpmRc.NV_DEFINED, f"{persistent:#010x} is already in use")
    tpm.state.persistent[persistent] = item
    tpm.mark_changed()
    return Result()


# This module's rows of the command table (Part 3: handles, authorization roles,
# response handles), registered explicitly so each handler stays a plain function.
register(TpmCc.CREATE_PRIMARY, create_primary, handles=1, auth=(AuthRole.USER,), response_handles=1)
register(TpmCc.CREATE, create, handles=1, auth=(AuthRole.USER,))
register(TpmCc.LOAD, load, handles=1, auth=(AuthRole.USER,), response_handles=1)
register(TpmCc.LOAD_EXTERNAL, load_external, response_handles=1)
register(TpmCc.READ_PUBLIC, read_public, handles=1)
register(TpmCc.UNSEAL, unseal, handles=1, auth=(AuthRole.USER,))
register(TpmCc.FLUSH_CONTEXT, flush_context)
register(TpmCc.EVICT_CONTROL, evict_control, handles=2, auth=(AuthRole.USER,))
