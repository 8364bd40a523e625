"""The guest OS's driver of the host's vTPM (no SVSM: modes plain, sev, sev-es).

As on clouds whose vTPM sits outside the TEE, the TPM is a device the host emulates: the guest
puts a command in a command/response buffer the host can read — a page it shares (C-bit clear,
:meth:`~cvm.guest.kernel.sev_guest.SevGuest.make_shared`) — and rings a doorbell; the host runs
the command on its TPM and writes the response into the same page. The buffer's layout is the
SVSM vTPM request/response (:mod:`cvm.formats.svsm.vtpm_command`), reused as a CRB-style
command buffer. The doorbell is a VMMCALL: in plain and sev the host reads its arguments in the
VMCB (EXITINFO1 = :data:`TPM_DOORBELL`, EXITINFO2 = the buffer's address); under SEV-ES the
#VC handler copies only those two values into the GHCB. Everything the TPM sees — every
command, every PCR value, every unsealed secret — the host sees: that is this design's cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import StatusError
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.svsm.vtpm_command import BUFFER_SIZE, VtpmCommandRequest, VtpmCommandResponse
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import EXIT_VMGEXIT, EXIT_VMMCALL

TPM_DOORBELL = 0x5450_4D32  # "TPM2": the host's vTPM hypercall


@dataclass
class HostTpmTransport:
    """The host's TPM, reached through the shared page ``buffer_gpa``."""

    kernel: SevGuest
    buffer_gpa: int

    def start(self) -> None:
        """Share the command buffer with the host (a no-op for a plain VM's memory)."""
        if self.kernel.mode.encrypts_memory:
            self.kernel.make_shared(self.buffer_gpa)

    def execute(self, command: bytes, locality: int = 0) -> bytes:
        """One TPM command: the buffer, the doorbell, the host's response."""
        cpu = self.kernel.cpu
        request = VtpmCommandRequest(locality, command).to_bytes()
        cpu.write(self.buffer_gpa, request.ljust(BUFFER_SIZE, b"\x00"))
        if self.kernel.mode.encrypts_registers:
            ghcb_gpa = self.kernel.ghcb_gpa
            if ghcb_gpa is None:
                raise StatusError("the host vTPM doorbell needs a GHCB under SEV-ES", 0)
            doorbell = Ghcb.build(sw_exitcode=EXIT_VMMCALL, sw_exitinfo1=TPM_DOORBELL,
                                  sw_exitinfo2=self.buffer_gpa)
            cpu.write(ghcb_gpa, doorbell.to_bytes())
            cpu.ghcb_msr = ghcb_gpa
            cpu.vmexit(EXIT_VMGEXIT)
        else:
            cpu.vmexit(EXIT_VMMCALL, TPM_DOORBELL, self.buffer_gpa)
        response = cpu.read(self.buffer_gpa, BUFFER_SIZE)
        return VtpmCommandResponse.from_bytes(response[:PAGE_SIZE]).response
