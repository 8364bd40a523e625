"""TPM2_ContextSave and TPM2_ContextLoad (Part 3 sections 28.2–28.3, Part 1 section 30): a
saved object comes back whole under a new handle; a saved session leaves its slot and comes
back once; and every altered, foreign, stale or malformed context is refused with its exact
response code. The blob is checked against a reference of its documented layout
(``TPM2B integrity ‖ IV ‖ AES-128-CFB(body)``, keys from ``KDFa(SHA-256, proof, "CONTEXT",
sequence ‖ savedHandle, ∅, 384)``), which also builds authentic blobs around bad bodies."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmCc, TpmRh, TpmSe
from cvm.formats.tpm2.context import SAVED_TRANSIENT, SavedContext
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.tpm2b import tpm2b
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import sealed_template, srk_template

INTEGRITY_1 = for_parameter(TpmRc.INTEGRITY, 1)
HANDLE_1 = for_parameter(TpmRc.HANDLE, 1)
IV = bytes(range(16))


def _code(call: Callable[[], object]) -> int:
    with pytest.raises(StatusError) as refused:
        call()
    return refused.value.code


def _save(client: TpmClient, handle: int) -> SavedContext:
    reply = client.call(TpmCc.CONTEXT_SAVE, (handle,))
    context = SavedContext.read(reply.params)
    reply.params.expect_end()
    return context


def _load(client: TpmClient, context: SavedContext) -> int:
    return client.call(TpmCc.CONTEXT_LOAD, (), context.to_bytes(), (), 1).handles[0]


def _keys(tpm: Tpm, hierarchy: int, sequence: int, handle: int) -> tuple[bytes, bytes]:
    context = sequence.to_bytes(8, "big") + handle.to_bytes(4, "big")
    material = b""
    counter = 1
    while len(material) < 48:
        material += std_hmac.new(tpm.proof(hierarchy), counter.to_bytes(4, "big") + b"CONTEXT\x00"
                                 + context + (384).to_bytes(4, "big"), hashlib.sha256).digest()
        counter += 1
    return material[:16], material[16:48]


def _sealed_context(tpm: Tpm, sequence: int, handle: int, hierarchy: int,
                    body: bytes) -> SavedContext:
    """A context authentic under this TPM's proof, around any body."""
    sym_key, hmac_key = _keys(tpm, hierarchy, sequence, handle)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(IV)).encryptor()
    encrypted = encryptor.update(body) + encryptor.finalize()
    integrity = std_hmac.new(hmac_key, sequence.to_bytes(8, "big") + handle.to_bytes(4, "big")
                             + hierarchy.to_bytes(4, "big") + IV + encrypted,
                             hashlib.sha256).digest()
    return SavedContext(sequence, handle, hierarchy, tpm2b(integrity) + IV + encrypted)


def _open(tpm: Tpm, context: SavedContext) -> bytes:
    sym_key, _ = _keys(tpm, context.hierarchy, context.sequence, context.saved_handle)
    iv = context.blob[34:50]
    decryptor = Cipher(algorithms.AES(sym_key), CFB(iv)).decryptor()
    return decryptor.update(context.blob[50:]) + decryptor.finalize()


# ---- objects -------------------------------------------------------------------------------
def test_a_saved_object_stays_loaded_and_comes_back_whole(tpm: Tpm, client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, sealed_template(), b"context secret")
    item = client.load(srk, blob, public)
    context = _save(client, item)
    assert (context.saved_handle, context.hierarchy) == (SAVED_TRANSIENT, TpmRh.OWNER)
    saved = tpm.objects[item]
    assert client.unseal(item) == b"context secret"
    client.flush(item)
    again = _load(client, context)
    assert tpm.objects[again] == saved
    assert client.unseal(again) == b"context secret"
    assert client.read_public(again)[2] == saved.qualified_name


def test_the_blob_is_the_documented_layout(tpm: Tpm, client: TpmClient) -> None:
    """The reference decrypts the body (TPM2B public ‖ TPM2B sensitive ‖ TPM2B QN) and its
    own sealing of that body at the same IV gives the same blob."""
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    context = _save(client, srk)
    item = tpm.objects[srk]
    assert item.sensitive is not None
    body = _open(tpm, context)
    assert body == (item.public.to_tpm2b() + tpm2b(item.sensitive.to_bytes())
                    + tpm2b(item.qualified_name))
    iv = context.blob[34:50]
    sym_key, hmac_key = _keys(tpm, TpmRh.OWNER, context.sequence, SAVED_TRANSIENT)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(iv)).encryptor()
    encrypted = encryptor.update(body) + encryptor.finalize()
    integrity = std_hmac.new(hmac_key, context.sequence.to_bytes(8, "big")
                             + SAVED_TRANSIENT.to_bytes(4, "big")
                             + TpmRh.OWNER.to_bytes(4, "big") + iv + encrypted,
                             hashlib.sha256).digest()
    assert context.blob == tpm2b(integrity) + iv + encrypted


def test_a_public_only_object_is_saved_without_a_sensitive_area(
        tpm: Tpm, client: TpmClient) -> None:
    _, public = client.create_primary(TpmRh.OWNER, srk_template())
    external = client.load_external(public, TpmRh.OWNER)
    context = _save(client, external)
    client.flush(external)
    again = _load(client, context)
    assert tpm.objects[again].sensitive is None
    assert tpm.objects[again].public == public


