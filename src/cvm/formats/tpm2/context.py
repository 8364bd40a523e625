"""TPMS_CONTEXT: a saved object or session (TPM2_ContextSave / TPM2_ContextLoad).

TCG "TPM 2.0 Library, Part 2: Structures", revision 1.59, Table 212 (TPMS_CONTEXT: ``u64
sequence ‖ TPMI_DH_SAVED savedHandle ‖ TPMI_RH_HIERARCHY hierarchy ‖ TPM2B_CONTEXT_DATA
contextBlob``). The blob's contents are the TPM's own business (Part 1 section 30.3). This
is the wire form of TPM2_ContextSave's answer and TPM2_ContextLoad's parameter; a ``.ctx`` file
of tpm2-tools is not: after its own header it writes hierarchy, savedHandle and sequence in
that order, and its contextBlob wraps the TPM's blob in the TSS's own data.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, writer
from cvm.wire import Reader, Writer

MAX_CONTEXT_BLOB = 5120
SAVED_TRANSIENT = 0x80000000


@dataclass(frozen=True)
class SavedContext:
    """TPMS_CONTEXT."""

    sequence: int
    saved_handle: int
    hierarchy: int
    blob: bytes

    @classmethod
    def read(cls, source: Reader) -> SavedContext:
        sequence = source.u64("sequence")
        handle = source.u32("savedHandle")
        hierarchy = source.u32("hierarchy")
        return cls(sequence, handle, hierarchy, read_tpm2b(source, "contextBlob",
                                                           MAX_CONTEXT_BLOB))

    @classmethod
    def from_bytes(cls, data: bytes) -> SavedContext:
        source = reader(data, "TPMS_CONTEXT")
        value = cls.read(source)
        source.expect_end()
        return value

    def write(self, sink: Writer) -> Writer:
        sink.u64(self.sequence).u32(self.saved_handle).u32(self.hierarchy)
        return put_tpm2b(sink, self.blob, MAX_CONTEXT_BLOB)

    def to_bytes(self) -> bytes:
        return self.write(writer()).to_bytes()
