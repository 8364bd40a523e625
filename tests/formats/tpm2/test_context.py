"""TPMS_CONTEXT (Part 2 Table 212) against a real TPM's TPM2_ContextSave answer (swtpm's, in
``tests/vectors/tpm/swtpm``): its fields in order, big-endian, the blob's size limit at its edge,
and every cut naming the field where the bytes end."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.errors import FormatError, OversizeError, TruncatedError
from cvm.formats.tpm2.constants import TpmRh
from cvm.formats.tpm2.context import MAX_CONTEXT_BLOB, SAVED_TRANSIENT, SavedContext
from cvm.formats.tpm2.tpm2b import reader

VECTORS = Path(__file__).parents[2] / "vectors" / "tpm" / "swtpm"
SWTPM_CONTEXT = (VECTORS / "context-save-primary.bin").read_bytes()


def test_swtpms_saved_primary_is_sequence_handle_hierarchy_then_the_blob() -> None:
    context = SavedContext.from_bytes(SWTPM_CONTEXT)
    # tpm2_createprimary saved it once itself (sequence 1); the recorded save is the second.
    assert context.sequence == 2
    assert context.saved_handle == SAVED_TRANSIENT == 0x80000000
    assert context.hierarchy == TpmRh.OWNER
    assert len(context.blob) == int.from_bytes(SWTPM_CONTEXT[16:18], "big") == 1240
    assert context.blob == SWTPM_CONTEXT[18:]
    assert context.to_bytes() == SWTPM_CONTEXT


def test_the_integers_are_big_endian_and_the_blob_follows_its_size() -> None:
    context = SavedContext(0x0102030405060708, 0x02000001, TpmRh.NULL, b"\xaa\xbb\xcc")
    data = bytes.fromhex("0102030405060708" "02000001" "40000007" "0003" "aabbcc")
    assert context.to_bytes() == data
    assert SavedContext.from_bytes(data) == context
    assert SavedContext(0, 0, 0, b"").to_bytes() == bytes(18)


def test_read_stops_after_the_blob_and_from_bytes_refuses_what_follows() -> None:
    source = reader(SWTPM_CONTEXT + b"\x01\x02", "parameters")
    assert SavedContext.read(source) == SavedContext.from_bytes(SWTPM_CONTEXT)
    assert source.rest() == b"\x01\x02"
    with pytest.raises(FormatError) as refused:
        SavedContext.from_bytes(SWTPM_CONTEXT + b"\x00")
    assert str(refused.value) == (
        f"TPMS_CONTEXT: 1 unexpected trailing bytes at offset {len(SWTPM_CONTEXT):#x}")


@pytest.mark.parametrize(("cut", "message"), [
    (0, "sequence needs 8 bytes at offset 0x0, only 0 left"),
    (7, "sequence needs 8 bytes at offset 0x0, only 7 left"),
    (8, "savedHandle needs 4 bytes at offset 0x8, only 0 left"),
    (11, "savedHandle needs 4 bytes at offset 0x8, only 3 left"),
    (12, "hierarchy needs 4 bytes at offset 0xc, only 0 left"),
    (15, "hierarchy needs 4 bytes at offset 0xc, only 3 left"),
    (16, "contextBlob.size needs 2 bytes at offset 0x10, only 0 left"),
    (17, "contextBlob.size needs 2 bytes at offset 0x10, only 1 left"),
    (18, "contextBlob needs 1240 bytes at offset 0x12, only 0 left"),
    (len(SWTPM_CONTEXT) - 1, "contextBlob needs 1240 bytes at offset 0x12, only 1239 left"),
])
def test_a_cut_context_names_the_field_it_ends_in(cut: int, message: str) -> None:
    with pytest.raises(TruncatedError) as refused:
        SavedContext.from_bytes(SWTPM_CONTEXT[:cut])
    assert str(refused.value) == f"TPMS_CONTEXT: {message}"


def test_a_blob_of_the_maximum_size_is_taken_and_one_byte_more_refused() -> None:
    largest = SavedContext(1, SAVED_TRANSIENT, TpmRh.OWNER, bytes(MAX_CONTEXT_BLOB))
    assert MAX_CONTEXT_BLOB == 5120
    assert SavedContext.from_bytes(largest.to_bytes()) == largest
    over = bytes(16) + (MAX_CONTEXT_BLOB + 1).to_bytes(2, "big") + bytes(MAX_CONTEXT_BLOB + 1)
    with pytest.raises(OversizeError) as refused:
        SavedContext.from_bytes(over)
    assert str(refused.value) == (
        "TPMS_CONTEXT: contextBlob.size 5121 exceeds the maximum 5120 (at offset 0x12)")
    with pytest.raises(FormatError) as refused_write:
        SavedContext(1, SAVED_TRANSIENT, TpmRh.OWNER, bytes(MAX_CONTEXT_BLOB + 1)).to_bytes()
    assert str(refused_write.value) == "TPM2B of 5121 bytes exceeds the maximum 5120"
