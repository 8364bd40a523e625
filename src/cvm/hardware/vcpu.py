"""A virtual CPU: its register file and the world switch between guest and host.

On a VM exit the register file must go somewhere while the host runs:

- ``plain`` and ``sev``: into the VMCB save area, which lives in host memory in the clear. The
  host reads and may change every register; its changes take effect at the next VMRUN.
- ``sev-es`` and ``sev-snp``: into the VMSA, a guest page encrypted with the guest's key (AMD
  APM vol. 2 §15.35.4). The host sees only the exit code and what the guest itself copies into
  the shared GHCB. At VMRUN the hardware decrypts the VMSA; a VMSA the host corrupted decrypts to
  garbage and VMRUN refuses it (VMEXIT_INVALID). With SNP the VMSA page is a firmware-owned,
  immutable RMP entry the host cannot write at all.

VMPLs (SEV-SNP, APM vol. 2 §15.36.7): a vCPU has one VMSA per privilege level it runs at; the
VMPL is the VMSA's own ``vmpl`` field, so the CPU runs at whatever level the VMSA it entered
says. VMPL0 code creates the VMSA of a lower level in one of its pages (RMPADJUST with the VMSA
bit) and tells the host about it (GHCB "AP creation", event CREATE, the VMPL in SW_EXITINFO1
bits 23:16); the host registers it with :meth:`Vcpu.register_vmsa`. A switch is a VMGEXIT with
the GHCB MSR protocol's "run VMPL" request (AMD 56421 §2.3.1, function 0x016, VMPL in bits
39:32): the host answers, picks that level's VMSA with :meth:`Vcpu.select_vmpl`, and VMRUN
enters it. The GHCB MSR is per VMSA. :attr:`Vcpu.entry_code` is the program a level runs when
the vCPU switches into it (the SVSM's request loop at VMPL0).

Event injection (APM vol. 2 §15.20, EVENTINJ in the VMCB control area, which the host owns in
every mode): the host may queue an event at an exit; VMRUN delivers it whatever the guest's
RFLAGS.IF — unless the guest runs SEV-SNP with Restricted Injection (SEV_FEATURES bit 3), where
VMRUN refuses to inject (recorded as a VMEXIT_INVALID fault, the event is not delivered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cvm.errors import StateError, UsageError
from cvm.formats.snp.vmsa import (
    REGISTER_NAMES,
    SevFeatures,
    Vmsa,
    pack_registers_exact,
    unpack_registers,
)
from cvm.hardware.fault import Fault, FaultKind, Who
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vm import Mode, VirtualMachine

EFER_SVME = 1 << 12

# SVM exit codes (APM vol. 2, Appendix C).
EXIT_CPUID = 0x72
EXIT_HLT = 0x78
EXIT_VMMCALL = 0x81
EXIT_NPF = 0x400
EXIT_VMGEXIT = 0x403
EXIT_INTR = 0x60


def reset_registers() -> dict[str, int]:
    """The register file after reset, as the initial VMSA of a QEMU launch sets it."""
    registers = dict.fromkeys(REGISTER_NAMES, 0)
    registers.update(
        efer=EFER_SVME, cr0=0x10, cr4=0x40, dr7=0x400, dr6=0xFFFF0FF0, rflags=0x2,
        rip=0xFFF0, g_pat=0x0007040600070406, xcr0=0x1, mxcsr=0x1F80, x87_fcw=0x37F,
    )
    return registers


@dataclass
class Vmcb:
    """The VMCB of a ``plain``/``sev`` vCPU: control fields and a save area in the clear."""

    exit_code: int = 0
    exit_info1: int = 0
    exit_info2: int = 0
    save: dict[str, int] = field(default_factory=dict)
    event_inj: int | None = None  # control area: the vector the host asks VMRUN to inject


@dataclass(frozen=True)
class VmExit:
    """What the host is told at an exit. ``vmcb`` is None when the registers are encrypted."""

    vcpu: int
    exit_code: int
    exit_info1: int = 0
    exit_info2: int = 0
    vmcb: Vmcb | None = None


ExitHandler = Callable[["Vcpu", VmExit], None]
VMPL_COUNT = 4


class Vcpu:
    """One vCPU of a VM. The live register file exists only while the guest runs."""

    def __init__(self, vm: VirtualMachine, index: int) -> None:
        self.vm = vm
        self.index = index
        self.registers: dict[str, int] | None = reset_registers()
        self.vmcb = Vmcb()
        self.exit_handler: ExitHandler | None = None
        self.entry_code: dict[int, Callable[[], None]] = {}
        self.delivered_events: list[int] = []
        self._vmsa_pages: dict[int, int] = {}  # VMPL -> system page of its VMSA
        self._ghcb_msr: dict[int, int] = {}  # VMPL -> its GHCB MSR
        self._vmpl = 0  # the level of the VMSA running (or that last ran)
        self._selected = 0  # the level whose VMSA the next VMRUN enters
        # VMSA page -> (its ciphertext as this vCPU last wrote or read it, the registers that
        # ciphertext holds): a save area whose page still holds those bytes is not packed,
        # encrypted, decrypted and parsed again (the same bytes decrypt to the same registers).
        self._vmsa_seen: dict[int, tuple[bytes, dict[str, int]]] = {}
        # A VM's mode is fixed when it is made: where the world switch keeps the registers.
        self._sealed = vm.mode.encrypts_registers
        self._snp = vm.mode.snp

    @property
    def vmpl(self) -> int:
        """The privilege level the vCPU runs at: the ``vmpl`` field of the VMSA it entered."""
        return self._vmpl

    # The properties below delegate to plain methods, which mutation testing reaches (mutmut 3
    # leaves decorated functions alone).
    @property
    def vmsa_spa(self) -> int | None:
        """The system page of the VMSA the next (or current) VMRUN uses."""
        return self._vmsa_page(self._selected)

    @vmsa_spa.setter
    def vmsa_spa(self, spa: int | None) -> None:
        self._set_vmsa_page(self._selected, spa)

    def _vmsa_page(self, vmpl: int) -> int | None:
        return self._vmsa_pages.get(vmpl)

    def _set_vmsa_page(self, vmpl: int, spa: int | None) -> None:
        if spa is None:
            self._vmsa_pages.pop(vmpl, None)
        else:
            self._vmsa_pages[vmpl] = spa

    def vmsa_pages(self) -> dict[int, int]:
        """Every VMSA this vCPU has, by VMPL (the host's per-level vCPU state)."""
        return dict(self._vmsa_pages)

    @property
    def ghcb_msr(self) -> int:
        """The GHCB MSR (0xC0010130) of the running level (saved with its VMSA)."""
        return self._ghcb_msr_of(self._vmpl)

    @ghcb_msr.setter
    def ghcb_msr(self, value: int) -> None:
        self._set_ghcb_msr(self._vmpl, value)

    def _ghcb_msr_of(self, vmpl: int) -> int:
        return self._ghcb_msr.get(vmpl, 0)

    def _set_ghcb_msr(self, vmpl: int, value: int) -> None:
        self._ghcb_msr[vmpl] = value

    @property
    def mode(self) -> Mode:
        return self.vm.mode

    # -- the hardware side of LAUNCH_UPDATE_VMSA ----------------------------------------------
    def install_vmsa(self, spa: int, vmsa: Vmsa | None = None) -> None:
        """Encrypt the initial save area into page ``spa`` (SEV-ES/SNP launch).

        With SNP the page becomes a firmware-owned VMSA entry in the RMP (assigned to this
        guest, validated, immutable), so the host can no longer write it.
        """
        if not self.mode.encrypts_registers:
            raise StateError(f"a {self.mode.value} vCPU keeps its registers in the VMCB")
        self.vm.machine.check_page(spa)
        state = vmsa if vmsa is not None else Vmsa(self.registers or reset_registers())
        self.vm.machine.engine.write_pages(self.vm.asid, spa, state.to_bytes())
        rmp = self.vm.machine.rmp
        if self.mode.snp:
            rmp.firmware_assign(spa, self.vm.asid, 0xFFFF_FFFF_F000, vmsa=True)
            if self.registers is not None:  # a running vCPU runs on it from now on
                previous = self.vmsa_spa
                if previous is not None:
                    rmp.leave_vmsa(previous)
                rmp.enter_vmsa(spa)
        self.vmsa_spa = spa

    # -- the host's side of VMPLs and event injection ----------------------------------------
    def register_vmsa(self, vmpl: int, spa: int) -> None:
        """Host: run page ``spa`` as this vCPU's VMSA for ``vmpl`` (after the guest's AP
        creation request). The page must be a VMSA page of this guest in the RMP."""
        if not self.mode.snp:
            raise StateError(f"a {self.mode.value} vCPU has no VMPLs")
        if not 0 <= vmpl < VMPL_COUNT:
            raise UsageError(f"VMPL {vmpl} is not 0..{VMPL_COUNT - 1}")
        entry = self.vm.machine.rmp.entry(spa)
        if not (entry.assigned and entry.vmsa and entry.asid == self.vm.asid):
            raise StateError(f"page {spa:#x} is not a VMSA page of ASID {self.vm.asid}")
        self._vmsa_pages[vmpl] = spa

    def select_vmpl(self, vmpl: int) -> None:
        """Host: the next VMRUN enters the VMSA registered for ``vmpl`` (a stopped vCPU)."""
        if self.registers is not None:
            raise StateError(f"vCPU {self.index} is running: a VMPL is chosen between runs")
        if vmpl not in self._vmsa_pages:
            raise StateError(f"vCPU {self.index} has no VMSA for VMPL{vmpl}")
        self._selected = vmpl

    def inject_event(self, vector: int) -> None:
        """Host: queue ``vector`` in the VMCB's EVENTINJ field for the next VMRUN."""
        if not 0 <= vector < 256:
            raise UsageError(f"interrupt vector {vector} is not 0..255")
        self.vmcb.event_inj = vector

    # -- world switch -------------------------------------------------------------------------
    def live(self) -> dict[str, int]:
        """The live register file; only the running guest has one."""
        if self.registers is None:
            raise StateError(f"vCPU {self.index} is not running: its registers are saved")
        return self.registers

    def vmexit(self, exit_code: int, info1: int = 0, info2: int = 0) -> None:
        """Leave the guest: save the registers, let the host handle the exit, then VMRUN."""
        registers = self.registers
        if registers is None:
            registers = self.live()  # raises: a stopped vCPU does not exit
        if self._sealed:
            spa = self._vmsa_pages.get(self._selected)
            if spa is None:
                raise StateError(f"vCPU {self.index} has no VMSA page")
            self._save_vmsa(spa, registers)
            if self._snp:
                self.vm.machine.rmp.leave_vmsa(spa)
            self.vmcb = Vmcb(exit_code, info1, info2, {}, self.vmcb.event_inj)
            info = VmExit(self.index, exit_code, info1, info2, None)
        else:
            self.vmcb = Vmcb(exit_code, info1, info2, dict(registers), self.vmcb.event_inj)
            info = VmExit(self.index, exit_code, info1, info2, self.vmcb)
        self.registers = None  # the host runs now; nothing of the guest stays in the CPU
        if self.exit_handler is not None:
            self.exit_handler(self, info)
        self.vmrun()

    def vmrun(self) -> None:
        """Enter the guest: load the registers from the VMCB or decrypt them from the VMSA.

        Entering another VMPL than the one that last ran starts that level's entry code."""
        if self.registers is not None:
            raise StateError(f"vCPU {self.index} is already running")
        if not self._sealed:
            self.registers = dict(self.vmcb.save)
            self._deliver_event()
            return
        spa = self._vmsa_pages.get(self._selected)
        assert spa is not None
        machine = self.vm.machine
        if self._snp:
            entry = machine.rmp.entry(spa)
            if not (entry.assigned and entry.vmsa and entry.asid == self.vm.asid):
                raise machine.raise_fault(
                    Fault(FaultKind.VMEXIT_INVALID, spa, Who.HOST, 0,
                          "VMRUN: page is not this guest's VMSA in the RMP")
                )
        registers = self._load_vmsa(spa)
        if not registers["efer"] & EFER_SVME:
            raise machine.raise_fault(
                Fault(FaultKind.VMEXIT_INVALID, spa, Who.HOST, 0,
                      "VMRUN: VMSA state is invalid (EFER.SVME clear): it was corrupted")
            )
        previous = self._vmpl
        if self._snp:
            machine.rmp.enter_vmsa(spa)
        self.registers = registers
        vmpl = self._vmpl = registers["vmpl"] if self._snp else 0
        if self.vmcb.event_inj is not None:
            self._deliver_event()
        if vmpl != previous:
            code = self.entry_code.get(vmpl)
            if code is not None:
                code()

    def _vmsa_frame(self, spa: int) -> int:
        if spa % PAGE_SIZE:
            raise UsageError(f"VMSA page {spa:#x} is not page-aligned")
        return spa // PAGE_SIZE

    def _save_vmsa(self, spa: int, registers: dict[str, int]) -> None:
        """VMEXIT: the register file, encrypted into the VMSA page (skipped when the page
        still holds exactly these registers)."""
        frame = self._vmsa_frame(spa)
        machine = self.vm.machine
        stored = machine.dram.page(frame)
        seen = self._vmsa_seen.get(spa)
        if seen is not None and seen[1] == registers and stored.tobytes() == seen[0]:
            return
        page = pack_registers_exact(registers)
        if page is None:  # the full save area's path and its errors
            page = Vmsa(registers).to_bytes()
            saved = unpack_registers(page)
        else:  # an exact page unpacks to these registers: a copy, not a second unpack
            saved = dict(registers)
        machine.engine.access_page(self.vm.asid, frame, 0, PAGE_SIZE, page)
        self._vmsa_seen[spa] = (stored.tobytes(), saved)

    def _load_vmsa(self, spa: int) -> dict[str, int]:
        """VMRUN: the register file decrypted from the VMSA page (the registers last written
        or read when the page still holds the same ciphertext)."""
        frame = self._vmsa_frame(spa)
        machine = self.vm.machine
        ciphertext = machine.dram.page(frame).tobytes()
        seen = self._vmsa_seen.get(spa)
        if seen is not None and seen[0] == ciphertext:
            return dict(seen[1])
        page = machine.engine.access_page(self.vm.asid, frame, 0, PAGE_SIZE, None)
        registers = unpack_registers(page)
        self._vmsa_seen[spa] = (ciphertext, dict(registers))
        return registers

    def _deliver_event(self) -> None:
        vector, self.vmcb.event_inj = self.vmcb.event_inj, None
        if vector is None:
            return
        registers = self.live()
        if self.mode.snp and registers["sev_features"] & SevFeatures.RESTRICTED_INJECTION:
            self.vm.machine.faults.append(
                Fault(FaultKind.VMEXIT_INVALID, vector, Who.HOST, 0,
                      "VMRUN: Restricted Injection refuses a host-injected event", self._vmpl,
                      self.vm.asid)
            )
            return
        self.delivered_events.append(vector)

    # -- the guest's view of its CPU ----------------------------------------------------------
    def read(self, gpa: int, size: int) -> bytes:
        if self.registers is None:
            self.live()  # raises: a stopped vCPU makes no accesses
        return self.vm.access(gpa, size, vmpl=self._vmpl)

    def write(self, gpa: int, data: bytes) -> None:
        if self.registers is None:
            self.live()  # raises
        self.vm.access(gpa, len(data), vmpl=self._vmpl, data=data)

    def set_register(self, name: str, value: int) -> None:
        registers = self.live()
        if name not in registers:
            raise UsageError(f"no register {name!r}")
        registers[name] = value

    def register(self, name: str) -> int:
        registers = self.live()
        if name not in registers:
            raise UsageError(f"no register {name!r}")
        return registers[name]

    def ghcb_page(self) -> int:
        """The guest-physical address registered through the GHCB MSR protocol.

        The MSR's reset value 0 means no GHCB was registered, as a hypervisor reads it (a
        VMGEXIT with GHCB GPA 0 is refused, not served from page 0); a non-zero value whose low
        twelve bits are set is an MSR-protocol request, not a page.
        """
        msr = self.ghcb_msr
        if msr == 0 or msr % PAGE_SIZE:
            raise StateError(f"vCPU {self.index} has no GHCB registered")
        return msr
