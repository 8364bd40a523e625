"""TPMS_ATTEST for TPM2_Quote: the structure an attestation key signs.

TCG "TPM 2.0 Library, Part 2: Structures", revision 1.59: Table 129 (TPMS_CLOCK_INFO: ``u64
clock ‖ u32 resetCount ‖ u32 restartCount ‖ u8 safe``), Table 124 (TPMS_QUOTE_INFO:
``TPML_PCR_SELECTION ‖ TPM2B_DIGEST pcrDigest``) and Table 133 (TPMS_ATTEST: ``u32 magic ‖
TPMI_ST_ATTEST type ‖ TPM2B_NAME qualifiedSigner ‖ TPM2B_DATA extraData ‖ TPMS_CLOCK_INFO ‖
u64 firmwareVersion ‖ TPMU_ATTEST``). ``magic`` is TPM_GENERATED_VALUE (0xFF544347): a
restricted signing key refuses to sign external data that starts with it, which is what makes
a signed TPMS_ATTEST evidence of TPM origin.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import TPM_GENERATED_VALUE, TpmSt
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, writer
from cvm.wire import Layout, u8, u32, u64

CLOCK_INFO_SIZE = 0x11
CLOCK_INFO_LAYOUT = Layout(
    "TPMS_CLOCK_INFO",
    CLOCK_INFO_SIZE,
    [u64("clock", 0x00), u32("reset_count", 0x08), u32("restart_count", 0x0C), u8("safe", 0x10)],
    endian="big",
)


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO (Table 129)."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool = True

    @classmethod
    def from_bytes(cls, data: bytes) -> ClockInfo:
        fields = CLOCK_INFO_LAYOUT.unpack(data)
        if fields["safe"] not in (0, 1):
            raise FormatError("TPMS_CLOCK_INFO: safe is not a TPMI_YES_NO")
        return cls(int(fields["clock"]), int(fields["reset_count"]),
                   int(fields["restart_count"]), fields["safe"] == 1)

    def to_bytes(self) -> bytes:
        return CLOCK_INFO_LAYOUT.pack({
            "clock": self.clock, "reset_count": self.reset_count,
            "restart_count": self.restart_count, "safe": int(self.safe),
        })


@dataclass(frozen=True)
class QuoteAttest:
    """A TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE."""

    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_select: PcrSelectionList
    pcr_digest: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> QuoteAttest:
        """Parse TPMS_ATTEST bytes (the message ``tpm2_quote -m`` writes)."""
        source = reader(data, "TPMS_ATTEST")
        magic = source.u32("magic")
        if magic != TPM_GENERATED_VALUE:
            raise source.fail(f"magic {magic:#010x} is not TPM_GENERATED_VALUE")
        kind = source.u16("type")
        if kind != TpmSt.ATTEST_QUOTE:
            raise source.fail(f"type {kind:#06x} is not TPM_ST_ATTEST_QUOTE")
        signer = read_tpm2b(source, "qualifiedSigner", 2 + 64)
        extra = read_tpm2b(source, "extraData", 64)
        clock = ClockInfo.from_bytes(source.take(CLOCK_INFO_SIZE, "clockInfo"))
        firmware = source.u64("firmwareVersion")
        selection = PcrSelectionList.read(source)
        pcr_digest = read_tpm2b(source, "pcrDigest", 64)
        source.expect_end()
        return cls(signer, extra, clock, firmware, selection, pcr_digest)

    def to_bytes(self) -> bytes:
        sink = writer().u32(TPM_GENERATED_VALUE).u16(TpmSt.ATTEST_QUOTE)
        put_tpm2b(sink, self.qualified_signer)
        put_tpm2b(sink, self.extra_data)
        sink.put(self.clock_info.to_bytes()).u64(self.firmware_version)
        self.pcr_select.write(sink)
        return put_tpm2b(sink, self.pcr_digest).to_bytes()
