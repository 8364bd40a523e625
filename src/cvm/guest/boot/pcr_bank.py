"""Platform Configuration Registers: the interface measured boot extends, and a software bank.

:class:`PcrBank` is the small interface the firmware, shim, GRUB and the kernel stub measure
through: ``extend(pcr, digests_by_bank)`` is TPM2_PCR_Extend (TPM 2.0 Library Part 3, rev 1.59,
section 22.2) with one digest per bank, keyed by bank name (``"sha256"``). The vTPM implements
it; :class:`SoftwarePcrBank` implements it with the same arithmetic (``H(old || digest)``), the
PC Client PTP initial values (PCR 0 ends in the startup locality, PCR 17-22 start all 0xFF)
and the PTP extend-locality rules (TCG PC Client PTP 1.05, Table 3), for builds and tests
that need PCR values without a TPM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from cvm.errors import StatusError, UsageError
from cvm.formats.tcg.algorithm import HashAlgorithm, algorithm_by_name
from cvm.formats.tcg.replay import PCR_COUNT, extend, initial_value

TPM_RC_LOCALITY = 0x907
DEFAULT_BANKS = ("sha1", "sha256")

# PTP Table 3: localities allowed to extend each PCR (bit n = locality n).
EXTEND_LOCALITIES = {
    **dict.fromkeys(range(16), 0x1F),
    16: 0x1F, 17: 0x1C, 18: 0x1C, 19: 0x0C, 20: 0x0E, 21: 0x04, 22: 0x04, 23: 0x1F,
}


class PcrBank(Protocol):
    """What a measuring component needs from a TPM: extend and read PCRs."""

    @property
    def banks(self) -> tuple[str, ...]:
        """The allocated banks, by name (``"sha1"``, ``"sha256"``, ...)."""
        ...

    def extend(self, pcr: int, digests_by_bank: Mapping[str, bytes]) -> None:
        """Extend ``pcr`` of each named bank by its digest (TPM2_PCR_Extend)."""
        ...

    def read(self, pcr: int, bank: str) -> bytes:
        """The current value of ``pcr`` in ``bank`` (TPM2_PCR_Read)."""
        ...


class SoftwarePcrBank:
    """PCR 0-23 of each allocated bank, held in memory, with the TPM's rules."""

    def __init__(
        self, banks: tuple[str, ...] = DEFAULT_BANKS, startup_locality: int = 0, locality: int = 0
    ) -> None:
        if not banks:
            raise UsageError("a PCR bank needs at least one hash algorithm")
        self._algorithms: dict[str, HashAlgorithm] = {
            name: algorithm_by_name(name) for name in banks
        }
        if len(self._algorithms) != len(banks):
            raise UsageError(f"bank listed twice in {banks}")
        self.startup_locality = startup_locality
        self.locality = locality
        self._values: dict[str, list[bytes]] = {
            name: [initial_value(pcr, alg, startup_locality) for pcr in range(PCR_COUNT)]
            for name, alg in self._algorithms.items()
        }

    @property
    def banks(self) -> tuple[str, ...]:
        return tuple(self._algorithms)

    def algorithm(self, bank: str) -> HashAlgorithm:
        try:
            return self._algorithms[bank]
        except KeyError:
            raise UsageError(f"bank {bank!r} is not allocated (banks: {self.banks})") from None

    def extend(self, pcr: int, digests_by_bank: Mapping[str, bytes]) -> None:
        if not 0 <= pcr < PCR_COUNT:
            raise UsageError(f"PCR {pcr} is outside 0..{PCR_COUNT - 1}")
        if not EXTEND_LOCALITIES[pcr] & (1 << self.locality):
            raise StatusError(
                f"PCR {pcr} cannot be extended from locality {self.locality}", TPM_RC_LOCALITY
            )
        checked = []
        for bank, digest in digests_by_bank.items():
            algorithm = self.algorithm(bank)
            if len(digest) != algorithm.digest_size:
                raise UsageError(f"{bank} digest must be {algorithm.digest_size} bytes")
            checked.append((bank, algorithm, digest))
        for bank, algorithm, digest in checked:
            self._values[bank][pcr] = extend(algorithm, self._values[bank][pcr], digest)

    def read(self, pcr: int, bank: str) -> bytes:
        self.algorithm(bank)
        if not 0 <= pcr < PCR_COUNT:
            raise UsageError(f"PCR {pcr} is outside 0..{PCR_COUNT - 1}")
        return self._values[bank][pcr]

    def snapshot(self) -> dict[str, dict[int, bytes]]:
        """Every PCR of every bank, by bank name then PCR index."""
        return {bank: dict(enumerate(values)) for bank, values in self._values.items()}
