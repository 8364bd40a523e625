"""Attacks on guest memory: read, corrupt, replay, remap, alias, substitute, dump, share, debug.

Each attack uses the host's real powers only: DRAM through the machine (RMP-checked with SNP),
the nested page table, RMPUPDATE, the PSP's commands. Whether it works is decided by the
silicon; the verdict is read off what the guest then reads, or the fault that stopped it.
"""

from __future__ import annotations

from cvm.errors import StatusError
from cvm.hardware.fault import PFERR_RMP, Fault, FaultKind, FaultRaised
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.host.adversary.canary import CanaryScan
from cvm.host.adversary.lab import Lab
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

ENCRYPTED = by(Mechanism.MEMORY_ENCRYPTION)
RMP = by(Mechanism.RMP)
CLEAR = ok("no memory encryption: DRAM holds the guest's plaintext")
UNCHECKED = ok("no integrity: nothing checks who writes or maps a guest page")
NO_RMP = na("no RMP guards the guest's pages without SEV-SNP")
NO_SNP = na("no SNP guest context in the PSP")


# -- the host's primitives ----------------------------------------------------------------------
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


def remapped(lab: Lab) -> bool:
    """Does the secret page now translate to the spare page's system page? (A remap that
    never took is no protection: the attack then names no mechanism.)"""
    return lab.host.spa_of(lab.guest, lab.secret_gpa) == lab.host.spa_of(lab.guest, lab.spare_gpa)


def mechanism_of(fault: Fault) -> Mechanism:
    """Which protection a fault is: the RMP's checks, or a page the guest never validated."""
    if fault.kind is FaultKind.VC:
        return Mechanism.PVALIDATE
    if fault.error_code & PFERR_RMP or fault.kind is FaultKind.NPF:
        return Mechanism.RMP
    return Mechanism.ENCRYPTED_VMSA


def _faulted(refused: FaultRaised, what: str) -> Observed:
    return blocked(mechanism_of(refused.fault), f"{what}: {refused.fault}")


