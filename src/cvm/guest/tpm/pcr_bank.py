"""The PCR bank the boot stages measure into: the vTPM itself, through its transport.

:class:`VtpmPcrBank` implements :class:`cvm.guest.boot.pcr_bank.PcrBank` by sending
TPM2_PCR_Extend (TCG TPM 2.0 Library Part 3, revision 1.59, section 22.2) and TPM2_PCR_Read
(section 22.4) on the wire to the vTPM — the SVSM's (SVSM_VTPM_COMMAND, under SEV-SNP) or the
host's (the CRB doorbell of :mod:`cvm.guest.tpm.host_transport`, in the other modes). Every
measurement of the firmware, shim, GRUB and the kernel stub reaches the vTPM as it is made;
nothing is computed aside and replayed afterwards. It counts the commands it sent, so a trace
can say how many extends each stage made.
"""

from __future__ import annotations

from collections.abc import Mapping

from cvm.errors import FormatError, UsageError
from cvm.formats.tpm2.constants import digest_size, hash_alg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.tpm.client import TpmClient


class VtpmPcrBank:
    """PCRs of ``banks`` in the vTPM that ``client`` talks to."""

    def __init__(self, client: TpmClient, banks: tuple[str, ...] = ("sha256",)) -> None:
        self.client = client
        self._banks = banks
        self.extends = 0

    @property
    def banks(self) -> tuple[str, ...]:
        return self._banks

    def extend(self, pcr: int, digests_by_bank: Mapping[str, bytes]) -> None:
        """TPM2_PCR_Extend of ``pcr`` with one digest per bank, in one command."""
        self.client.pcr_extend(pcr, {hash_alg(bank): digest
                                     for bank, digest in digests_by_bank.items()})
        self.extends += 1

    def read(self, pcr: int, bank: str) -> bytes:
        """TPM2_PCR_Read of one PCR (UsageError for a bank the vTPM has not allocated)."""
        value = self.values((pcr,), bank).get(pcr)
        if value is None:
            raise UsageError(f"PCR {pcr}: bank {bank!r} is not allocated in the vTPM")
        return value

    def values(self, pcrs: tuple[int, ...], bank: str = "sha256") -> dict[int, bytes]:
        """Several PCRs of one bank (one TPM2_PCR_Read per group of up to eight). A bank the
        vTPM has not allocated comes back empty, as the TPM's reply selects nothing of it; a
        reply naming a PCR or bank not asked for, or whose digests do not match its selection
        in number or size, is refused."""
        alg = hash_alg(bank)
        size = digest_size(alg)
        out: dict[int, bytes] = {}
        for start in range(0, len(pcrs), 8):
            group = sorted(pcrs[start:start + 8])
            _, selected, digests = self.client.pcr_read(PcrSelectionList.of(alg, group))
            returned = selected.items()
            if len(digests) != len(returned):
                raise FormatError(f"TPM2_PCR_Read reply: {len(digests)} digest(s) for "
                                  f"{len(returned)} selected PCR(s)")
            for (returned_alg, pcr), digest in zip(returned, digests, strict=True):
                if returned_alg != alg or pcr not in group:
                    raise FormatError(f"TPM2_PCR_Read reply: PCR {pcr} of bank "
                                      f"{returned_alg:#06x} was not asked for ({bank} {group})")
                if len(digest) != size:
                    raise FormatError(f"TPM2_PCR_Read reply: {bank} PCR {pcr} is "
                                      f"{len(digest)} bytes, not {size}")
                out[pcr] = digest
        return out
