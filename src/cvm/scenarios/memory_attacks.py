"""The memory half of the SEV-SNP threat table, run live: one guest, one host attack, per mode.

Each attack boots a fresh VM on a fresh host, lets the guest store a secret the way a guest
does (through its vCPU, in private pages), lets the host attack with its real powers
(:mod:`cvm.host.adversary.memory`) and reports what the guest and the host observed. The
expected outcomes are the rows of the SEV-SNP whitepaper's Table 1 (notes/snp.md §6).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cvm.amd.kds import CHIP_ID_SIZE, CHIP_SECRET_SIZE, ChipFuses
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.fault import Fault, FaultRaised
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.vm import Mode
from cvm.host.adversary import memory as attack
from cvm.host.adversary import registers
from cvm.host.vmm import Guest, Hypervisor

GUEST_PAGES = 16
SECRET_GPA = 0x2000
OTHER_GPA = 0x5000
GHCB_GPA = (GUEST_PAGES - 1) * PAGE_SIZE
MODES = (Mode.PLAIN, Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP)
MIB = 1 << 20


@dataclass(frozen=True)
class Outcome:
    """What one attack did in one mode."""

    attack: str
    mode: Mode
    observed: str
    secret_visible_to_host: bool
    fault: Fault | None = None


@dataclass
class Scene:
    """A freshly booted guest on a fresh host, and the secret it holds."""

    host: Hypervisor
    guest: Guest
    kernel: SevGuest
    secret: bytes

    def host_sees_secret(self) -> bool:
        """Does the secret appear in DRAM, or in a register the host can read?"""
        machine = self.host.machine
        for spa in self.guest.frames + [v.vmsa_spa for v in self.guest.vcpus if v.vmsa_spa]:
            if self.secret[:16] in machine.host_read(spa, PAGE_SIZE):
                return True
        value = int.from_bytes(self.secret[:8], "little")
        return any(value in v.vmcb.save.values() for v in self.guest.vcpus)


def platform(dram_bytes: int, random_bytes: Callable[[int], bytes]) -> Hypervisor:
    """A host on a machine whose PSP launches every encrypted guest (LAUNCH_START/UPDATE/FINISH)."""
    machine = Machine(dram_bytes, random_bytes=random_bytes)
    chip = random_bytes(CHIP_SECRET_SIZE)
    fuses = ChipFuses("Milan", random_bytes(CHIP_ID_SIZE), chip)
    return Hypervisor(machine, SecureProcessor(machine, fuses))


def boot(mode: Mode, random_bytes: Callable[[int], bytes] = os.urandom) -> Scene:
    """A host with one guest of ``mode`` that accepted its memory and set up its GHCB."""
    host = platform(64 * MIB, random_bytes)
    guest = host.create_vm(mode, GUEST_PAGES * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, GUEST_PAGES * PAGE_SIZE)
    if mode.encrypts_registers:
        kernel.setup_ghcb(GHCB_GPA)
    return Scene(host, guest, kernel, random_bytes(32))


def _read_private_page(scene: Scene) -> tuple[str, Fault | None]:
    scene.kernel.cpu.write(SECRET_GPA, scene.secret)
    dram = attack.read_guest_page(scene.host, scene.guest, SECRET_GPA)
    return ("plaintext" if scene.secret in dram else "ciphertext"), None


def _read_registers(scene: Scene) -> tuple[str, Fault | None]:
    seen: list[dict[str, int]] = []
    registers.capture_registers(scene.host, seen)
    value = int.from_bytes(scene.secret[:8], "little")
    scene.kernel.cpu.set_register("rax", value)
    scene.kernel.halt()
    return ("yes" if any(r.get("rax") == value for r in seen) else "no"), None


def _change_register(scene: Scene) -> tuple[str, Fault | None]:
    target = 0xBAD0_0000
    faults = registers.set_register_at_exit(scene.host, "rip", target)
    try:
        scene.kernel.halt()
    except FaultRaised as refused:
        return "impossible", refused.fault
    taken = scene.kernel.cpu.register("rip") == target
    return ("takes effect" if taken else "impossible"), (faults[0] if faults else None)


def _write_junk(scene: Scene) -> tuple[str, Fault | None]:
    page = scene.secret * (PAGE_SIZE // len(scene.secret))
    scene.kernel.cpu.write(SECRET_GPA, page)
    junk = bytes(range(256)) * (PAGE_SIZE // 256)
    try:
        attack.write_guest_page(scene.host, scene.guest, SECRET_GPA, junk)
    except FaultRaised as refused:
        intact = scene.kernel.cpu.read(SECRET_GPA, PAGE_SIZE) == page
        return ("host write faults, guest data intact" if intact else "data lost"), refused.fault
    got = scene.kernel.cpu.read(SECRET_GPA, PAGE_SIZE)
    return ("guest reads junk" if got == junk else "guest reads garbage"), None


def _replay(scene: Scene) -> tuple[str, Fault | None]:
    old, new = scene.secret, bytes(b ^ 0xFF for b in scene.secret)
    scene.kernel.cpu.write(SECRET_GPA, old)
    snapshot = attack.read_guest_page(scene.host, scene.guest, SECRET_GPA)
    scene.kernel.cpu.write(SECRET_GPA, new)
    try:
        attack.write_guest_page(scene.host, scene.guest, SECRET_GPA, snapshot)
    except FaultRaised as refused:
        return "host write faults", refused.fault
    got = scene.kernel.cpu.read(SECRET_GPA, len(old))
    return ("guest reads old data" if got == old else "guest reads garbage"), None


def _remap(scene: Scene) -> tuple[str, Fault | None]:
    other = bytes(b ^ 0x5A for b in scene.secret)
    scene.kernel.cpu.write(SECRET_GPA, scene.secret)
    scene.kernel.cpu.write(OTHER_GPA, other)
    attack.remap(scene.host, scene.guest, SECRET_GPA, OTHER_GPA)
    try:
        got = scene.kernel.cpu.read(SECRET_GPA, len(other))
    except FaultRaised as refused:
        return "guest access faults (#NPF)", refused.fault
    return ("guest reads the other page" if got == other else "guest reads garbage"), None


def _alias(scene: Scene) -> tuple[str, Fault | None]:
    scene.kernel.cpu.write(OTHER_GPA, scene.secret)
    attack.remap(scene.host, scene.guest, SECRET_GPA, OTHER_GPA)
    marker = bytes(b ^ 0xA5 for b in scene.secret)
    try:
        scene.kernel.cpu.write(SECRET_GPA, marker)
        got = scene.kernel.cpu.read(OTHER_GPA, len(marker))
    except FaultRaised as refused:
        return "guest access faults (#NPF)", refused.fault
    return ("aliased" if got == marker else "not aliased"), None


def _other_vm_reads(scene: Scene) -> tuple[str, Fault | None]:
    scene.kernel.cpu.write(SECRET_GPA, scene.secret)
    mode = Mode.PLAIN if scene.guest.mode is Mode.PLAIN else Mode.SEV
    intruder = scene.host.create_vm(mode, 4 * PAGE_SIZE)
    intruder_kernel = SevGuest(intruder.vcpus[0])
    intruder_kernel.accept(0, PAGE_SIZE)
    attack.map_foreign_page(scene.host, intruder, 0, scene.guest, SECRET_GPA)
    try:
        got = intruder_kernel.cpu.read(0, len(scene.secret))
    except FaultRaised as refused:
        return "access faults", refused.fault
    return ("plaintext" if got == scene.secret else "garbage"), None


ATTACKS: dict[str, tuple[str, Callable[[Scene], tuple[str, Fault | None]]]] = {
    "read-memory": ("read a private guest page", _read_private_page),
    "read-registers": ("read register state at an exit", _read_registers),
    "change-register": ("change a register at an exit (RIP)", _change_register),
    "write-junk": ("write junk to a private page", _write_junk),
    "replay": ("replay an old ciphertext of a page", _replay),
    "remap": ("remap one guest page onto another's system page", _remap),
    "alias": ("map two guest pages to one system page", _alias),
    "other-vm": ("another VM reads the page", _other_vm_reads),
}

EXPECTED: dict[str, tuple[str, str, str, str]] = {
    "read-memory": ("plaintext", "ciphertext", "ciphertext", "ciphertext"),
    "read-registers": ("yes", "yes", "no", "no"),
    "change-register": ("takes effect", "takes effect", "impossible", "impossible"),
    "write-junk": (
        "guest reads junk", "guest reads garbage", "guest reads garbage",
        "host write faults, guest data intact",
    ),
    "replay": ("guest reads old data", "guest reads old data", "guest reads old data",
               "host write faults"),
    "remap": ("guest reads the other page", "guest reads the other page",
              "guest reads the other page", "guest access faults (#NPF)"),
    "alias": ("aliased", "aliased", "aliased", "guest access faults (#NPF)"),
    "other-vm": ("plaintext", "garbage", "garbage", "garbage"),
}


def run(name: str, mode: Mode, random_bytes: Callable[[int], bytes] = os.urandom) -> Outcome:
    """Run attack ``name`` against a fresh guest of ``mode``."""
    scene = boot(mode, random_bytes)
    observed, fault = ATTACKS[name][1](scene)
    return Outcome(name, mode, observed, scene.host_sees_secret(), fault)


def expected(name: str, mode: Mode) -> str:
    return EXPECTED[name][MODES.index(mode)]
