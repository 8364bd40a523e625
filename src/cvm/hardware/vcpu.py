"""A virtual CPU: its register file and the world switch between guest and host.

On a VM exit the register file must go somewhere while the host runs:

- ``plain`` and ``sev``: into the VMCB save area, which lives in host memory in the clear. The
  host reads and may change every register; its changes take effect at the next VMRUN.
- ``sev-es`` and ``sev-snp``: into the VMSA, a guest page encrypted with the guest's key (AMD
  APM vol. 2 §15.35.4). The host sees only the exit code and what the guest itself copies into
  the shared GHCB. At VMRUN the hardware decrypts the VMSA; a VMSA the host corrupted decrypts to
  garbage and VMRUN refuses it (VMEXIT_INVALID). With SNP the VMSA page is a firmware-owned,
  immutable RMP entry the host cannot write at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cvm.errors import StateError, UsageError
from cvm.formats.snp.vmsa import REGISTER_NAMES, Vmsa
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


@dataclass(frozen=True)
class VmExit:
    """What the host is told at an exit. ``vmcb`` is None when the registers are encrypted."""

    vcpu: int
    exit_code: int
    exit_info1: int = 0
    exit_info2: int = 0
    vmcb: Vmcb | None = None


ExitHandler = Callable[["Vcpu", VmExit], None]


class Vcpu:
    """One vCPU of a VM. The live register file exists only while the guest runs."""

    def __init__(self, vm: VirtualMachine, index: int) -> None:
        self.vm = vm
        self.index = index
        self.registers: dict[str, int] | None = reset_registers()
        self.vmcb = Vmcb()
        self.vmsa_spa: int | None = None
        self.ghcb_msr = 0
        self.exit_handler: ExitHandler | None = None
        self.vmpl = 0

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
        if self.mode.snp:
            self.vm.machine.rmp.firmware_assign(spa, self.vm.asid, 0xFFFF_FFFF_F000, vmsa=True)
        self.vmsa_spa = spa

    # -- world switch -------------------------------------------------------------------------
    def live(self) -> dict[str, int]:
        """The live register file; only the running guest has one."""
        if self.registers is None:
            raise StateError(f"vCPU {self.index} is not running: its registers are saved")
        return self.registers

    def vmexit(self, exit_code: int, info1: int = 0, info2: int = 0) -> None:
        """Leave the guest: save the registers, let the host handle the exit, then VMRUN."""
        registers = self.live()
        if self.mode.encrypts_registers:
            if self.vmsa_spa is None:
                raise StateError(f"vCPU {self.index} has no VMSA page")
            vmsa = Vmsa(registers)
            self.vm.machine.engine.write_pages(self.vm.asid, self.vmsa_spa, vmsa.to_bytes())
            info = VmExit(self.index, exit_code, info1, info2, None)
        else:
            self.vmcb = Vmcb(exit_code, info1, info2, dict(registers))
            info = VmExit(self.index, exit_code, info1, info2, self.vmcb)
        self.registers = None  # the host runs now; nothing of the guest stays in the CPU
        if self.exit_handler is not None:
            self.exit_handler(self, info)
        self.vmrun()

    def vmrun(self) -> None:
        """Enter the guest: load the registers from the VMCB or decrypt them from the VMSA."""
        if self.registers is not None:
            raise StateError(f"vCPU {self.index} is already running")
        if not self.mode.encrypts_registers:
            self.registers = dict(self.vmcb.save)
            return
        assert self.vmsa_spa is not None
        machine = self.vm.machine
        if self.mode.snp:
            entry = machine.rmp.entry(self.vmsa_spa)
            if not (entry.assigned and entry.vmsa and entry.asid == self.vm.asid):
                raise machine.raise_fault(
                    Fault(FaultKind.VMEXIT_INVALID, self.vmsa_spa, Who.HOST, 0,
                          "VMRUN: page is not this guest's VMSA in the RMP")
                )
        plain = machine.engine.read_pages(self.vm.asid, self.vmsa_spa, 1)
        vmsa = Vmsa.from_bytes(plain)
        if not vmsa.registers["efer"] & EFER_SVME:
            raise machine.raise_fault(
                Fault(FaultKind.VMEXIT_INVALID, self.vmsa_spa, Who.HOST, 0,
                      "VMRUN: VMSA state is invalid (EFER.SVME clear): it was corrupted")
            )
        self.registers = dict(vmsa.registers)

    # -- the guest's view of its CPU ----------------------------------------------------------
    def read(self, gpa: int, size: int) -> bytes:
        self.live()
        return self.vm.access(gpa, size, vmpl=self.vmpl)

    def write(self, gpa: int, data: bytes) -> None:
        self.live()
        self.vm.access(gpa, len(data), vmpl=self.vmpl, data=data)

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
        """The guest-physical address registered through the GHCB MSR protocol."""
        if self.ghcb_msr % PAGE_SIZE:
            raise StateError(f"vCPU {self.index} has no GHCB registered")
        return self.ghcb_msr