def _pattern(lab: Lab, salt: int) -> bytes:
    return bytes(b ^ salt for b in lab.secret) * (PAGE_SIZE // len(lab.secret))


# -- the attacks --------------------------------------------------------------------------------
def read_page(lab: Lab) -> Observed:
    dram = read_guest_page(lab.host, lab.guest, lab.secret_gpa)
    if lab.secret in dram:
        return succeeded("the host reads the guest's secret in the clear")
    return blocked(Mechanism.MEMORY_ENCRYPTION, "the host reads ciphertext")


def corrupt_page(lab: Lab) -> Observed:
    page = _pattern(lab, 0x11)
    lab.guest_write(lab.spare_gpa, page)
    junk = bytes(range(256)) * (PAGE_SIZE // 256)
    try:
        write_guest_page(lab.host, lab.guest, lab.spare_gpa, junk)
    except FaultRaised as refused:
        intact = lab.guest_read(lab.spare_gpa, PAGE_SIZE) == page
        return _faulted(refused, "host write refused, guest data " + ("intact" if intact
                                                                         else "LOST"))
    got = lab.guest_read(lab.spare_gpa, PAGE_SIZE)
    if got == page:  # nothing stopped the write: it never landed (matches no expectation)
        return Observed(Verdict.BLOCKED, "the guest's data survived")
    return succeeded("guest reads junk" if got == junk else "guest reads garbage")


def replay_page(lab: Lab) -> Observed:
    old, new = _pattern(lab, 0x22), _pattern(lab, 0x33)
    lab.guest_write(lab.spare_gpa, old)
    snapshot = read_guest_page(lab.host, lab.guest, lab.spare_gpa)
    lab.guest_write(lab.spare_gpa, new)
    try:
        write_guest_page(lab.host, lab.guest, lab.spare_gpa, snapshot)
    except FaultRaised as refused:
        return _faulted(refused, "host write refused")
    if read_guest_page(lab.host, lab.guest, lab.spare_gpa) != snapshot:
        return Observed(Verdict.BLOCKED, "the old ciphertext never reached the page")
    got = lab.guest_read(lab.spare_gpa, PAGE_SIZE)
    if got == old:
        return succeeded("the guest reads its old data again")
    return blocked(Mechanism.MEMORY_ENCRYPTION, "the replayed page does not decrypt")


def remap_page(lab: Lab) -> Observed:
    other = _pattern(lab, 0x44)
    lab.guest_write(lab.spare_gpa, other)
    remap(lab.host, lab.guest, lab.secret_gpa, lab.spare_gpa)
    if not remapped(lab):
        return Observed(Verdict.BLOCKED, "the nested page table was not changed")
    try:
        got = lab.guest_read(lab.secret_gpa, PAGE_SIZE)
    except FaultRaised as refused:
        return _faulted(refused, "guest access")
    if got == other:
        return succeeded("the guest reads the other page")
    return blocked(Mechanism.MEMORY_ENCRYPTION, "the guest reads garbage")


def alias_pages(lab: Lab) -> Observed:
    remap(lab.host, lab.guest, lab.secret_gpa, lab.spare_gpa)
    if not remapped(lab):
        return Observed(Verdict.BLOCKED, "the nested page table was not changed")
    marker = _pattern(lab, 0x55)
    try:
        lab.guest_write(lab.secret_gpa, marker)
        got = lab.guest_read(lab.spare_gpa, PAGE_SIZE)
    except FaultRaised as refused:
        return _faulted(refused, "guest access")
    if got == marker:
        return succeeded("a write to one page shows in the other")
    return blocked(Mechanism.MEMORY_ENCRYPTION, "the pages are not aliased")


def substitute_page(lab: Lab) -> Observed:
    page = _pattern(lab, 0x66)
    lab.guest_write(lab.spare_gpa, page)
    fresh = lab.host.allocate_page()
    if lab.mode.snp:
        status = lab.host.machine.rmp.rmpupdate(
            fresh, assigned=True, asid=lab.guest.vm.asid, gpa=lab.spare_gpa
        )
        if status:
            return not_applicable(f"RMPUPDATE refused: {status.name}")
    lab.guest.vm.map(lab.spare_gpa, fresh)
    try:
        got = lab.guest_read(lab.spare_gpa, PAGE_SIZE)
    except FaultRaised as refused:
        return _faulted(refused, "guest access")
    if got != page:
        return succeeded("the guest's page was silently replaced")
    # Nothing stopped the swap: it never took (matches no expectation).
    return Observed(Verdict.BLOCKED, "the guest still reads its page")


def unassign_page(lab: Lab) -> Observed:
    if not lab.host.machine.snp_enabled or not lab.mode.snp:
        return not_applicable("no RMP entry guards this guest's pages")
    spa = lab.host.spa_of(lab.guest, lab.secret_gpa)
    lab.host.machine.rmp.rmpupdate(spa, assigned=False)
    try:
        got = lab.guest_read(lab.secret_gpa, len(lab.secret))
    except FaultRaised as refused:
        return _faulted(refused, "guest access")
    return succeeded(f"the guest read {'its secret' if got == lab.secret else 'garbage'}")


def cold_boot_dump(lab: Lab) -> Observed:
    scan = CanaryScan({"workload secret": lab.secret})
    leaks = scan.scan_dram(lab.host.machine.dram)
    if leaks:
        return succeeded(f"the dump holds the secret: {leaks[0]}")
    return blocked(Mechanism.MEMORY_ENCRYPTION, "no 8-byte run of the secret in any DRAM chip")


def foreign_vm_reads(lab: Lab) -> Observed:
    mode = lab.mode
    intruder = lab.host.create_vm(mode, 4 * PAGE_SIZE)
    try:
        cpu = intruder.vcpus[0]
        map_foreign_page(lab.host, intruder, 0, lab.guest, lab.secret_gpa)
        if mode.encrypts_memory:
            intruder.vm.set_private(0, True)
        try:
            got = cpu.read(0, PAGE_SIZE)
        except FaultRaised as refused:
            return _faulted(refused, "the other VM's access")
        if lab.secret in got:
            return succeeded("the other VM reads the secret")
        # The access went through: what kept the secret is the other VM's key, whatever the
        # mode (under SEV-SNP the RMP should have refused it, and the cell breaks).
        return blocked(Mechanism.MEMORY_ENCRYPTION, "the other VM reads garbage (its own key)")
    finally:
        lab.host.destroy_vm(intruder)


def debug_decrypt(lab: Lab) -> Observed:
    if lab.psp is None or lab.guest.handle is None or not lab.mode.snp:
        return not_applicable("no SNP guest context in the PSP for this VM")
    spa = lab.host.spa_of(lab.guest, lab.secret_gpa)
    try:
        page = lab.psp.snp_dbg_decrypt(lab.guest.handle, spa)
    except StatusError as refused:
        return blocked(Mechanism.GUEST_POLICY, str(refused))
    if lab.secret in page:
        return succeeded("the PSP decrypted the guest's secret for the host")
    return blocked(Mechanism.MEMORY_ENCRYPTION, "the PSP returned another page")


# -- the declarations: the expected outcome in plain, sev, sev-es and sev-snp -------------------
ATTACKS = (
    declare(
        "read-page", Family.MEMORY, "read a private guest page from DRAM",
        (CLEAR, ENCRYPTED, ENCRYPTED, ENCRYPTED),
        read_page,
    ),
    declare(
        "corrupt-page", Family.MEMORY, "write junk over a private guest page",
        (CLEAR, UNCHECKED, UNCHECKED, RMP),
        corrupt_page,
    ),
    declare(
        "replay-page", Family.MEMORY, "write back an old ciphertext of a guest page",
        (CLEAR, UNCHECKED, UNCHECKED, RMP),
        replay_page,
    ),
    declare(
        "remap-page", Family.MEMORY, "point a guest page at another guest page's system page",
        (CLEAR, UNCHECKED, UNCHECKED, RMP),
        remap_page,
    ),
    declare(
        "alias-pages", Family.MEMORY, "map two guest pages to one system page",
        (CLEAR, UNCHECKED, UNCHECKED, RMP),
        alias_pages,
    ),
    declare(
        "substitute-page", Family.MEMORY,
        "swap a fresh page of the host's in behind a guest page (RMP-assigned, unvalidated)",
        (CLEAR, UNCHECKED, UNCHECKED, by(Mechanism.PVALIDATE)),
        substitute_page,
    ),
    declare(
        "unassign-page", Family.MEMORY,
        "RMPUPDATE a private guest page back to the host behind the guest's back",
        (NO_RMP, NO_RMP, NO_RMP, RMP),
        unassign_page,
    ),
    declare(
        "cold-boot-dump", Family.MEMORY, "dump every DRAM chip after the VM ran (cold boot)",
        (CLEAR, ENCRYPTED, ENCRYPTED, ENCRYPTED),
        cold_boot_dump,
    ),
    declare(
        "foreign-vm-reads", Family.MEMORY, "map the guest's page into another VM and read it",
        (CLEAR, ENCRYPTED, ENCRYPTED, RMP),
        foreign_vm_reads,
    ),
    declare(
        "debug-decrypt", Family.MEMORY, "ask the PSP to decrypt a guest page (SNP_DBG_DECRYPT)",
        (NO_SNP, NO_SNP, NO_SNP, by(Mechanism.GUEST_POLICY)),
        debug_decrypt,
    ),
)
