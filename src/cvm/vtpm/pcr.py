"""The PCR banks of the vTPM: initial values, localities, extend, reset, update counter.

TCG "PC Client Platform TPM Profile Specification for TPM 2.0", version 1.05, section 4.6
(Table 3: PCR attributes) and TCG "TPM 2.0 Library, Part 1", revision 1.59, section 17
(PCRs) with Part 3 sections 22.2–22.4 (PCR_Extend, PCR_Event, PCR_Read) and 22.8 (PCR_Reset).
The reference TPM's attribute table per PCR is ``{stateSave, resetLocality, extendLocality}``
(bitmaps of localities 0..4):

=========  =========  ===============  ================  ===================================
PCR        stateSave  reset localities extend localities  initial value at Startup(CLEAR)
=========  =========  ===============  ================  ===================================
0–15       yes        none             0–4               zero; PCR 0 ends in the locality
16, 23     no         0–3              0–4               zero
17, 18     no         4                2–4               all 0xFF
19         no         4                2–3               all 0xFF
20         no         2, 4             1–3               all 0xFF
21, 22     no         2, 4             2                 all 0xFF
=========  =========  ===============  ================  ===================================

Every extend or reset increments ``pcrUpdateCounter`` except for PCRs 20–22 (the TCB group).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import PCR_COUNT, TpmAlg, digest, digest_size
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc, describe

BANKS = (TpmAlg.SHA1, TpmAlg.SHA256, TpmAlg.SHA384)
DRTM_PCRS = range(17, 23)
NO_INCREMENT_PCRS = range(20, 23)
# (stateSave, resetLocality bitmap, extendLocality bitmap) per PCR.
_ATTRIBUTES = (
    [(True, 0x00, 0x1F)] * 16
    + [(False, 0x0F, 0x1F), (False, 0x10, 0x1C), (False, 0x10, 0x1C), (False, 0x10, 0x0C),
       (False, 0x14, 0x0E), (False, 0x14, 0x04), (False, 0x14, 0x04), (False, 0x0F, 0x1F)]
)


def _fail(code: int, message: str) -> StatusError:
    return StatusError(f"{message} ({describe(code)})", code)


@dataclass
class PcrBanks:
    """All PCR values of the allocated banks, and the update counter."""

    values: dict[int, list[bytes]] = field(default_factory=dict)
    update_counter: int = 0

    def startup_clear(self, locality: int) -> None:
        """Initial values after TPM2_Startup(CLEAR) from ``locality``."""
        self.values = {}
        for bank in BANKS:
            size = digest_size(bank)
            bank_values = [
                b"\xff" * size if pcr in DRTM_PCRS else bytes(size) for pcr in range(PCR_COUNT)
            ]
            bank_values[0] = bytes(size - 1) + bytes([locality])
            self.values[bank] = bank_values
        self.update_counter = 0

    def saved(self) -> dict[int, list[bytes]]:
        """The stateSave PCRs (0–15), for Shutdown(STATE)."""
        return {bank: list(values[:16]) for bank, values in self.values.items()}

    def restore(self, saved: dict[int, list[bytes]], locality: int) -> None:
        """Startup(STATE): the stateSave PCRs come back, the others start fresh."""
        self.startup_clear(locality)
        for bank, values in saved.items():
            if bank in self.values:
                self.values[bank][:16] = values

    def _check(self, pcr: int) -> None:
        if not 0 <= pcr < PCR_COUNT:
            raise _fail(TpmRc.VALUE, f"PCR {pcr} does not exist")

    def extend(self, pcr: int, bank: int, value: bytes, locality: int) -> None:
        """PCR[bank][pcr] = H_bank(PCR ‖ value), if ``locality`` may extend it."""
        self._check(pcr)
        if not _ATTRIBUTES[pcr][2] >> locality & 1:
            raise _fail(TpmRc.LOCALITY, f"locality {locality} may not extend PCR {pcr}")
        if bank not in self.values:
            return
        if len(value) != digest_size(bank):
            raise _fail(TpmRc.SIZE, f"digest for PCR {pcr} has the wrong size")
        self.values[bank][pcr] = digest(bank, self.values[bank][pcr], value)
        if pcr not in NO_INCREMENT_PCRS:
            self.update_counter = (self.update_counter + 1) & 0xFFFFFFFF

    def reset(self, pcr: int, locality: int) -> None:
        """TPM2_PCR_Reset: zero the PCR in every bank, if ``locality`` may reset it."""
        self._check(pcr)
        if not _ATTRIBUTES[pcr][1] >> locality & 1:
            raise _fail(TpmRc.LOCALITY, f"locality {locality} may not reset PCR {pcr}")
        for bank, values in self.values.items():
            values[pcr] = bytes(digest_size(bank))
        if pcr not in NO_INCREMENT_PCRS:
            self.update_counter = (self.update_counter + 1) & 0xFFFFFFFF

    def read(self, bank: int, pcr: int) -> bytes:
        self._check(pcr)
        if bank not in self.values:
            raise _fail(TpmRc.PCR, f"PCR bank {bank:#06x} is not allocated")
        return self.values[bank][pcr]

    def selected_values(self, selection: PcrSelectionList) -> list[bytes]:
        """The values of every selected PCR, in selection order."""
        return [self.read(bank, pcr) for bank, pcr in selection.items()]

    def current_digest(self, alg: int, selection: PcrSelectionList) -> bytes:
        """H_alg over the selected values (PolicyPCR / Quote pcrDigest)."""
        return digest(alg, *self.selected_values(selection))

    def allocated(self) -> PcrSelectionList:
        return PcrSelectionList(
            tuple(PcrSelectionList.of(bank, range(PCR_COUNT)).selections[0] for bank in BANKS)
        )
