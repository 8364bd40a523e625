"""Attacks on guest register state at exits: read it, change it, replay it, read the VMSA.

In ``plain`` and ``sev`` the register file goes to the VMCB save area, in the host's clear
memory; in ``sev-es`` and ``sev-snp`` to the VMSA, encrypted with the guest's key — and with SNP
an immutable, firmware-owned RMP page the host cannot write at all (APM vol. 2 §15.35, §15.36).
"""

from __future__ import annotations

from cvm.formats.snp.vmsa import Vmsa
from cvm.hardware.fault import Fault, FaultRaised
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import Vcpu, VmExit
from cvm.host.adversary.lab import Lab
from cvm.host.adversary.memory import mechanism_of
from cvm.host.adversary.threat import (
    Family,
    Mechanism,
    Observed,
    Verdict,
    blocked,
    by,
    declare,
    na,
    not_applicable,
    ok,
    succeeded,
)
from cvm.host.vmm import Guest, Hypervisor

VMSA = by(Mechanism.ENCRYPTED_VMSA)
RMP = by(Mechanism.RMP)
VMCB = ok("the registers are saved in the host's VMCB, in the clear")
NO_VMSA_INTEGRITY = ok("the VMSA is encrypted, but nothing checks its freshness")
NO_VMSA = na("no VMSA: the registers go to the VMCB")
FORGED_RIP = 0xBAD0_0000


def capture_registers(host: Hypervisor, seen: list[dict[str, int]]) -> None:
    """At every exit, record the guest registers the host can see (the VMCB save area)."""

    def hook(guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        if info.vmcb is not None:
            seen.append(dict(info.vmcb.save))

    host.exit_hooks.append(hook)


def at_next_exit(host: Hypervisor, action: object) -> list[Fault]:
    """Run ``action(guest, vcpu, info)`` at the next exit only; the faults it caused."""
    faults: list[Fault] = []
    done: list[bool] = []

    def hook(guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        if done:
            return
        done.append(True)
        try:
            action(guest, vcpu, info)  # type: ignore[operator]
        except FaultRaised as refused:
            faults.append(refused.fault)

    host.exit_hooks.append(hook)
    return faults


def set_register_at_exit(host: Hypervisor, name: str, value: int) -> tuple[list[Fault],
                                                                         list[bool]]:
    """At the next exit, set register ``name``: in the VMCB if there is one; otherwise write a
    save area with that value over the vCPU's VMSA page (the host cannot encrypt it). The
    faults the write caused, and whether the forged state was in place when VMRUN took it
    (the VMSA page read back as the forged save area)."""
    placed: list[bool] = []

    def tamper(guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        if info.vmcb is not None:
            info.vmcb.save[name] = value
            placed.append(True)
        elif vcpu.vmsa_spa is not None:
            forged = Vmsa({name: value, "efer": 1 << 12}).to_bytes()
            host.machine.host_write(vcpu.vmsa_spa, forged)
            placed.append(host.machine.host_read(vcpu.vmsa_spa, len(forged)) == forged)

    return at_next_exit(host, tamper), placed


def read_registers(lab: Lab) -> Observed:
    seen: list[dict[str, int]] = []
    capture_registers(lab.host, seen)
    value = int.from_bytes(lab.secret[:8], "little")
    lab.guest_set_register("rbx", value)
    lab.guest_exit()
    if any(registers.get("rbx") == value for registers in seen):
        return succeeded("the host read the secret in RBX from the VMCB")
    return blocked(Mechanism.ENCRYPTED_VMSA, "no VMCB save area: the registers are in the VMSA")


def change_rip(lab: Lab) -> Observed:
    faults, placed = set_register_at_exit(lab.host, "rip", FORGED_RIP)
    try:
        lab.guest_exit()
    except FaultRaised as refused:
        return blocked(Mechanism.ENCRYPTED_VMSA, f"VMRUN refused the forged state: {refused}")
    if faults:
        return blocked(mechanism_of(faults[0]), f"host write refused: {faults[0]}")
    if lab.guest_register("rip") == FORGED_RIP:
        return succeeded("the guest resumed at the host's RIP")
    if placed != [True]:  # matches no expectation: the matrix shows it as broken
        return Observed(Verdict.BLOCKED, "the forged state never reached the save area")
    return blocked(Mechanism.ENCRYPTED_VMSA, "the forged RIP did not take effect")


def replay_registers(lab: Lab) -> Observed:
    old, new = 0x0123_4567_89AB_CDEF, 0x0FED_CBA9_8765_4321
    saved: list[bytes | dict[str, int]] = []
    placed: list[bool] = []  # the old VMSA page back in place before VMRUN

    def snapshot(guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        if info.vmcb is not None:
            saved.append(dict(info.vmcb.save))
        elif vcpu.vmsa_spa is not None:
            saved.append(lab.host.machine.host_read(vcpu.vmsa_spa, PAGE_SIZE))

    def restore(guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        state = saved[0]
        if info.vmcb is not None and isinstance(state, dict):
            info.vmcb.save.clear()
            info.vmcb.save.update(state)
        elif vcpu.vmsa_spa is not None and isinstance(state, bytes):
            lab.host.machine.host_write(vcpu.vmsa_spa, state)
            placed.append(lab.host.machine.host_read(vcpu.vmsa_spa, PAGE_SIZE) == state)

    lab.guest_set_register("r12", old)
    at_next_exit(lab.host, snapshot)
    lab.guest_exit()
    lab.guest_set_register("r12", new)
    faults = at_next_exit(lab.host, restore)
    try:
        lab.guest_exit()
    except FaultRaised as refused:
        return blocked(mechanism_of(refused.fault), f"VMRUN refused: {refused}")
    if faults:
        return blocked(mechanism_of(faults[0]), f"host write refused: {faults[0]}")
    if lab.guest_register("r12") == old:
        return succeeded("the guest resumed with its old register state")
    if placed == [False]:  # matches no expectation: the matrix shows it as broken
        return Observed(Verdict.BLOCKED, "the old state never reached the VMSA page")
    return blocked(Mechanism.ENCRYPTED_VMSA, "the old state did not come back")


def read_vmsa(lab: Lab) -> Observed:
    vcpu = lab.guest.vcpus[0]
    if vcpu.vmsa_spa is None:
        return not_applicable("this vCPU has no VMSA: its registers go to the VMCB")
    value = lab.secret[:8]
    lab.guest_set_register("r13", int.from_bytes(value, "little"))
    lab.guest_exit()
    page = lab.host.machine.host_read(vcpu.vmsa_spa, PAGE_SIZE)
    if value in page:
        return succeeded("the VMSA holds the register in the clear")
    return blocked(Mechanism.ENCRYPTED_VMSA, "the VMSA page is ciphertext")


# -- the declarations: the expected outcome in plain, sev, sev-es and sev-snp -------------------
ATTACKS = (
    declare(
        "read-registers", Family.REGISTERS, "read the guest's registers at an exit",
        (VMCB, VMCB, VMSA, VMSA),
        read_registers,
    ),
    declare(
        "change-rip", Family.REGISTERS, "change the guest's RIP at an exit",
        (VMCB, VMCB, VMSA, RMP),
        change_rip,
    ),
    declare(
        "replay-registers", Family.REGISTERS,
        "save the guest's register state at one exit and restore it at a later one",
        (VMCB, VMCB, NO_VMSA_INTEGRITY, RMP),
        replay_registers,
    ),
    declare(
        "read-vmsa", Family.REGISTERS, "read the VMSA page the registers are saved in",
        (NO_VMSA, NO_VMSA, VMSA, VMSA),
        read_vmsa,
    ),
)
