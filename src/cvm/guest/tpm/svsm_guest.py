"""The guest OS's side of the SVSM call protocol: its vTPM driver and attestation requests.

What a Linux guest at VMPL1+ does (``drivers/char/tpm/tpm_svsm.c`` and the SVSM attestation
path of configfs-tsm): it writes the request into one of its own pages, loads RAX =
``protocol << 32 | call`` and the parameters, and switches to VMPL0 with VMGEXIT(SNP_RUN_VMPL)
(AMD 58019 section 4; the switch is modelled by running the SVSM's handler with the vCPU at
VMPL0). Its memory accesses happen at its own VMPL, so the RMP applies to it. It holds no
secret of the SVSM: it sees only its own request page, which the SVSM answers in place.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import StatusError
from cvm.formats.svsm.attest_request import AttestRequest
from cvm.formats.svsm.services_manifest import VTPM_SERVICE_GUID
from cvm.formats.svsm.vtpm_command import BUFFER_SIZE, VtpmCommandRequest, VtpmCommandResponse
from cvm.guest.svsm.svsm import (
    ATTEST_SERVICES,
    ATTEST_SINGLE_SERVICE,
    PROTOCOL_ATTEST,
    PROTOCOL_VTPM,
    VTPM_COMMAND,
    VTPM_QUERY,
    Svsm,
)
from cvm.hardware.vcpu import Vcpu

NONCE_OFFSET, MANIFEST_OFFSET, REPORT_OFFSET = 0x100, 0x400, 0x800


@dataclass
class SvsmGuest:
    """The guest OS on ``vcpu`` at ``vmpl`` with one buffer page and one scratch page."""

    vcpu: Vcpu
    svsm: Svsm
    buffer_gpa: int
    scratch_gpa: int
    vmpl: int = 1

    def call(self, protocol: int, call: int, rcx: int = 0, rdx: int = 0,
             r8: int = 0) -> tuple[int, int, int, int]:
        """One SVSM call; returns (RAX, RCX, RDX, R8) after the SVSM answered."""
        self.vcpu.vmpl = self.vmpl
        for name, value in (("rax", protocol << 32 | call), ("rcx", rcx), ("rdx", rdx),
                            ("r8", r8)):
            self.vcpu.set_register(name, value)
        self.svsm.handle_call()
        return tuple(self.vcpu.register(n) for n in ("rax", "rcx", "rdx", "r8"))  # type: ignore[return-value]

    def vtpm_query(self) -> int:
        result, commands, _, _ = self.call(PROTOCOL_VTPM, VTPM_QUERY)
        if result:
            raise StatusError(f"SVSM_VTPM_QUERY failed: {result:#x}", result)
        return commands

    def tpm_execute(self, command: bytes, locality: int = 0) -> bytes:
        """A TPM command through SVSM_VTPM_COMMAND (a transport for TpmClient)."""
        self.vcpu.vmpl = self.vmpl
        request = VtpmCommandRequest(locality, command).to_bytes()
        self.vcpu.write(self.buffer_gpa, request.ljust(BUFFER_SIZE, b"\x00"))
        result, _, _, _ = self.call(PROTOCOL_VTPM, VTPM_COMMAND, self.buffer_gpa)
        if result:
            raise StatusError(f"SVSM_VTPM_COMMAND failed: {result:#x}", result)
        self.vcpu.vmpl = self.vmpl
        return VtpmCommandResponse.from_bytes(self.vcpu.read(self.buffer_gpa, BUFFER_SIZE)).response

    def attest(self, nonce: bytes, single_service: bool = True) -> tuple[bytes, bytes]:
        """SVSM_ATTEST_SINGLE_SERVICE(vTPM) or SVSM_ATTEST_SERVICES: (report, manifest)."""
        self.vcpu.vmpl = self.vmpl
        base = self.scratch_gpa
        request = AttestRequest(
            base + REPORT_OFFSET, BUFFER_SIZE - REPORT_OFFSET, base + NONCE_OFFSET, len(nonce),
            base + MANIFEST_OFFSET, REPORT_OFFSET - MANIFEST_OFFSET,
            service=VTPM_SERVICE_GUID if single_service else None,
        )
        self.vcpu.write(base, request.to_bytes())
        self.vcpu.write(base + NONCE_OFFSET, nonce)
        call = ATTEST_SINGLE_SERVICE if single_service else ATTEST_SERVICES
        result, report_size, manifest_size, _ = self.call(PROTOCOL_ATTEST, call, base)
        if result:
            raise StatusError(f"SVSM attestation call failed: {result:#x}", result)
        self.vcpu.vmpl = self.vmpl
        report = self.vcpu.read(base + REPORT_OFFSET, report_size)
        return report, self.vcpu.read(base + MANIFEST_OFFSET, manifest_size)
