"""The hypervisor: allocates memory, builds nested page tables, runs vCPUs and handles exits.

It is untrusted. It touches guest memory only through :class:`~cvm.hardware.machine.Machine`
(DRAM as it is, RMP-checked writes) and sees guest registers only where the mode lets it: the
VMCB of ``plain``/``sev`` vCPUs, the GHCB an ``sev-es``/``sev-snp`` guest fills. ``exit_hooks``
let an attack observe or tamper with each exit as it arrives, before the host handles it.

Two ways a VM comes to exist here:

- :meth:`Hypervisor.create_vm` builds a bare VM in one step (no firmware image): RAM pages,
  nested page table, vCPUs. Its SEV-ES/SNP save areas are installed through the host's PSP when
  the host has one (``Hypervisor(machine, psp=...)``): LAUNCH_START, one LAUNCH_UPDATE of type
  VMSA per vCPU (SEV Key Management API 55766 §6.4 LAUNCH_UPDATE_VMSA for SEV-ES; SEV-SNP
  Firmware ABI 56860 §8.17 SNP_LAUNCH_UPDATE, PAGE_TYPE_VMSA for SNP), LAUNCH_FINISH, then the
  first VMRUN. Without a PSP, create_vm is a *pre-launched* shortcut: the silicon's VMSA path
  (:meth:`~cvm.hardware.vcpu.Vcpu.install_vmsa`) encrypts the save area and marks the RMP entry
  as the firmware would, but no guest context, launch digest or guest-request channel exists.
  The memory-attack scenarios and the demo use the shortcut: their subject is the memory and
  register protection of each mode, which is the same either way.
- :meth:`Hypervisor.adopt` takes over a VM the launch path (:mod:`cvm.host.launch`) built page by
  page through the PSP, so that its exits reach this host like any other guest's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from cvm.errors import StateError, StatusError, UsageError
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.ghcb_msr import (
    CPUID_REGISTERS,
    MsrFunction,
    MsrMessage,
    PscOperation,
    cpuid_response,
    psc_response,
    run_vmpl_response,
    sev_info_response,
)
from cvm.formats.snp.page_info import VMSA_GPA, PageType
from cvm.formats.snp.psc_buffer import NAE_PSC, PscBuffer
from cvm.formats.snp.vmsa import SevFeatures, Vmsa
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.engine import MAX_ASID
from cvm.hardware.memory.rmp import RmpStatus
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.psp.sev_legacy import LegacyFirmware
from cvm.hardware.vcpu import EXIT_CPUID, EXIT_VMGEXIT, Vcpu, VmExit, reset_registers
from cvm.hardware.vm import Mode, VirtualMachine

EXIT_NAE_CPUID = 0x72
NAE_AP_CREATION = 0x8000_0013
AP_CREATE = 1
PSC_ERROR_INVALID = 1
# The host's answer to a NAE event in SW_EXITINFO1 bits 31:0 (GHCB specification 56421 §4.1;
# the names are Linux's ``sev-common.h``): 0 the event was handled; 2 the input was malformed,
# the reason in SW_EXITINFO2.
HV_RESP_MALFORMED_INPUT = 2
GHCB_ERR_MISSING_INPUT = 4
GHCB_ERR_INVALID_INPUT = 5
GHCB_ERR_INVALID_EVENT = 6
GHCB_PROTOCOL_MIN = 1
GHCB_PROTOCOL_MAX = 2
C_BIT = 51
_MSR_FUNCTION = 0xFFF  # GHCB MSR bits 11:0: the function
_RUN_VMPL_REQUEST = int(MsrFunction.RUN_VMPL_REQUEST)
SNP_POLICY = 0x30000  # QEMU's default SNP policy: SMT allowed, reserved bit 17 set
SEV_ES_POLICY = 0x5  # NODBG | ES

ExitHook = Callable[["Guest", Vcpu, VmExit], None]

# What the host answers to CPUID: (eax, ebx, ecx, edx) per leaf. 0x8000001F advertises SME,
# SEV, SEV-ES, SEV-SNP and VMPLs, C-bit position 51 and 4 VMPLs (notes/snp.md §5.2).
DEFAULT_CPUID: dict[int, tuple[int, int, int, int]] = {
    0x0000_0000: (0x10, 0x68747541, 0x444D4163, 0x69746E65),  # "AuthenticAMD"
    0x0000_0001: (0x00A00F11, 0, 0, 0),
    0x8000_001F: (0x3B, (4 << 12) | (1 << 6) | 51, MAX_ASID, 1),
}


@dataclass
class Guest:
    """What the host knows of one VM it created: the VM, its vCPUs and its system pages."""

    vm: VirtualMachine
    vcpus: list[Vcpu]
    frames: list[int]
    exits: list[VmExit] = field(default_factory=list)
    handle: int | None = None  # the host PSP's guest handle, when that PSP launched it

    @property
    def mode(self) -> Mode:
        return self.vm.mode


class Hypervisor:
    """The host's VMM on one machine."""

    def __init__(self, machine: Machine, psp: SecureProcessor | None = None) -> None:
        if psp is not None and psp.machine is not machine:
            raise UsageError("the PSP belongs to another machine")
        self.machine = machine
        self.psp = psp
        self.legacy = None if psp is None else LegacyFirmware(psp)
        self.guests: dict[int, Guest] = {}
        self.cpuid: dict[int, tuple[int, int, int, int]] = dict(DEFAULT_CPUID)
        self.exit_hooks: list[ExitHook] = []
        self._next_spa = 0x10_0000  # keep the first MiB for the host, as firmware does
        self._free: list[int] = []
        self.leaked: list[int] = []  # pages the RMP would not give back
        self._plain_ids = 0

    # -- memory -------------------------------------------------------------------------------
    def allocate_page(self) -> int:
        """A free system page (zeroed by the host, which owns it)."""
        return self.allocate_pages(1)[0]

    def allocate_pages(self, count: int) -> list[int]:
        """``count`` free system pages, zeroed by the host: freed pages first (last freed
        first), then never-used pages, which follow one another and are zeroed in one write."""
        reused = min(count, len(self._free))
        first, fresh = self._next_spa, count - reused
        size = self.machine.dram.size_bytes
        if first + fresh * PAGE_SIZE > size:  # before anything is taken
            free = (size - first) // PAGE_SIZE + len(self._free)
            raise UsageError(f"the host's DRAM is full: {count} pages ({count * PAGE_SIZE >> 20} "
                             f"MiB) asked, {free} ({free * PAGE_SIZE >> 20} MiB) free")
        pages = [self._free.pop() for _ in range(reused)]
        for spa in pages:
            self.machine.host_zero(spa, PAGE_SIZE)
        if fresh > 0:
            self._next_spa += fresh * PAGE_SIZE
            self.machine.host_zero(first, fresh * PAGE_SIZE)
            pages.extend(range(first, self._next_spa, PAGE_SIZE))
        return pages

    def spa_of(self, guest: Guest, gpa: int) -> int:
        spa = guest.vm.translate(gpa)
        if spa is None:
            raise UsageError(f"guest page {gpa:#x} is not mapped")
        return spa

    # -- lifecycle ----------------------------------------------------------------------------
    def create_vm(
        self, mode: Mode | str, memory_bytes: int, *, vcpus: int = 1, asid: int | None = None
    ) -> Guest:
        """Create a VM: ASID and key, backing pages, nested page table, vCPUs (and VMSAs)."""
        mode = Mode.parse(mode) if isinstance(mode, str) else mode
        if vcpus < 1:
            raise UsageError(f"a VM needs at least one vCPU, got {vcpus}")
        if mode.snp and not self.machine.snp_enabled:
            raise StateError("SNP is not enabled on this machine")
        if mode is Mode.PLAIN:
            asid = 0
            key = self._plain_key()
        else:
            asid = asid if asid is not None else self.free_asid()
            if asid in self.guests:
                raise StateError(f"ASID {asid} is already in use by a live guest")
            self.machine.engine.activate(asid)
            key = asid
        vm = VirtualMachine(self.machine, asid, mode, memory_bytes)
        frames = []
        for gpa in range(0, memory_bytes, PAGE_SIZE):
            spa = self.allocate_page()
            frames.append(spa)
            vm.map(gpa, spa)
            if mode.snp:
                self._rmpupdate(spa, assigned=True, asid=asid, gpa=gpa)
        cpus = [Vcpu(vm, index) for index in range(vcpus)]
        handle = None
        if mode.encrypts_registers and self.psp is not None:
            handle = self._launch_vmsas(vm, cpus)
        elif mode.encrypts_registers:
            for vcpu in cpus:
                vcpu.install_vmsa(self.allocate_page())
        guest = Guest(vm, [], frames, handle=handle)
        for vcpu in cpus:
            self._attach(guest, vcpu)
        self.guests[key] = guest
        return guest

    def _launch_vmsas(self, vm: VirtualMachine, vcpus: list[Vcpu]) -> int:
        """LAUNCH_START, LAUNCH_UPDATE of each vCPU's reset state as a VMSA, FINISH, VMRUN."""
        assert self.psp is not None and self.legacy is not None
        registers = reset_registers()
        if vm.mode.snp:
            registers["sev_features"] = int(SevFeatures.SNP_ACTIVE)
            handle = self.psp.snp_launch_start(vm.asid, SNP_POLICY)
        else:
            handle = self.legacy.launch_start(vm.asid, SEV_ES_POLICY)
        page = Vmsa(registers).to_bytes()
        for vcpu in vcpus:
            spa = self.allocate_page()
            self.machine.host_write(spa, page)
            if vm.mode.snp:
                self._rmpupdate(spa, assigned=True, asid=vm.asid, gpa=VMSA_GPA)
                self.psp.snp_launch_update(handle, spa, PageType.VMSA)
            else:
                self.legacy.launch_update_vmsa(handle, spa)
            vcpu.vmsa_spa = spa
            vcpu.registers = None  # the state lives in the encrypted VMSA until VMRUN
        if vm.mode.snp:
            self.psp.snp_launch_finish(handle)
        else:
            self.legacy.launch_measure(handle)
            self.legacy.launch_finish(handle)
        for vcpu in vcpus:
            vcpu.vmrun()
        return handle

    def adopt(
        self,
        vm: VirtualMachine,
        vcpus: list[Vcpu],
        frames: list[int],
        *,
        handle: int | None = None,
    ) -> Guest:
        """Take over a VM built by the launch path: track it and handle its vCPUs' exits.

        ``frames`` are the system pages backing its memory (reclaimed by :meth:`destroy_vm`);
        ``handle`` is its guest handle when this host's own PSP launched it, so that
        :meth:`destroy_vm` decommissions it there.
        """
        if vm.machine is not self.machine:
            raise UsageError("that VM runs on another machine")
        if any(vcpu.vm is not vm for vcpu in vcpus):
            raise UsageError("a vCPU belongs to another VM")
        if vm.mode is Mode.PLAIN:
            key = self._plain_key()
        else:
            key = vm.asid
            if key in self.guests:
                raise StateError(f"ASID {key} is already in use by a live guest")
        guest = Guest(vm, [], frames, handle=handle)
        for vcpu in vcpus:
            self._attach(guest, vcpu)
        self.guests[key] = guest
        return guest

    def _attach(self, guest: Guest, vcpu: Vcpu) -> None:
        vcpu.exit_handler = functools.partial(self._on_exit, guest)
        guest.vcpus.append(vcpu)

    def destroy_vm(self, guest: Guest) -> None:
        """Tear a VM down: reclaim its pages (RMPUPDATE to the host) and forget its key."""
        key = next((k for k, g in self.guests.items() if g is guest), None)
        if key is None:
            raise StateError("that VM is not running on this host")
        del self.guests[key]
        if guest.handle is not None and self.psp is not None and self.legacy is not None:
            if guest.mode.snp:
                self.psp.snp_decommission(guest.handle)
            else:
                self.legacy.decommission(guest.handle)
        vmsas = {spa for v in guest.vcpus for spa in v.vmsa_pages().values()}
        pages = list(guest.frames) + sorted(vmsas - set(guest.frames))
        for spa in pages:
            if self.machine.snp_enabled:
                status = self.machine.rmp.rmpupdate(spa, assigned=False)  # after DECOMMISSION
                if status is not RmpStatus.SUCCESS:
                    # An immutable (VMSA) page cannot be RMPUPDATEd back; without the PSP's
                    # SNP_PAGE_RECLAIM it is never handed out again (KVM ``snp_leak_pages``).
                    self.leaked.append(spa)
                    continue
            self._free.append(spa)
        if guest.mode.encrypts_memory:
            self.machine.engine.deactivate(guest.vm.asid)

    def _plain_key(self) -> int:
        """The key a plain VM (ASID 0, shared by all) is tracked under: negative, never reused."""
        self._plain_ids += 1
        return -self._plain_ids

    def free_asid(self) -> int:
        """The lowest ASID neither a live guest nor a key of the memory engine holds."""
        for asid in range(1, MAX_ASID + 1):
            if asid not in self.guests and not self.machine.engine.is_active(asid):
                return asid
        raise StateError("no free ASID")

    def _rmpupdate(self, spa: int, **fields: int | bool) -> None:
        status = self.machine.rmp.rmpupdate(spa, **fields)  # type: ignore[arg-type]
        if status is not RmpStatus.SUCCESS:
            raise StatusError(f"RMPUPDATE of {spa:#x} failed: {status.name}", int(status))

    # -- exits --------------------------------------------------------------------------------
    def _on_exit(self, guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        guest.exits.append(info)
        for hook in self.exit_hooks:
            hook(guest, vcpu, info)
        if info.exit_code == EXIT_CPUID and info.vmcb is not None:
            save = info.vmcb.save
            leaf = save["rax"] & 0xFFFF_FFFF
            values = self.cpuid.get(leaf, (0, 0, 0, 0))
            save.update(zip(("rax", "rbx", "rcx", "rdx"), values, strict=True))
            save["rip"] += 2
        elif info.exit_code == EXIT_VMGEXIT:
            self._on_vmgexit(guest, vcpu)

    def _on_vmgexit(self, guest: Guest, vcpu: Vcpu) -> None:
        msr = vcpu.ghcb_msr
        if msr and msr % PAGE_SIZE == 0:
            self._on_ghcb_exit(guest, vcpu)  # the MSR holds the GHCB's address
            return
        if 0 <= msr < 1 << 64 and msr & _MSR_FUNCTION == _RUN_VMPL_REQUEST:
            # the SVSM's every call, decoded as MsrMessage.parse would: VMPL in bits 39:32
            try:
                vcpu.select_vmpl(msr >> 32 & 0xFF)
                vcpu.ghcb_msr = run_vmpl_response(0)
            except StateError:
                vcpu.ghcb_msr = run_vmpl_response(1)
            return
        message = MsrMessage.parse(msr)
        function = message.function
        if function is MsrFunction.CPUID_REQUEST:
            leaf = message.data >> 20
            register = CPUID_REGISTERS[(message.data >> 18) & 3]
            value = self.cpuid.get(leaf, (0, 0, 0, 0))[CPUID_REGISTERS.index(register)]
            vcpu.ghcb_msr = cpuid_response(value, register)
        elif function is MsrFunction.SEV_INFO_REQUEST:
            vcpu.ghcb_msr = sev_info_response(GHCB_PROTOCOL_MAX, GHCB_PROTOCOL_MIN, C_BIT)
        elif function is MsrFunction.REGISTER_GHCB_REQUEST:
            vcpu.ghcb_msr = (message.data << 12) | MsrFunction.REGISTER_GHCB_RESPONSE
        elif function is MsrFunction.PSC_REQUEST:
            vcpu.ghcb_msr = self._page_state_change(guest, message.data)
        elif function is MsrFunction.TERMINATE:
            raise StateError(f"guest requested termination ({msr:#x})")
        else:
            raise StateError(f"unsupported GHCB MSR request {msr:#x}")

    def _page_state_change(self, guest: Guest, data: int) -> int:
        operation = data >> 40 & 0xF
        gpa = (data & ((1 << 40) - 1)) << 12
        return psc_response(self._change_page(guest, gpa, operation))

    def _change_page(self, guest: Guest, gpa: int, operation: int) -> int:
        """RMPUPDATE one page to private or shared as the guest asked; 0 or an error code."""
        spa = guest.vm.translate(gpa)
        if spa is None or operation not in (PscOperation.PRIVATE, PscOperation.SHARED):
            return PSC_ERROR_INVALID
        if self.machine.snp_enabled and guest.mode.snp:
            # shared: the entry goes back to the host (RMPUPDATE ignores ASID and GPA then)
            status = self.machine.rmp.rmpupdate(
                spa, assigned=operation == PscOperation.PRIVATE, asid=guest.vm.asid, gpa=gpa
            )
            if status is not RmpStatus.SUCCESS:
                return int(status)
        return 0

    def _ap_creation(self, guest: Guest, request: Ghcb) -> Ghcb:
        """GHCB AP creation, event CREATE: run the guest page as a vCPU's VMSA at a VMPL.

        SW_EXITINFO1 holds the APIC ID (bits 63:32), the VMPL (23:16) and the event (15:0),
        SW_EXITINFO2 the VMSA's page-aligned GPA; anything else is malformed input."""
        info, gpa = request.get("sw_exitinfo1"), request.get("sw_exitinfo2")
        if info is None or gpa is None:
            return malformed_input(GHCB_ERR_MISSING_INPUT)
        event, vmpl, apic = info & 0xFFFF, info >> 16 & 0xFF, info >> 32
        if event != AP_CREATE:
            return malformed_input(GHCB_ERR_INVALID_EVENT)
        spa = guest.vm.translate(gpa)
        target = next((v for v in guest.vcpus if v.index == apic), None)
        if gpa % PAGE_SIZE or spa is None or target is None:
            return malformed_input(GHCB_ERR_INVALID_INPUT)
        try:
            target.register_vmsa(vmpl, spa)
        except (StateError, UsageError):
            return malformed_input(GHCB_ERR_INVALID_INPUT)
        return Ghcb.build(sw_exitinfo1=0)

    def _on_ghcb_exit(self, guest: Guest, vcpu: Vcpu) -> None:
        """A VMGEXIT with a GHCB: the NAE event the guest described in the shared page."""
        spa = self.spa_of(guest, vcpu.ghcb_page())
        request = Ghcb.from_bytes(self.machine.host_read(spa, PAGE_SIZE))
        if request.get("sw_exitcode") == EXIT_NAE_CPUID:
            rax = request.get("rax")
            if rax is None:
                reply = malformed_input(GHCB_ERR_MISSING_INPUT)
            else:
                eax, ebx, ecx, edx = self.cpuid.get(rax & 0xFFFF_FFFF, (0, 0, 0, 0))
                reply = Ghcb.build(rax=eax, rbx=ebx, rcx=ecx, rdx=edx)
            self.machine.host_write(spa, reply.to_bytes())
        elif request.get("sw_exitcode") == NAE_AP_CREATION:
            self.machine.host_write(spa, self._ap_creation(guest, request).to_bytes())
        elif request.get("sw_exitcode") == NAE_PSC:
            buffer = PscBuffer.from_bytes(request.shared_buffer)
            cur = buffer.cur_entry
            error = 0
            while cur < len(buffer.entries) and not error:
                entry = buffer.entries[cur]
                error = self._change_page(guest, entry.gfn << 12, entry.operation)
                cur += 0 if error else 1
            done = PscBuffer(buffer.entries, cur).to_bytes()
            reply = Ghcb.build(done, sw_exitinfo2=error << 32 if error else 0)
            self.machine.host_write(spa, reply.to_bytes())


def malformed_input(reason: int) -> Ghcb:
    """The host's answer to a NAE event whose input it refuses: SW_EXITINFO1 2, the reason in
    SW_EXITINFO2."""
    return Ghcb.build(sw_exitinfo1=HV_RESP_MALFORMED_INPUT, sw_exitinfo2=reason)
