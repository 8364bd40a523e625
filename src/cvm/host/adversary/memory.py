"""Attacks on guest memory and register state: read, corrupt, replay, remap, alias, tamper.

Each function is one host action with the host's real powers only: DRAM through the machine
(RMP-checked with SNP), the nested page table, the VMCB of unencrypted vCPUs, and the exits it
handles. Whether an attack works is decided by the silicon, never here.
"""

from __future__ import annotations

from cvm.formats.snp.vmsa import Vmsa
from cvm.hardware.fault import Fault, FaultRaised
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import Vcpu, VmExit
from cvm.host.vmm import Guest, Hypervisor


def read_guest_page(host: Hypervisor, guest: Guest, gpa: int) -> bytes:
    """Read the system page behind guest page ``gpa`` as DRAM holds it."""
    return host.machine.host_read(host.spa_of(guest, gpa), PAGE_SIZE)


def write_guest_page(host: Hypervisor, guest: Guest, gpa: int, data: bytes) -> None:
    """Overwrite the system page behind ``gpa`` (raises FaultRaised when the RMP refuses)."""
    host.machine.host_write(host.spa_of(guest, gpa), data)


def remap(host: Hypervisor, guest: Guest, gpa: int, onto_gpa: int) -> None:
    """Point guest page ``gpa`` at the system page of ``onto_gpa`` (nested page table)."""
    guest.vm.map(gpa, host.spa_of(guest, onto_gpa))


def map_foreign_page(host: Hypervisor, attacker: Guest, gpa: int, victim: Guest, at: int) -> None:
    """Map the victim's system page behind ``at`` into the attacker VM at ``gpa``."""
    attacker.vm.map(gpa, host.spa_of(victim, at))


def capture_registers(host: Hypervisor, seen: list[dict[str, int]]) -> None:
    """At every exit, record the guest registers the host can see (the VMCB save area)."""

    def hook(guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        if info.vmcb is not None:
            seen.append(dict(info.vmcb.save))

    host.exit_hooks.append(hook)


def set_register_at_exit(host: Hypervisor, name: str, value: int) -> list[Fault]:
    """At the next exit, set register ``name``: in the VMCB if there is one; otherwise write a
    save area with that value over the vCPU's VMSA page (the host cannot encrypt it).

    Returns a list that receives the fault if the machine refuses the host's write.
    """
    done: list[bool] = []
    faults: list[Fault] = []

    def hook(guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        if done:
            return
        done.append(True)
        if info.vmcb is not None:
            info.vmcb.save[name] = value
        elif vcpu.vmsa_spa is not None:
            forged = Vmsa({name: value, "efer": 1 << 12}).to_bytes()
            try:
                host.machine.host_write(vcpu.vmsa_spa, forged)
            except FaultRaised as refused:
                faults.append(refused.fault)

    host.exit_hooks.append(hook)
    return faults
