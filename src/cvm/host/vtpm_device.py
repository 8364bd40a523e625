"""The host's vTPM device, for a VM without an SVSM (modes plain, sev, sev-es).

The TPM 2.0 engine (:mod:`cvm.vtpm`) runs in the host, as swtpm does beside QEMU; its state file
is opened and sealed with a key the host holds. The guest reaches it through a command buffer
in a page it shares and a VMMCALL doorbell (:mod:`cvm.guest.tpm.host_transport` describes the
guest's side; the doorbell value and the buffer layout are the contract, as bytes). The device
is an exit hook of :class:`~cvm.host.vmm.Hypervisor`; it runs each command at the locality the
request names (the TPM answers TPM_RC_LOCALITY for one it lacks), and logs every command
and response it handled, as a host's device model may, so the host's logs hold what it saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cvm.errors import FormatError
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.svsm.vtpm_command import BUFFER_SIZE, VtpmCommandRequest, VtpmCommandResponse
from cvm.formats.tpm2.command import Response
from cvm.formats.tpm2.response_code import TpmRc
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import EXIT_VMGEXIT, EXIT_VMMCALL, Vcpu, VmExit
from cvm.host.vmm import Guest
from cvm.vtpm.engine import Tpm

TPM_DOORBELL = 0x5450_4D32  # "TPM2", as the guest's driver rings it


@dataclass
class HostVtpm:
    """The TPM the host emulates for its guests; ``log`` is what it saw."""

    tpm: Tpm
    log: list[bytes] = field(default_factory=list)
    commands: int = 0

    def __call__(self, guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        gpa = self._doorbell(guest, vcpu, info)
        if gpa is None:
            return
        spa = guest.vm.translate(gpa)
        if spa is None or gpa % PAGE_SIZE:
            return
        machine = guest.vm.machine
        try:
            request = VtpmCommandRequest.from_bytes(machine.host_read(spa, BUFFER_SIZE))
            command = request.command
            response = self.tpm.execute(command, request.locality)  # the TPM checks it
        except FormatError:
            command, response = b"", Response(TpmRc.FAILURE).to_bytes(False)
        self.commands += 1
        self.log += [command, response]
        machine.host_write(spa, VtpmCommandResponse(response).to_bytes())

    @staticmethod
    def _doorbell(guest: Guest, vcpu: Vcpu, info: VmExit) -> int | None:
        """The buffer address of a TPM doorbell exit, or None for any other exit."""
        if info.exit_code == EXIT_VMMCALL and info.exit_info1 == TPM_DOORBELL:
            return info.exit_info2
        if info.exit_code != EXIT_VMGEXIT or not vcpu.ghcb_msr or vcpu.ghcb_msr % PAGE_SIZE:
            return None
        spa = guest.vm.translate(vcpu.ghcb_msr)
        if spa is None:
            return None
        try:
            ghcb = Ghcb.from_bytes(guest.vm.machine.host_read(spa, PAGE_SIZE))
        except FormatError:
            return None
        if ghcb.get("sw_exitcode") != EXIT_VMMCALL or ghcb.get("sw_exitinfo1") != TPM_DOORBELL:
            return None
        return ghcb.get("sw_exitinfo2")
