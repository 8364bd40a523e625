"""ContextSave and ContextLoad: objects and sessions kept outside the TPM.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59, sections 28.2 (TPM2_ContextSave) and
28.3 (TPM2_ContextLoad); Part 1 section 30 ("Context Management"): a saved object stays
loaded and comes back under a new transient handle; a saved session leaves its slot, keeps
its handle, and may be loaded once per save (its sequence number is checked, so an old
context cannot be replayed). The blob is encrypted and integrity-protected with keys derived
from the hierarchy's proof (the null proof for sessions and null-hierarchy objects), so a
context from another TPM — or after TPM Reset for null contexts — fails with
TPM_RC_INTEGRITY (parameter 1), as on a real TPM. Blob layout (cvm's own, Part 1 leaves it to
the TPM): ``TPM2B integrity ‖ IV(16) ‖ AES-128-CFB(body)``, with ``KDFa(SHA-256, proof,
"CONTEXT", sequence ‖ savedHandle, ∅, 384)`` giving the AES and HMAC keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cvm.crypto.tpm_kdf import aes_cfb_decrypt, aes_cfb_encrypt, hmac, kdfa, verify_hmac
from cvm.errors import FormatError, IntegrityError
from cvm.formats.tpm2.constants import TpmCc, TpmHt, TpmRh, handle_type
from cvm.formats.tpm2.context import SAVED_TRANSIENT, SavedContext
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.sensitive import Sensitive
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, tpm2b, writer
from cvm.vtpm.dispatch import Call, Result, register
from cvm.vtpm.tpm_object import TpmObject, fail

if TYPE_CHECKING:
    from cvm.vtpm.engine import Tpm

IV_SIZE = 16


def _keys(tpm: Tpm, hierarchy: int, sequence: int, handle: int) -> tuple[bytes, bytes]:
    material = kdfa("sha256", tpm.proof(hierarchy), b"CONTEXT",
                    sequence.to_bytes(8, "big") + handle.to_bytes(4, "big"), b"", bits=384)
    return material[:16], material[16:]


def _seal(tpm: Tpm, context: SavedContext, body: bytes) -> SavedContext:
    sym_key, hmac_key = _keys(tpm, context.hierarchy, context.sequence, context.saved_handle)
    iv = tpm.random(IV_SIZE)
    encrypted = aes_cfb_encrypt(sym_key, iv, body)
    integrity = hmac("sha256", hmac_key, context.sequence.to_bytes(8, "big"),
                     context.saved_handle.to_bytes(4, "big"),
                     context.hierarchy.to_bytes(4, "big"), iv, encrypted)
    return SavedContext(context.sequence, context.saved_handle, context.hierarchy,
                        tpm2b(integrity) + iv + encrypted)


def _open(tpm: Tpm, context: SavedContext) -> bytes:
    bad = fail(for_parameter(TpmRc.INTEGRITY, 1), "context does not authenticate")
    if context.hierarchy not in (TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.PLATFORM, TpmRh.NULL):
        raise fail(for_parameter(TpmRc.HIERARCHY, 1), "unknown hierarchy")
    source = reader(context.blob, "context blob")
    try:
        integrity = read_tpm2b(source, "integrity", 64)
        iv = source.take(IV_SIZE, "iv")
    except FormatError:
        raise bad from None
    encrypted = source.rest()
    sym_key, hmac_key = _keys(tpm, context.hierarchy, context.sequence, context.saved_handle)
    try:
        verify_hmac("sha256", hmac_key, integrity, context.sequence.to_bytes(8, "big"),
                    context.saved_handle.to_bytes(4, "big"),
                    context.hierarchy.to_bytes(4, "big"), iv, encrypted)
    except IntegrityError:
        raise bad from None
    return aes_cfb_decrypt(sym_key, iv, encrypted)


def context_save(tpm: Tpm, call: Call) -> Result:
    call.done()
    handle = call.handles[0]
    tpm.context_counter += 1
    sequence = tpm.context_counter
    if handle_type(handle) in (TpmHt.HMAC_SESSION, TpmHt.POLICY_SESSION):
        session = tpm.sessions.pop(handle)
        tpm.saved_sessions[handle] = (session, sequence)
        context = _seal(tpm, SavedContext(sequence, handle, TpmRh.NULL, b""),
                        handle.to_bytes(4, "big"))
        return Result(parameters=context.to_bytes())
    if handle in tpm.sequences:  # its data may exceed a context blob: not saved
        raise fail(TpmRc.SEQUENCE, "a sequence's context is not saved")
    item = tpm.objects.get(handle)
    if item is None:
        raise fail(for_handle(TpmRc.HANDLE, 1), "only transient objects and sessions are saved")
    body = writer().put(item.public.to_tpm2b())
    put_tpm2b(body, item.sensitive.to_bytes() if item.sensitive else b"")
    put_tpm2b(body, item.qualified_name)
    context = _seal(tpm, SavedContext(sequence, SAVED_TRANSIENT, item.hierarchy, b""),
                    body.to_bytes())
    return Result(parameters=context.to_bytes())


def context_load(tpm: Tpm, call: Call) -> Result:
    context = SavedContext.read(call.params)
    call.done()
    body = _open(tpm, context)
    if handle_type(context.saved_handle) in (TpmHt.HMAC_SESSION, TpmHt.POLICY_SESSION):
        saved = tpm.saved_sessions.get(context.saved_handle)
        if saved is None or saved[1] != context.sequence or body != context.saved_handle.to_bytes(
            4, "big"
        ):
            raise fail(for_parameter(TpmRc.HANDLE, 1), "session context is stale or replayed")
        if len(tpm.sessions) >= 3:
            raise fail(TpmRc.SESSION_MEMORY, "no free session slot")
        del tpm.saved_sessions[context.saved_handle]
        tpm.sessions[context.saved_handle] = saved[0]
        return Result((context.saved_handle,))
    if context.saved_handle != SAVED_TRANSIENT:
        raise fail(for_parameter(TpmRc.HANDLE, 1), "savedHandle is not a transient object")
    source = reader(body, "saved object")
    try:
        public = Public.read_tpm2b(source)
        raw = read_tpm2b(source, "sensitive")
        qualified = read_tpm2b(source, "qualified name", 66)
        source.expect_end()
        sensitive = Sensitive.from_bytes(raw) if raw else None
    except FormatError:
        raise fail(for_parameter(TpmRc.INTEGRITY, 1), "context body is malformed") from None
    handle = tpm.load_object(TpmObject(public, sensitive, context.hierarchy, qualified))
    return Result((handle,))


# This module's rows of the command table (Part 3: handles, authorization roles,
# response handles), registered explicitly so each handler stays a plain function.
register(TpmCc.CONTEXT_SAVE, context_save, handles=1)
register(TpmCc.CONTEXT_LOAD, context_load, response_handles=1)
