"""The attacks on the running VM's memory, registers and CPU interface, one cell at a time on
a freshly booted VM: each outcome as expected, and — because an attack that silently stops
acting would read as "blocked" in the protected modes — the proof that it acted: the bytes the
host wrote or read, the register the guest resumed with, the fault or refusal that stopped it."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from cvm.hardware.fault import PFERR_RMP, Fault, FaultKind, FaultRaised, Who
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vm import Mode
from cvm.host.adversary import cpu, memory, registers
from cvm.host.adversary.catalog import by_name
from cvm.host.adversary.memory import mechanism_of, read_guest_page
from cvm.host.adversary.registers import FORGED_RIP, at_next_exit
from cvm.host.adversary.threat import MODES, Attack, Mechanism, Observed, Verdict
from cvm.scenarios.attack_bundles import LabBundles, build_lab_bundles
from cvm.scenarios.boot_lab import BootLab

RUNNING = [*memory.ATTACKS, *registers.ATTACKS, *cpu.ATTACKS]
Labs = Callable[[Mode], BootLab]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabBundles]:
    yield build_lab_bundles(tmp_path_factory.mktemp("bundles"), random.Random(40).randbytes)


@pytest.fixture
def labs(bundles: LabBundles) -> Iterator[Labs]:
    """Booted VMs of any mode, each its own, closed after the test."""
    made: list[BootLab] = []

    def make(mode: Mode) -> BootLab:
        made.append(BootLab(mode, bundles, random.Random(f"41/{mode.value}").randbytes))
        return made[-1]

    yield make
    for lab in made:
        lab.close()


def _pattern(lab: BootLab, salt: int) -> bytes:
    return bytes(b ^ salt for b in lab.secret) * (PAGE_SIZE // len(lab.secret))


def _perform(lab: BootLab, name: str) -> Observed:
    attack = by_name(name)
    observed = attack.perform(lab)
    expected = attack.expected(lab.mode)
    assert observed.matches(expected), (name, lab.mode.value, str(observed), observed.detail)
    return observed


@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
@pytest.mark.parametrize("attack", RUNNING, ids=[a.name for a in RUNNING])
def test_each_attack_as_expected_in_each_mode(attack: Attack, mode: Mode, labs: Labs) -> None:
    lab = labs(mode)
    observed = attack.perform(lab)
    assert observed.matches(attack.expected(mode)), (str(observed), observed.detail)
    assert observed.detail


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
    assert observed.detail.startswith("the dump holds the secret: workload secret[")


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
