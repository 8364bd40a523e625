"""One host, one VM per mode, one secret: what the guest and the host read of the same page."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cvm.amd.kds import CHIP_ID_SIZE, CHIP_SECRET_SIZE, ChipFuses
from cvm.errors import UsageError
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.vm import Mode
from cvm.host.adversary.memory import read_guest_page
from cvm.host.vmm import Hypervisor

SECRET_GPA = 0x4000
GUEST_PAGES = 16
MIB = 1 << 20


def platform(dram_bytes: int, random_bytes: Callable[[int], bytes]) -> Hypervisor:
    """A host on a machine whose PSP launches every encrypted guest (LAUNCH_START/UPDATE/FINISH)."""
    machine = Machine(dram_bytes, random_bytes=random_bytes)
    chip = random_bytes(CHIP_SECRET_SIZE)
    fuses = ChipFuses("Milan", random_bytes(CHIP_ID_SIZE), chip)
    return Hypervisor(machine, SecureProcessor(machine, fuses))


@dataclass(frozen=True)
class PageViews:
    """The secret page as the guest reads it and as the host reads it, for one mode."""

    mode: Mode
    asid: int
    system_address: int
    guest_view: bytes
    host_view: bytes

    @property
    def host_sees_plaintext(self) -> bool:
        return reads_alike(self)


def reads_alike(views: PageViews) -> bool:
    """Does the host read the secret page as the guest does (no encryption between them)?"""
    return views.guest_view == views.host_view


def secret_page(secret: bytes) -> bytes:
    """A page a person can recognise in a picture: a grey ramp with a ring, then the secret."""
    if len(secret) > PAGE_SIZE:
        raise UsageError(f"the secret is {len(secret)} bytes; a page holds {PAGE_SIZE}")
    pixels = bytearray()
    for y in range(64):
        for x in range(64):
            ring = abs(((x - 32) ** 2 + (y - 32) ** 2) ** 0.5 - 22) < 4
            pixels.append(255 if ring else (x + y) * 2)
    pixels[PAGE_SIZE - len(secret) :] = secret
    return bytes(pixels)


def launch_all(
    secret: bytes, random_bytes: Callable[[int], bytes] = os.urandom
) -> list[PageViews]:
    """Launch a VM of each mode on one host; each guest stores the page in private memory."""
    host = platform(256 * MIB, random_bytes)
    page = secret_page(secret)
    views = []
    for mode in (Mode.PLAIN, Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP):
        guest = host.create_vm(mode, GUEST_PAGES * PAGE_SIZE)
        kernel = SevGuest(guest.vcpus[0])
        kernel.accept(0, GUEST_PAGES * PAGE_SIZE)
        kernel.cpu.write(SECRET_GPA, page)
        views.append(
            PageViews(
                mode,
                guest.vm.asid,
                host.spa_of(guest, SECRET_GPA),
                kernel.cpu.read(SECRET_GPA, PAGE_SIZE),
                read_guest_page(host, guest, SECRET_GPA),
            )
        )
    assert len(page) == PAGE_SIZE
    return views
