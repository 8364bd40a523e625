"""The attacks on the running VM's memory, registers and CPU interface, one cell at a time on
a freshly booted VM: each outcome as expected, and — because an attack that silently stops
acting would read as "blocked" in the protected modes — the proof that it acted: the bytes the
host wrote or read, the register the guest resumed with, the fault or refusal that stopped it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cvm.formats.snp.vmsa import Vmsa
from cvm.hardware.fault import PFERR_RMP, Fault, FaultKind, FaultRaised, Who
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.engine import MemoryEncryptionEngine
from cvm.hardware.memory.rmp import Rmp
from cvm.hardware.vcpu import Vcpu
from cvm.hardware.vm import Mode, VirtualMachine
from cvm.host.adversary import cpu, memory, registers
from cvm.host.adversary.canary import CanaryScan
from cvm.host.adversary.catalog import by_name
from cvm.host.adversary.memory import debug_decrypt, mechanism_of, read_guest_page
from cvm.host.adversary.registers import FORGED_RIP, at_next_exit
from cvm.host.adversary.threat import MODES, Attack, Mechanism, Observed, Verdict
from cvm.scenarios.boot_lab import BootLab

RUNNING = [*memory.ATTACKS, *registers.ATTACKS, *cpu.ATTACKS]
Labs = Callable[[Mode], BootLab]




def _pattern(lab: BootLab, salt: int) -> bytes:
    return bytes(b ^ salt for b in lab.secret) * (PAGE_SIZE // len(lab.secret))


def _perform(lab: BootLab, name: str) -> Observed:
    attack = by_name(name)
    observed = attack.perform(lab)
    expected = attack.expected(lab.mode)
    assert observed.matches(expected), (name, lab.mode.value, str(observed), observed.detail)
    return observed


# What each cell reports (``cvm attack run`` and the matrix print it): the same in every mode
# unless the mode is named; ``{fault}`` is the fault the machine logged.
DETAILS = {
    "read-page": "the host reads the guest's secret in the clear",
    "read-page/encrypted": "the host reads ciphertext",
    "corrupt-page": "guest reads junk",
    "corrupt-page/encrypted": "guest reads garbage",
    "corrupt-page/sev-snp": "host write refused, guest data intact: {fault}",
    "replay-page": "the guest reads its old data again",
    "replay-page/sev-snp": "host write refused: {fault}",
    "remap-page": "the guest reads the other page",
    "remap-page/sev-snp": "guest access: {fault}",
    "alias-pages": "a write to one page shows in the other",
    "alias-pages/sev-snp": "guest access: {fault}",
    "substitute-page": "the guest's page was silently replaced",
    "substitute-page/sev-snp": "guest access: {fault}",
    "unassign-page": "no RMP entry guards this guest's pages",
    "unassign-page/sev-snp": "guest access: {fault}",
    "cold-boot-dump": "the dump holds the secret: workload secret[",
    "cold-boot-dump/encrypted": "no 8-byte run of the secret in any DRAM chip",
    "foreign-vm-reads": "the other VM reads the secret",
    "foreign-vm-reads/encrypted": "the other VM reads garbage (its own key)",
    "foreign-vm-reads/sev-snp": "the other VM's access: {fault}",
    "debug-decrypt": "no SNP guest context in the PSP for this VM",
    "debug-decrypt/sev-snp": "SNP_DBG_DECRYPT failed with POLICY_FAILURE (0x7): the guest "
                             "policy forbids debugging",
    "read-registers": "the host read the secret in RBX from the VMCB",
    "read-registers/sev-es": "no VMCB save area: the registers are in the VMSA",
    "read-registers/sev-snp": "no VMCB save area: the registers are in the VMSA",
    "change-rip": "the guest resumed at the host's RIP",
    "change-rip/sev-es": "the forged RIP did not take effect",
    "change-rip/sev-snp": "host write refused: {fault}",
    "replay-registers": "the guest resumed with its old register state",
    "replay-registers/sev-snp": "host write refused: {fault}",
    "read-vmsa": "this vCPU has no VMSA: its registers go to the VMCB",
    "read-vmsa/sev-es": "the VMSA page is ciphertext",
    "read-vmsa/sev-snp": "the VMSA page is ciphertext",
    "lie-cpuid": "the guest believes the C-bit is bit 47",
    "lie-cpuid/sev-snp": "the guest's CPUID page says bit 51 (the silicon's 51): the PSP "
                         "corrected the host's table",
    "inject-masked-interrupt": "vector 0x20 was delivered with interrupts masked",
    "inject-masked-interrupt/sev-snp": "{fault}",
}


def _detail(name: str, mode: Mode) -> str:
    for key in (f"{name}/{mode.value}", f"{name}/encrypted" if mode is not Mode.PLAIN else ""):
        if key in DETAILS:
            return DETAILS[key]
    return DETAILS[name]


@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
@pytest.mark.parametrize("attack", RUNNING, ids=[a.name for a in RUNNING])
def test_each_attack_as_expected_in_each_mode(attack: Attack, mode: Mode, labs: Labs) -> None:
    lab = labs(mode)
    faults = len(lab.host.machine.faults)
    observed = attack.perform(lab)
    assert observed.matches(attack.expected(mode)), (str(observed), observed.detail)
    detail = _detail(attack.name, mode)
    if "{fault}" in detail:
        assert observed.detail in [detail.format(fault=fault)
                                   for fault in lab.host.machine.faults[faults:]]
    elif detail.endswith("["):
        assert observed.detail.startswith(detail)
    else:
        assert observed.detail == detail


# -- memory -----------------------------------------------------------------------------------
def test_the_secret_fills_whole_pages_of_patterns(labs: Labs) -> None:
    lab = labs(Mode.PLAIN)
    assert len(lab.secret) >= 32 and PAGE_SIZE % len(lab.secret) == 0
    assert read_guest_page(lab.host, lab.guest, lab.secret_gpa) == lab.host.machine.host_read(
        lab.host.spa_of(lab.guest, lab.secret_gpa), PAGE_SIZE)
    assert lab.secret in read_guest_page(lab.host, lab.guest, lab.secret_gpa)


@pytest.mark.parametrize(("kind", "error", "mechanism"), [
    (FaultKind.VC, PFERR_RMP, Mechanism.PVALIDATE),
    (FaultKind.HOST_PF, PFERR_RMP, Mechanism.RMP),
    (FaultKind.NPF, 0, Mechanism.RMP),
    (FaultKind.HOST_PF, 0, Mechanism.ENCRYPTED_VMSA),
    (FaultKind.HOST_PF, PFERR_RMP - 1, Mechanism.ENCRYPTED_VMSA),
])
def test_a_fault_is_read_as_its_mechanism(kind: FaultKind, error: int,
                                         mechanism: Mechanism) -> None:
    assert mechanism_of(Fault(kind, 0x1000, Who.HOST, error, "why")) is mechanism


def test_read_page_reads_the_secret_page_in_the_clear_and_ciphertext_under_sev(
    labs: Labs,
) -> None:
    plain, sev = labs(Mode.PLAIN), labs(Mode.SEV)
    assert _perform(plain, "read-page").verdict is Verdict.SUCCEEDED
    page = read_guest_page(sev.host, sev.guest, sev.secret_gpa)
    assert sev.secret not in page and any(page)
    assert _perform(sev, "read-page").detail == "the host reads ciphertext"


def test_corrupt_page_puts_the_hosts_junk_in_the_guests_page(labs: Labs) -> None:
    plain, sev, snp = labs(Mode.PLAIN), labs(Mode.SEV), labs(Mode.SEV_SNP)
    junk = bytes(range(256)) * (PAGE_SIZE // 256)
    assert _perform(plain, "corrupt-page").detail == "guest reads junk"
    assert plain.guest_read(plain.spare_gpa, PAGE_SIZE) == junk
    assert _perform(sev, "corrupt-page").detail == "guest reads garbage"
    spa = sev.host.spa_of(sev.guest, sev.spare_gpa)
    assert sev.host.machine.host_read(spa, PAGE_SIZE) == junk  # the host's bytes, decrypted
    assert sev.guest_read(sev.spare_gpa, PAGE_SIZE) not in (junk, _pattern(sev, 0x11))
    observed = _perform(snp, "corrupt-page")
    fault = snp.host.machine.faults[-1]
    assert observed.detail == f"host write refused, guest data intact: {fault}"
    assert fault.kind is FaultKind.HOST_PF
    assert fault.address == snp.host.spa_of(snp.guest, snp.spare_gpa)
    assert snp.guest_read(snp.spare_gpa, PAGE_SIZE) == _pattern(snp, 0x11)


def test_replay_page_brings_the_old_data_back(labs: Labs) -> None:
    for mode in (Mode.PLAIN, Mode.SEV, Mode.SEV_ES):
        lab = labs(mode)
        assert _perform(lab, "replay-page").detail == "the guest reads its old data again"
        assert lab.guest_read(lab.spare_gpa, PAGE_SIZE) == _pattern(lab, 0x22)
    snp = labs(Mode.SEV_SNP)
    observed = _perform(snp, "replay-page")
    fault = snp.host.machine.faults[-1]
    assert observed.detail == f"host write refused: {fault}"
    assert fault.address == snp.host.spa_of(snp.guest, snp.spare_gpa)
    assert snp.guest_read(snp.spare_gpa, PAGE_SIZE) == _pattern(snp, 0x33)


def test_remap_and_alias_point_the_secret_page_at_the_spare_one(labs: Labs) -> None:
    for mode in (Mode.PLAIN, Mode.SEV_ES):
        lab = labs(mode)
        _perform(lab, "remap-page")
        spare = lab.host.spa_of(lab.guest, lab.spare_gpa)
        assert lab.host.spa_of(lab.guest, lab.secret_gpa) == spare
        assert lab.guest_read(lab.secret_gpa, PAGE_SIZE) == _pattern(lab, 0x44)
        lab = labs(mode)
        _perform(lab, "alias-pages")
        assert lab.guest_read(lab.spare_gpa, PAGE_SIZE) == _pattern(lab, 0x55)
    snp = labs(Mode.SEV_SNP)
    observed = _perform(snp, "remap-page")
    fault = snp.host.machine.faults[-1]
    assert observed.detail == f"guest access: {fault}"
    assert fault.kind is FaultKind.NPF and fault.address == snp.secret_gpa


def test_substitute_page_swaps_in_a_fresh_page(labs: Labs) -> None:
    lab = labs(Mode.SEV)
    before = lab.host.spa_of(lab.guest, lab.spare_gpa)
    _perform(lab, "substitute-page")
    after = lab.host.spa_of(lab.guest, lab.spare_gpa)
    assert after != before and lab.host.machine.host_read(after, PAGE_SIZE) == bytes(PAGE_SIZE)
    snp = labs(Mode.SEV_SNP)
    observed = _perform(snp, "substitute-page")
    fresh = snp.host.spa_of(snp.guest, snp.spare_gpa)
    entry = snp.host.machine.rmp.entry(fresh)
    assert entry.assigned and entry.asid == snp.guest.vm.asid and entry.gpa == snp.spare_gpa
    assert not entry.validated
    fault = snp.host.machine.faults[-1]
    assert fault.kind is FaultKind.VC and observed.detail == f"guest access: {fault}"


def test_unassign_page_gives_the_secret_page_back_to_the_host(labs: Labs) -> None:
    snp = labs(Mode.SEV_SNP)
    spa = snp.host.spa_of(snp.guest, snp.secret_gpa)
    observed = _perform(snp, "unassign-page")
    assert not snp.host.machine.rmp.entry(spa).assigned
    fault = snp.host.machine.faults[-1]
    assert observed.detail == f"guest access: {fault}" and fault.address == snp.secret_gpa
    for mode in (Mode.PLAIN, Mode.SEV_ES):
        lab = labs(mode)
        spa = lab.host.spa_of(lab.guest, lab.secret_gpa)
        _perform(lab, "unassign-page")
        assert lab.guest_read(lab.secret_gpa, len(lab.secret)) == lab.secret


def test_cold_boot_dump_finds_the_secret_in_a_plain_vms_dram(labs: Labs) -> None:
    plain = labs(Mode.PLAIN)
    observed = _perform(plain, "cold-boot-dump")
    leaks = CanaryScan({"workload secret": plain.secret}).scan_dram(plain.host.machine.dram)
    assert len(leaks) > 1 and observed.detail == f"the dump holds the secret: {leaks[0]}"


def test_foreign_vm_reads_with_its_own_key_and_leaves_no_vm_behind(labs: Labs) -> None:
    for mode in (Mode.PLAIN, Mode.SEV, Mode.SEV_SNP):
        lab = labs(mode)
        guests = dict(lab.host.guests)
        faults = len(lab.host.machine.faults)
        observed = _perform(lab, "foreign-vm-reads")
        assert lab.host.guests == guests
        if mode is Mode.SEV:
            assert observed.detail == "the other VM reads garbage (its own key)"
        if mode is Mode.SEV_SNP:
            fault = lab.host.machine.faults[faults]
            assert observed.detail == f"the other VM's access: {fault}"
            assert fault.kind is FaultKind.NPF and fault.address == 0
            assert fault.reason == "private access to a page not assigned to this guest"


def test_foreign_vm_reads_the_page_privately_with_its_own_key(
    labs: Labs, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sev = labs(Mode.SEV)
    frame = sev.host.spa_of(sev.guest, sev.secret_gpa) // PAGE_SIZE
    reads: list[tuple[int, bool]] = []
    access = MemoryEncryptionEngine.access_page

    def spy(engine: MemoryEncryptionEngine, asid: int, at: int, offset: int, size: int,
            data: bytes | None) -> bytes:
        if at == frame:
            reads.append((asid, data is None))
        return access(engine, asid, at, offset, size, data)

    monkeypatch.setattr(MemoryEncryptionEngine, "access_page", spy)
    _perform(sev, "foreign-vm-reads")
    assert len(reads) == 1
    asid, is_read = reads[0]
    assert is_read and asid not in (0, sev.guest.vm.asid)


def test_debug_decrypt_is_refused_by_the_guest_policy(labs: Labs) -> None:
    snp = labs(Mode.SEV_SNP)
    observed = _perform(snp, "debug-decrypt")
    assert "POLICY_FAILURE" in observed.detail


# -- registers --------------------------------------------------------------------------------
def test_an_action_at_the_next_exit_runs_once_and_keeps_its_fault(labs: Labs) -> None:
    snp = labs(Mode.SEV_SNP)
    runs: list[int] = []

    def action(*_: object) -> None:
        runs.append(1)
        snp.host.machine.host_write(snp.host.spa_of(snp.guest, snp.secret_gpa), b"x")

    faults = at_next_exit(snp.host, action)
    snp.guest_exit()
    snp.guest_exit()
    assert runs == [1] and len(faults) == 1 and faults[0] is snp.host.machine.faults[-1]
    assert isinstance(FaultRaised(faults[0]).fault, Fault)


def test_read_registers_sees_the_secret_in_the_vmcb(labs: Labs) -> None:
    sev = labs(Mode.SEV)
    assert _perform(sev, "read-registers").verdict is Verdict.SUCCEEDED
    es = labs(Mode.SEV_ES)
    _perform(es, "read-registers")
    assert es.guest_register("rbx") == int.from_bytes(es.secret[:8], "little")


def test_change_rip_resumes_the_guest_at_the_hosts_rip(labs: Labs) -> None:
    for mode in (Mode.PLAIN, Mode.SEV):
        lab = labs(mode)
        _perform(lab, "change-rip")
        assert lab.guest_register("rip") == FORGED_RIP
    snp = labs(Mode.SEV_SNP)
    observed = _perform(snp, "change-rip")
    fault = snp.host.machine.faults[-1]
    vmsa = snp.running().vcpu.vmsa_spa
    assert observed.detail == f"host write refused: {fault}" and fault.address == vmsa


def test_replay_registers_brings_the_old_r12_back(labs: Labs) -> None:
    for mode in (Mode.PLAIN, Mode.SEV_ES):
        lab = labs(mode)
        _perform(lab, "replay-registers")
        assert lab.guest_register("r12") == 0x0123_4567_89AB_CDEF
    snp = labs(Mode.SEV_SNP)
    observed = _perform(snp, "replay-registers")
    fault = snp.host.machine.faults[-1]
    assert observed.detail == f"host write refused: {fault}"
    assert snp.guest_register("r12") == 0x0FED_CBA9_8765_4321


def test_read_vmsa_reads_the_page_that_holds_the_register(labs: Labs) -> None:
    for mode in (Mode.SEV_ES, Mode.SEV_SNP):
        lab = labs(mode)
        reads: list[tuple[int, bytes]] = []
        host_read = lab.host.machine.host_read

        def spy(spa: int, size: int, host_read: Callable[[int, int], bytes] = host_read,
                reads: list[tuple[int, bytes]] = reads) -> bytes:
            data = host_read(spa, size)
            reads.append((spa, data))
            return data

        lab.host.machine.host_read = spy  # type: ignore[method-assign]
        _perform(lab, "read-vmsa")
        spa, page = reads[-1]
        vcpu = lab.guest.vcpus[0]
        assert spa == vcpu.vmsa_spa and len(page) == PAGE_SIZE
        # The guest's key opens the page the host read: it holds the secret in R13.
        plain = lab.host.machine.engine.read(lab.guest.vm.asid, spa, PAGE_SIZE)
        assert lab.secret[:8] in plain and lab.secret[:8] not in page


# -- the CPU interface ------------------------------------------------------------------------
def test_lie_cpuid_gives_the_guest_the_lying_c_bit(labs: Labs) -> None:
    for mode in (Mode.PLAIN, Mode.SEV_ES):
        lab = labs(mode)
        _, truth, _, _ = lab.guest_cpuid(cpu.SEV_LEAF)
        _perform(lab, "lie-cpuid")
        _, seen, _, _ = lab.guest_cpuid(cpu.SEV_LEAF)
        assert seen == (truth & ~0x3F) | 47 and truth & 0x3F == 51
    snp = labs(Mode.SEV_SNP)
    observed = _perform(snp, "lie-cpuid")
    assert snp.host.cpuid[cpu.SEV_LEAF][1] & 0x3F == 47  # the host did lie
    assert observed.detail.startswith("the guest's CPUID page says bit 51 (the silicon's 51)")


def test_inject_masked_interrupt_delivers_or_is_refused(labs: Labs) -> None:
    plain = labs(Mode.PLAIN)
    hooks = list(plain.host.exit_hooks)
    _perform(plain, "inject-masked-interrupt")
    assert plain.guest_events()[-1] == cpu.TIMER_VECTOR and plain.host.exit_hooks == hooks
    snp = labs(Mode.SEV_SNP)
    observed = _perform(snp, "inject-masked-interrupt")
    fault = next(f for f in reversed(snp.host.machine.faults)
                 if f.kind is FaultKind.VMEXIT_INVALID)
    assert observed.detail == str(fault)
    assert cpu.TIMER_VECTOR not in snp.guest_events()


@pytest.mark.parametrize(("where", "verdict"), [
    ("secret", Verdict.SUCCEEDED), ("spare", Verdict.BLOCKED),
])
def test_debug_decrypt_decrypts_the_secret_page_of_a_debug_guest(
    where: str, verdict: Verdict, labs: Labs,
) -> None:
    """Positive control: a guest launched with the debug policy (which the relying party
    refuses) whose secret page holds the secret, written with its key — the PSP decrypts that
    page, and only that one, for the host."""
    snp = labs(Mode.SEV_SNP)
    secret = snp.secret
    snp.launch(debug=True)
    gpa = snp.secret_gpa if where == "secret" else snp.spare_gpa
    page = secret + bytes(PAGE_SIZE - len(secret))
    snp.host.machine.engine.write(snp.guest.vm.asid, snp.host.spa_of(snp.guest, gpa), page)
    observed = debug_decrypt(snp)
    assert observed.verdict is verdict
    if verdict is Verdict.SUCCEEDED:
        assert observed.detail == "the PSP decrypted the guest's secret for the host"
    else:
        assert observed.mechanism is Mechanism.MEMORY_ENCRYPTION
        assert observed.detail == "the PSP returned another page"


def test_debug_decrypt_asks_nothing_for_a_guest_the_psp_launched_without_snp(
    labs: Labs,
) -> None:
    """A SEV guest's PSP handle (legacy launch) is no SNP guest context."""
    sev = labs(Mode.SEV)
    sev.guest.handle = 1
    observed = debug_decrypt(sev)
    assert observed.verdict is Verdict.NOT_APPLICABLE
    assert observed.detail == "no SNP guest context in the PSP for this VM"


