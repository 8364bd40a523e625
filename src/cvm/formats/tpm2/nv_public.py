"""TPMS_NV_PUBLIC / TPM2B_NV_PUBLIC: the public area of an NV index, and its Name.

TCG "TPM 2.0 Library, Part 2: Structures", revision 1.59: Table 235 (TPMS_NV_PUBLIC: ``u32
nvIndex ‖ nameAlg ‖ TPMA_NV attributes ‖ TPM2B authPolicy ‖ u16 dataSize``) and Table 236
(TPM2B_NV_PUBLIC). Part 1 section 16: the Name of an NV index is ``nameAlg ‖
H_nameAlg(TPMS_NV_PUBLIC)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import TPM_NT_SHIFT, TpmHt, TpmNt, digest, handle_type, is_hash_alg
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, tpm2b, writer
from cvm.wire import Reader, Writer

MAX_NV_INDEX_SIZE = 2048


def nv_type(attributes: int) -> TpmNt:
    """The index type, TPMA_NV bits 4..7 (ValueError for a value no TPM_NT names). A plain
    function so that mutation testing reaches it (it decides counter, bits, extend or data)."""
    return TpmNt((attributes >> TPM_NT_SHIFT) & 0xF)


@dataclass(frozen=True)
class NvPublic:
    """TPMS_NV_PUBLIC."""

    nv_index: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    data_size: int

    def __post_init__(self) -> None:
        if handle_type(self.nv_index) != TpmHt.NV_INDEX:
            raise FormatError(f"TPMS_NV_PUBLIC: {self.nv_index:#010x} is not an NV index handle")
        if not is_hash_alg(self.name_alg):
            raise FormatError(f"TPMS_NV_PUBLIC: nameAlg {self.name_alg:#06x} is not a hash")
        try:
            nv_type(self.attributes)
        except ValueError:
            raise FormatError("TPMS_NV_PUBLIC: unknown TPM_NT in attributes") from None
        if len(self.auth_policy) > 64:
            raise FormatError("TPMS_NV_PUBLIC: authPolicy is longer than a digest")

    @property
    def nt(self) -> TpmNt:
        return nv_type(self.attributes)

    @classmethod
    def read(cls, source: Reader) -> NvPublic:
        index = source.u32("nvIndex")
        name_alg = source.u16("nameAlg")
        attributes = source.u32("attributes")
        policy = read_tpm2b(source, "authPolicy", 64)
        size = source.u16("dataSize")
        try:
            return cls(index, name_alg, attributes, policy, size)
        except FormatError as error:
            raise source.fail(str(error)) from None

    @classmethod
    def read_tpm2b(cls, source: Reader) -> NvPublic:
        inner = reader(read_tpm2b(source, "TPM2B_NV_PUBLIC"), "TPMS_NV_PUBLIC")
        value = cls.read(inner)
        inner.expect_end()
        return value

    @classmethod
    def from_tpm2b(cls, data: bytes) -> NvPublic:
        source = reader(data, "TPM2B_NV_PUBLIC")
        value = cls.read_tpm2b(source)
        source.expect_end()
        return value

    def write(self, sink: Writer) -> Writer:
        sink.u32(self.nv_index).u16(self.name_alg).u32(self.attributes)
        put_tpm2b(sink, self.auth_policy)
        return sink.u16(self.data_size)

    def to_bytes(self) -> bytes:
        return self.write(writer()).to_bytes()

    def to_tpm2b(self) -> bytes:
        return tpm2b(self.to_bytes())

    def name(self) -> bytes:
        return self.name_alg.to_bytes(2, "big") + digest(self.name_alg, self.to_bytes())

    def with_attributes(self, attributes: int) -> NvPublic:
        return replace(self, attributes=attributes)
