"""The guest OS's side of the SVSM call protocol: its vTPM driver and attestation requests.

What a Linux guest at VMPL1 does (``drivers/char/tpm/tpm_svsm.c``, ``arch/x86/coco/sev``'s
``svsm_perform_call_protocol`` and the SVSM attestation path of configfs-tsm): it writes the
request into one of its own pages, loads RAX = ``protocol << 32 | call`` and the parameters,
sets ``call_pending`` in its calling area, and asks the host to run VMPL0 (VMGEXIT with the GHCB
MSR protocol's "run VMPL" request, AMD 58019 section 4). The hardware enters the SVSM's VMSA;
when the SVSM has answered it switches back, and the registers hold the answer. The guest OS's
memory accesses happen at VMPL1, so the RMP applies to it; it holds no secret of the SVSM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cvm.errors import StatusError
from cvm.formats.svsm.attest_request import AttestRequest
from cvm.formats.svsm.pvalidate_request import HEADER_SIZE, PvalidateEntry, PvalidateRequest
from cvm.formats.svsm.services_manifest import VTPM_SERVICE_GUID
from cvm.formats.svsm.vtpm_command import BUFFER_SIZE, VtpmCommandRequest, VtpmCommandResponse
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.guest.svsm.attestation import ATTEST_SERVICES, ATTEST_SINGLE_SERVICE, PROTOCOL_ATTEST
from cvm.guest.svsm.core import CORE_PVALIDATE, CORE_QUERY_PROTOCOL, PROTOCOL_CORE
from cvm.guest.svsm.svsm import CALL_PENDING_OFFSET, Svsm
from cvm.guest.svsm.vtpm import PROTOCOL_VTPM, VTPM_COMMAND, VTPM_QUERY
from cvm.hardware.vcpu import Vcpu

NONCE_OFFSET, MANIFEST_OFFSET, REPORT_OFFSET = 0x100, 0x400, 0x800


@dataclass
class SvsmGuest:
    """The guest OS on ``vcpu`` (VMPL1) with one buffer page and one scratch page; ``svsm``
    tells it where the calling area is."""

    vcpu: Vcpu
    svsm: Svsm
    buffer_gpa: int
    scratch_gpa: int
    kernel: SevGuest = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.kernel = SevGuest(self.vcpu)

    def call(self, protocol: int, call: int, rcx: int = 0, rdx: int = 0,
             r8: int = 0) -> tuple[int, int, int, int]:
        """One SVSM call; returns (RAX, RCX, RDX, R8) after the SVSM answered."""
        self.vcpu.live().update(rax=protocol << 32 | call, rcx=rcx, rdx=rdx, r8=r8)
        self.vcpu.write(self.svsm.layout.caa_gpa + CALL_PENDING_OFFSET, b"\x01")
        self.kernel.run_vmpl(0)
        registers = self.vcpu.live()  # the register file VMRUN loaded from the VMSA
        return registers["rax"], registers["rcx"], registers["rdx"], registers["r8"]

    def query_protocol(self, protocol: int, version: int = 1) -> tuple[int, int]:
        """SVSM_CORE_QUERY_PROTOCOL: (lowest, highest) version offered, (0, 0) if none."""
        result, rcx, _, _ = self.call(PROTOCOL_CORE, CORE_QUERY_PROTOCOL,
                                      protocol << 32 | version)
        if result:
            raise StatusError(f"SVSM_CORE_QUERY_PROTOCOL failed: {result:#x}", result)
        return rcx & 0xFFFF_FFFF, rcx >> 32

    def pvalidate(self, gpas: list[int], validate: bool = True, ignore_cf: bool = False
                  ) -> int:
        """SVSM_CORE_PVALIDATE of ``gpas`` (one request in the scratch page); then the OS sets
        the C-bit of each validated page in its own page tables. Returns how many were done;
        a refusal raises with the SVSM's code."""
        entries = tuple(PvalidateEntry(gpa >> 12, validate, ignore_cf=ignore_cf) for gpa in gpas)
        self.vcpu.write(self.scratch_gpa, PvalidateRequest(entries).to_bytes())
        result, _, _, _ = self.call(PROTOCOL_CORE, CORE_PVALIDATE, self.scratch_gpa)
        done = PvalidateRequest.count(self.vcpu.read(self.scratch_gpa, HEADER_SIZE))[1]
        for gpa in gpas[:done]:
            self.vcpu.vm.set_private(gpa, validate)
        if result:
            raise StatusError(f"SVSM_CORE_PVALIDATE failed after {done} page(s): {result:#x}",
                              result)
        return done

    def vtpm_query(self) -> int:
        result, commands, _, _ = self.call(PROTOCOL_VTPM, VTPM_QUERY)
        if result:
            raise StatusError(f"SVSM_VTPM_QUERY failed: {result:#x}", result)
        return commands

    def tpm_execute(self, command: bytes, locality: int = 0) -> bytes:
        """A TPM command through SVSM_VTPM_COMMAND (a transport for TpmClient)."""
        request = VtpmCommandRequest(locality, command).to_bytes()
        self.vcpu.write(self.buffer_gpa, request.ljust(BUFFER_SIZE, b"\x00"))
        result, _, _, _ = self.call(PROTOCOL_VTPM, VTPM_COMMAND, self.buffer_gpa)
        if result:
            raise StatusError(f"SVSM_VTPM_COMMAND failed: {result:#x}", result)
        return VtpmCommandResponse.from_bytes(self.vcpu.read(self.buffer_gpa, BUFFER_SIZE)).response

    def attest(self, nonce: bytes, single_service: bool = True) -> tuple[bytes, bytes]:
        """SVSM_ATTEST_SINGLE_SERVICE(vTPM) or SVSM_ATTEST_SERVICES: (report, manifest)."""
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
        report = self.vcpu.read(base + REPORT_OFFSET, report_size)
        return report, self.vcpu.read(base + MANIFEST_OFFSET, manifest_size)
