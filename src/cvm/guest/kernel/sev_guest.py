"""The guest side of SEV, as OVMF and the Linux kernel implement it.

:class:`SevGuest` runs inside the guest on one vCPU: it sets C-bits, accepts memory with
PVALIDATE (tracking what it validated, so a second validation of the same guest page — the
"double validation" trick of a host that remapped it — is detected and refused), converts pages
between private and shared through the GHCB page-state-change protocol, and handles the events
that SEV-ES turns into #VC: it copies into the shared GHCB only the registers the exit needs.
GHCB specification (AMD 56421) §2.3 and §4; notes/snp.md §5.3-5.4.
"""

from __future__ import annotations

from cvm.errors import PolicyError, StateError, StatusError
from cvm.formats.snp.ghcb import GHCB_PROTOCOL_VERSION, Ghcb
from cvm.formats.snp.ghcb_msr import (
    MsrFunction,
    MsrMessage,
    PscOperation,
    cpuid_request,
    psc_request,
    register_ghcb_request,
    run_vmpl_request,
    sev_info_request,
    terminate,
)
from cvm.formats.snp.psc_buffer import NAE_PSC, PscBuffer, PscEntry
from cvm.formats.snp.vmsa import REGISTER_NAMES, VMSA_LAYOUT, Vmsa
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.rmp import Perm, RmpStatus
from cvm.hardware.vcpu import EXIT_CPUID, EXIT_HLT, EXIT_VMGEXIT, Vcpu

PAGE_SHIFT = 12
NAE_AP_CREATION = 0x8000_0013
AP_CREATE = 1
REGISTER_SET = frozenset(REGISTER_NAMES)
# each register's (offset, end, size) in the save area, looked up once
_SLOTS = {name: (VMSA_LAYOUT.field(name).offset, VMSA_LAYOUT.field(name).end,
                 VMSA_LAYOUT.field(name).size) for name in REGISTER_NAMES}
_SPANS = {field.name: slice(field.offset, field.end) for field in VMSA_LAYOUT.fields}
_NO_PERMISSIONS = Perm(0)
_RUN_VMPL_DONE = int(MsrFunction.RUN_VMPL_RESPONSE)


