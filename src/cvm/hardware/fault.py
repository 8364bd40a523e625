"""Faults as data: every architectural fault is a record the VM, the host and tests can inspect.

A fault does not crash the emulator. The access that caused it is abandoned (as the faulting
instruction is on real hardware) by raising :class:`FaultRaised`, which carries the record; the
machine appends every record to its fault log. What the VM sees follows the architecture: a #VC
inside the guest, a #NPF exit to the host, an RMP #PF for a host write, an error status for a
host command. AMD APM vol. 2 (24593) §15.36.10-11; notes/snp.md §5.4.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FaultKind(enum.Enum):
    """Which architectural event a fault is."""

    NPF = "#NPF"  # nested page fault, reported to the host as a VM exit
    VC = "#VC"  # VMM communication exception, delivered inside an SEV-ES/SNP guest
    HOST_PF = "#PF(RMP)"  # the host's own access was refused by the RMP
    VMEXIT_INVALID = "VMEXIT_INVALID"  # VMRUN refused the guest state


class Who(enum.Enum):
    HOST = "host"
    GUEST = "guest"


# #NPF error-code bits for RMP checks (APM vol. 2, "Nested page fault error code").
PFERR_WRITE = 1 << 1
PFERR_RMP = 1 << 31
PFERR_ENC = 1 << 34
PFERR_SIZEM = 1 << 35
PFERR_VMPL = 1 << 36
PFERR_NOT_PRESENT = 0

VC_PAGE_NOT_VALIDATED = 0x404
VC_CPUID = 0x72
VC_VMMCALL = 0x81


@dataclass(frozen=True)
class Fault:
    """One fault: its kind, the address, the VMPL, who caused it, the error code and why."""

    kind: FaultKind
    address: int
    who: Who
    error_code: int
    reason: str
    vmpl: int | None = None
    asid: int | None = None

    def __str__(self) -> str:
        where = f"VMPL{self.vmpl} " if self.vmpl is not None else ""
        return (
            f"{self.kind.value} {self.who.value} {where}at {self.address:#x} "
            f"(error {self.error_code:#x}): {self.reason}"
        )


class FaultRaised(Exception):  # noqa: N818 - an architectural event, not a program error
    """Abandons the faulting access; ``fault`` is the record (also in the machine's fault log)."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(str(fault))
        self.fault = fault