@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.SEV_SNP], ids=["plain", "sev-snp"])
def test_an_injection_lost_without_a_refusal_matches_no_expectation(
    mode: Mode, labs: Labs, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An injection that silently does nothing is reported as such — even on an SNP VM whose
    earlier injection was refused — and breaks the cell in every mode."""
    lab = labs(mode)
    if mode is Mode.SEV_SNP:
        _perform(lab, "inject-masked-interrupt")  # a refusal already in the machine's log
    monkeypatch.setattr(Vcpu, "inject_event", lambda self, vector: None)
    events = list(lab.guest_events())
    observed = by_name("inject-masked-interrupt").perform(lab)
    assert lab.guest_events() == events
    assert observed.mechanism is None and observed.verdict is Verdict.BLOCKED
    assert observed.detail == "the event was not delivered"
    assert not any(observed.matches(by_name("inject-masked-interrupt").expected(m))
                   for m in MODES)


def test_change_rip_writes_a_forged_save_area_over_the_vmsa(labs: Labs) -> None:
    """Under SEV-ES the host can write the VMSA page but not encrypt it: the forged save area
    (the host's RIP, EFER.SVME set) lands on the page and decrypts to garbage."""
    es = labs(Mode.SEV_ES)
    writes: list[tuple[int, bytes]] = []
    host_write = es.host.machine.host_write

    def spy(spa: int, data: bytes) -> None:
        writes.append((spa, data))
        host_write(spa, data)

    es.host.machine.host_write = spy  # type: ignore[method-assign]
    vmsa = es.running().vcpu.vmsa_spa
    _perform(es, "change-rip")
    assert writes == [(vmsa, Vmsa({"rip": FORGED_RIP, "efer": 1 << 12}).to_bytes())]
    assert es.guest_register("rip") != FORGED_RIP


ENCRYPTION = Mechanism.MEMORY_ENCRYPTION


@pytest.mark.parametrize(("name", "mode", "power", "mechanism", "detail"), [
    ("corrupt-page", Mode.SEV, "host_write", None, "the guest's data survived"),
    ("replay-page", Mode.SEV, "host_write", None, "the old ciphertext never reached the page"),
    ("change-rip", Mode.SEV_ES, "host_write", None,
     "the forged state never reached the save area"),
    ("change-rip", Mode.SEV_SNP, "host_write", None,
     "the forged state never reached the save area"),
    ("replay-registers", Mode.SEV_ES, "host_write", None,
     "the old state never reached the VMSA page"),
    ("replay-registers", Mode.SEV_SNP, "host_write", None,
     "the old state never reached the VMSA page"),
    ("remap-page", Mode.SEV, "map", None, "the nested page table was not changed"),
    ("alias-pages", Mode.SEV_ES, "map", None, "the nested page table was not changed"),
    ("alias-pages", Mode.SEV_SNP, "map", None, "the nested page table was not changed"),
    ("substitute-page", Mode.SEV_SNP, "map", None, "the guest still reads its page"),
    ("unassign-page", Mode.SEV_SNP, "rmpupdate", None, "the guest read its secret"),
    ("foreign-vm-reads", Mode.SEV_SNP, "check_guest_access", ENCRYPTION,
     "the other VM reads garbage (its own key)"),
])
def test_an_attack_whose_power_does_nothing_breaks_its_cell(
    name: str, mode: Mode, power: str, mechanism: Mechanism | None, detail: str, labs: Labs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host's write, remap or RMPUPDATE silently lost (or, for the intruder VM, the RMP's
    check): the attack says so, naming no mechanism or the one that did act, never the
    mechanism the mode is expected to block it with."""
    lab = labs(mode)
    target = {"host_write": Machine, "map": VirtualMachine, "rmpupdate": Rmp,
              "check_guest_access": Rmp}[power]
    monkeypatch.setattr(target, power, lambda self, *args, **fields: None)
    observed = by_name(name).perform(lab)
    assert observed.detail == detail and observed.mechanism is mechanism
    assert observed.verdict is (Verdict.SUCCEEDED if name == "unassign-page" else Verdict.BLOCKED)
    assert not observed.matches(by_name(name).expected(mode))