class SevGuest:
    """The guest kernel's view of its vCPU and memory in any mode."""

    def __init__(self, vcpu: Vcpu) -> None:
        self.cpu = vcpu
        self.vm = vcpu.vm
        self.mode = vcpu.mode
        self.validated: set[int] = set()  # guest frames this guest has PVALIDATEd
        self.ghcb_gpa: int | None = None

    # -- memory -------------------------------------------------------------------------------
    def accept(self, gpa: int, size: int = PAGE_SIZE) -> None:
        """Make ``gpa``..``gpa+size`` private: set the C-bit and, with SNP, PVALIDATE each page."""
        for page in range(gpa - gpa % PAGE_SIZE, gpa + size, PAGE_SIZE):
            if self.mode.snp:
                self.pvalidate(page, validate=True)
            if self.mode.encrypts_memory:
                self.vm.set_private(page, True)

    def pvalidate(self, gpa: int, *, validate: bool) -> None:
        """PVALIDATE one page; a second validation of a page is an attack and is refused."""
        frame = gpa >> PAGE_SHIFT
        if validate and frame in self.validated:
            raise PolicyError(
                f"page {gpa:#x} is already validated: refusing a second validation "
                "(the host remapped it)"
            )
        spa = self.vm.translate(gpa)
        if spa is None:
            raise StateError(f"PVALIDATE of {gpa:#x}: page is not mapped")
        status, unchanged = self.vm.machine.rmp.pvalidate(
            self.vm.asid, gpa - gpa % PAGE_SIZE, spa - spa % PAGE_SIZE, validate
        )
        if status is not RmpStatus.SUCCESS:
            raise StatusError(f"PVALIDATE of {gpa:#x} failed: {status.name}", int(status))
        if unchanged and validate:
            raise PolicyError(f"PVALIDATE of {gpa:#x} changed nothing: page was already valid")
        (self.validated.add if validate else self.validated.discard)(frame)

    def rmpadjust(self, gpa: int, target_vmpl: int, perms: Perm, *, vmsa: bool = False) -> None:
        """Grant ``target_vmpl`` the permissions ``perms`` on one page, as this vCPU's VMPL;
        ``vmsa`` marks the page as a VMSA of ``target_vmpl``."""
        self._rmpadjust_at(gpa, self.vm.translate(gpa), target_vmpl, perms, vmsa)

    def _rmpadjust_at(self, gpa: int, spa: int | None, target_vmpl: int, perms: Perm,
                      vmsa: bool) -> None:
        """:meth:`rmpadjust` of ``gpa`` that the nested table maps at ``spa``."""
        if spa is None:
            raise StateError(f"RMPADJUST of {gpa:#x}: page is not mapped")
        status = self.vm.machine.rmp.rmpadjust(
            self.vm.asid, gpa - gpa % PAGE_SIZE, spa - spa % PAGE_SIZE,
            self.cpu.vmpl, target_vmpl, perms, vmsa=vmsa,
        )
        if status is not RmpStatus.SUCCESS:
            raise StatusError(f"RMPADJUST of {gpa:#x} failed: {status.name}", int(status))

    def make_shared(self, gpa: int, pages: int = 1) -> None:
        """Turn private pages shared: rescind validation, ask the host, clear the C-bits."""
        first = gpa - gpa % PAGE_SIZE
        addresses = [first + i * PAGE_SIZE for i in range(pages)]
        if self.mode.snp:
            for page in addresses:
                if page >> PAGE_SHIFT in self.validated:
                    self.pvalidate(page, validate=False)
            self.page_state_change(addresses, PscOperation.SHARED)
        if self.mode.encrypts_memory:
            for page in addresses:
                self.vm.set_private(page, False)

    def make_private(self, gpa: int, pages: int = 1) -> None:
        """Turn shared pages private: ask the host (SNP), then accept and zero them."""
        first = gpa - gpa % PAGE_SIZE
        addresses = [first + i * PAGE_SIZE for i in range(pages)]
        if self.mode.snp:
            self.page_state_change(addresses, PscOperation.PRIVATE)
        self.accept(first, pages * PAGE_SIZE)
        for page in addresses:
            self.cpu.write(page, bytes(PAGE_SIZE))

    def page_state_change(self, pages: list[int], operation: PscOperation) -> None:
        """Ask the host to RMPUPDATE ``pages``: through the GHCB if there is one, else the MSR."""
        if self.ghcb_gpa is None:
            for page in pages:
                reply = MsrMessage.parse(self.msr_call(psc_request(page, operation)))
                if reply.function is not MsrFunction.PSC_RESPONSE or reply.data >> 20:
                    raise StatusError(f"page-state change of {page:#x} refused", reply.data >> 20)
            return
        request = PscBuffer(tuple(PscEntry(p >> PAGE_SHIFT, int(operation)) for p in pages))
        ghcb = Ghcb.build(request.to_bytes(), sw_exitcode=NAE_PSC)
        self.cpu.write(self.ghcb_gpa, ghcb.to_bytes())
        self.cpu.ghcb_msr = self.ghcb_gpa
        self.cpu.vmexit(EXIT_VMGEXIT)
        answer = Ghcb.from_bytes(self.cpu.read(self.ghcb_gpa, PAGE_SIZE))
        done = PscBuffer.from_bytes(answer.shared_buffer)
        status = answer.get("sw_exitinfo2") or 0  # any bit set is a failure, as Linux reads it
        if status or done.cur_entry != len(pages) or done.entries != request.entries:
            raise StatusError(f"page-state change refused after {done.cur_entry} pages",
                              status >> 32 or status)  # the host's code, in bits 63:32

    # -- exits --------------------------------------------------------------------------------
    def msr_call(self, value: int) -> int:
        """GHCB MSR protocol: write the MSR, VMGEXIT, read the host's answer."""
        self.cpu.ghcb_msr = value
        self.cpu.vmexit(EXIT_VMGEXIT)
        return self.cpu.ghcb_msr

    def setup_ghcb(self, gpa: int) -> None:
        """Share one page with the host and register it as this vCPU's GHCB."""
        if not self.mode.encrypts_registers:
            raise StateError(f"a {self.mode.value} guest has no GHCB")
        info = MsrMessage.parse(self.msr_call(sev_info_request()))
        highest, lowest = info.data >> 36, info.data >> 20 & 0xFFFF
        if info.function is not MsrFunction.SEV_INFO_RESPONSE or not (
            lowest <= GHCB_PROTOCOL_VERSION <= highest
        ):
            self.msr_call(terminate(0, 1))  # GHCB spec: reason set 0, code 1 (protocol)
            # a host that ignores the request does not make the guest go on (Linux halts)
            raise PolicyError(
                f"the host offers GHCB protocol versions {lowest}..{highest}, this guest "
                f"speaks {GHCB_PROTOCOL_VERSION}: the host ignored the termination request"
            )
        self.make_shared(gpa)
        reply = MsrMessage.parse(self.msr_call(register_ghcb_request(gpa)))
        if reply.function is not MsrFunction.REGISTER_GHCB_RESPONSE or reply.data << 12 != gpa:
            raise StatusError(f"host refused GHCB registration of {gpa:#x}", reply.data)
        self.ghcb_gpa = gpa
        self.cpu.ghcb_msr = gpa

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        """CPUID: an intercepted exit in plain/SEV, a #VC and a GHCB round trip in SEV-ES/SNP."""
        if not self.mode.encrypts_registers:
            self.cpu.set_register("rax", leaf)
            self.cpu.set_register("rcx", subleaf)
            self.cpu.vmexit(EXIT_CPUID)
            return (
                self.cpu.register("rax"), self.cpu.register("rbx"),
                self.cpu.register("rcx"), self.cpu.register("rdx"),
            )
        if self.ghcb_gpa is None:
            values = []
            for register in ("eax", "ebx", "ecx", "edx"):
                reply = MsrMessage.parse(self.msr_call(cpuid_request(leaf, register)))
                values.append(reply.data >> 20)
            return values[0], values[1], values[2], values[3]
        request = Ghcb.build(rax=leaf, rcx=subleaf, sw_exitcode=EXIT_CPUID)
        self.cpu.write(self.ghcb_gpa, request.to_bytes())
        self.cpu.ghcb_msr = self.ghcb_gpa
        self.cpu.vmexit(EXIT_VMGEXIT)
        answer = Ghcb.from_bytes(self.cpu.read(self.ghcb_gpa, PAGE_SIZE))
        out = []
        for name in ("rax", "rbx", "rcx", "rdx"):
            value = answer.get(name)
            if value is None:
                raise StatusError(f"host answered CPUID without {name} marked valid", 0)
            out.append(value & 0xFFFF_FFFF)
        return out[0], out[1], out[2], out[3]

    # -- VMPLs (SEV-SNP) ----------------------------------------------------------------------
    def create_vmsa(self, gpa: int, vmsa: Vmsa) -> None:
        """VMPL0: write ``vmsa`` into page ``gpa``, mark it a VMSA of ``vmsa``'s level with
        RMPADJUST, and ask the host to run it (GHCB AP creation, event CREATE)."""
        if self.ghcb_gpa is None:
            raise StateError("creating a VMSA needs a registered GHCB")
        vmpl = vmsa.registers["vmpl"]
        self.accept(gpa)
        self.cpu.write(gpa, vmsa.to_bytes())
        self.rmpadjust(gpa, vmpl, Perm(0), vmsa=True)
        request = Ghcb.build(
            rax=vmsa.registers["sev_features"], sw_exitcode=NAE_AP_CREATION,
            sw_exitinfo1=(self.cpu.index << 32) | (vmpl << 16) | AP_CREATE, sw_exitinfo2=gpa,
        )
        self.cpu.write(self.ghcb_gpa, request.to_bytes())
        self.cpu.ghcb_msr = self.ghcb_gpa
        self.cpu.vmexit(EXIT_VMGEXIT)
        answer = Ghcb.from_bytes(self.cpu.read(self.ghcb_gpa, PAGE_SIZE))
        if (answer.get("sw_exitinfo1") or 0) & 0xFFFF_FFFF:
            raise StatusError(f"the host refused the VMSA at {gpa:#x} for VMPL{vmpl}",
                              (answer.get("sw_exitinfo1") or 0) & 0xFFFF_FFFF)

    def edit_vmsa(self, gpa: int, vmpl: int, registers: dict[str, int],
                  page: bytes | None = None) -> None:
        """VMPL0: change registers of a stopped lower level's VMSA (clear the VMSA bit, write,
        set it again: the RMP refuses writes to a VMSA page). ``page`` is the VMSA page as the
        caller just read it (read again when not given); only the named fields change."""
        data = bytearray(self.cpu.read(gpa, PAGE_SIZE) if page is None else page)
        for name, value in registers.items():
            slot = _SLOTS.get(name)
            if slot is None:
                raise StateError(f"VMSA has no register {name!r}")
            offset, end, size = slot
            data[offset:end] = value.to_bytes(size, "little")
        spa = self.vm.translate(gpa)  # once for both RMPADJUSTs: nothing remaps in between
        self._rmpadjust_at(gpa, spa, vmpl, _NO_PERMISSIONS, False)
        try:
            self.cpu.write(gpa, bytes(data))
        finally:
            self._rmpadjust_at(gpa, spa, vmpl, _NO_PERMISSIONS, True)

    def run_vmpl(self, vmpl: int) -> None:
        """VMGEXIT with the MSR protocol's "run VMPL" request: the host enters ``vmpl``'s VMSA.

        Returns when this level runs again; the host's answer is then in this level's MSR."""
        answer = self.msr_call(run_vmpl_request(vmpl))
        if answer == _RUN_VMPL_DONE:  # the response with error code 0: nothing to decode
            return
        reply = MsrMessage.parse(answer)
        if reply.function is not MsrFunction.RUN_VMPL_RESPONSE or reply.data >> 20:
            raise StatusError(f"the host refused to run VMPL{vmpl}", reply.data >> 20)

    def leave_to(self, vmpl: int) -> None:
        """VMGEXIT "run VMPL" as the last act of this level's entry code: the host enters
        ``vmpl``; this level next runs from its entry code again."""
        self.cpu.ghcb_msr = run_vmpl_request(vmpl)
        self.cpu.vmexit(EXIT_VMGEXIT)

    def halt(self) -> None:
        """HLT: an automatic exit; the host gets control with whatever state the mode exposes."""
        self.cpu.vmexit(EXIT_HLT)


def vmsa_registers(page: bytes, names: tuple[str, ...]) -> dict[str, int]:
    """Registers ``names`` of a VMSA page, read at their offsets (not the whole save area)."""
    found = {}
    for name in names:
        span = _SPANS.get(name) or VMSA_LAYOUT.span(name)  # the layout's error if it has none
        found[name] = int.from_bytes(page[span], "little")
    return found