@pytest.mark.parametrize("change", ["blob", "sequence", "hierarchy", "handle", "short", "empty"])
def test_an_altered_context_does_not_authenticate(client: TpmClient, change: str) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    context = _save(client, srk)
    altered = {
        "blob": replace(context, blob=context.blob[:-1] + bytes([context.blob[-1] ^ 1])),
        "sequence": replace(context, sequence=context.sequence + 1),
        "hierarchy": replace(context, hierarchy=TpmRh.ENDORSEMENT),
        "handle": replace(context, saved_handle=SAVED_TRANSIENT + 1),
        "short": replace(context, blob=context.blob[:40]),
        "empty": replace(context, blob=b""),
    }[change]
    assert _code(lambda: _load(client, altered)) == INTEGRITY_1


def test_a_context_of_an_unknown_hierarchy_is_refused(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    context = _save(client, srk)
    assert _code(lambda: _load(client, replace(context, hierarchy=TpmRh.LOCKOUT))) == (
        for_parameter(TpmRc.HIERARCHY, 1))


def test_a_context_from_another_tpm_does_not_authenticate(
        client: TpmClient, make_tpm: Callable[..., Tpm]) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    context = _save(client, srk)
    other = TpmClient(make_tpm().execute)
    other.startup()
    assert _code(lambda: _load(other, context)) == INTEGRITY_1


def test_a_real_tpms_saved_context_is_read_whole_and_does_not_authenticate(
        client: TpmClient) -> None:
    # swtpm's TPM2_ContextSave of a primary key (tests/vectors/tpm/swtpm): cvm reads every
    # field of another TPM's TPMS_CONTEXT, so the refusal is the blob's integrity, not its form.
    vector = Path(__file__).parents[1] / "vectors" / "tpm" / "swtpm" / "context-save-primary.bin"
    context = SavedContext.from_bytes(vector.read_bytes())
    assert _code(lambda: _load(client, context)) == INTEGRITY_1
    # A blob within the format's 5120 bytes but beyond the vTPM's 4096-byte command buffer
    # never reaches the reader.
    too_long = replace(context, blob=bytes(5000))
    assert _code(lambda: _load(client, too_long)) == TpmRc.COMMAND_SIZE


def test_an_authentic_context_must_name_a_transient_object_and_hold_a_whole_body(
        tpm: Tpm, client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    body = _open(tpm, _save(client, srk))
    for handle in (SAVED_TRANSIENT + 1, 0x81000000):
        context = _sealed_context(tpm, 7, handle, TpmRh.OWNER, body)
        assert _code(lambda context=context: _load(client, context)) == HANDLE_1
    item = tpm.objects[srk]
    assert item.sensitive is not None
    long_name = (item.public.to_tpm2b() + tpm2b(item.sensitive.to_bytes())
                 + tpm2b(item.qualified_name.ljust(67, b"\x00")))
    for bad in (body[:-1], body + b"\x00", b"", long_name):
        context = _sealed_context(tpm, 7, SAVED_TRANSIENT, TpmRh.OWNER, bad)
        assert _code(lambda context=context: _load(client, context)) == INTEGRITY_1
    assert _load(client, _sealed_context(tpm, 7, SAVED_TRANSIENT, TpmRh.OWNER, body))


def test_only_transient_objects_and_sessions_are_saved(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    client.evict_control(srk, 0x81000001)
    assert _code(lambda: _save(client, 0x81000001)) == for_handle(TpmRc.HANDLE, 1)
    assert _code(lambda: _save(client, TpmRh.OWNER)) == for_handle(TpmRc.HANDLE, 1)


def test_each_save_takes_the_next_sequence_number(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    first, second = _save(client, srk), _save(client, srk)
    assert second.sequence == first.sequence + 1


# ---- sessions ------------------------------------------------------------------------------
def test_a_saved_session_leaves_its_slot_and_comes_back_once(tpm: Tpm,
                                                             client: TpmClient) -> None:
    session = client.start_auth_session(TpmSe.HMAC)
    live = tpm.sessions[session.handle]
    context = _save(client, session.handle)
    assert (context.saved_handle, context.hierarchy) == (session.handle, TpmRh.NULL)
    assert session.handle not in tpm.sessions
    assert _open(tpm, context) == session.handle.to_bytes(4, "big")
    assert _load(client, context) == session.handle
    assert tpm.sessions[session.handle] is live
    assert session.handle not in tpm.saved_sessions
    assert _code(lambda: _load(client, context)) == HANDLE_1


def test_only_the_latest_save_of_a_session_loads(tpm: Tpm, client: TpmClient) -> None:
    session = client.start_auth_session(TpmSe.POLICY)
    old = _save(client, session.handle)
    _load(client, old)
    new = _save(client, session.handle)
    assert _code(lambda: _load(client, old)) == HANDLE_1
    forged = _sealed_context(tpm, new.sequence, session.handle, TpmRh.NULL,
                             (session.handle + 1).to_bytes(4, "big"))
    assert _code(lambda: _load(client, forged)) == HANDLE_1
    assert _load(client, new) == session.handle


def test_a_session_comes_back_only_into_a_free_slot(client: TpmClient) -> None:
    first = client.start_auth_session(TpmSe.HMAC)
    context = _save(client, first.handle)
    for _ in range(3):
        client.start_auth_session(TpmSe.HMAC)
    assert _code(lambda: _load(client, context)) == TpmRc.SESSION_MEMORY
