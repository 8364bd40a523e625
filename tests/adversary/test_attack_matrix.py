"""Every attack on the running VM — its memory, registers, CPU interface, launch and evidence —
against the VM booted from the owner's image, in every mode: the observed outcome equals its
expectation, and the canary scan is clean wherever the mode must protect the guest's secrets."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace

import pytest

from cvm.hardware.fault import FaultKind
from cvm.hardware.vm import Mode
from cvm.host.adversary.catalog import ATTACKS, by_name
from cvm.host.adversary.lab import Lab
from cvm.host.adversary.threat import (
    MODES,
    Expected,
    Family,
    Mechanism,
    Observed,
    Verdict,
    by,
)
from cvm.scenarios import attack_matrix
from cvm.scenarios.attack_bundles import LabBundles, build_lab_bundles
from cvm.scenarios.boot_lab import SECRET_GPA, BootLab

RUNTIME = [a for a in ATTACKS if a.family in attack_matrix.RUNTIME_FAMILIES]


def _seeded(seed: int) -> random.Random:
    return random.Random(seed)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabBundles]:
    yield build_lab_bundles(tmp_path_factory.mktemp("bundles"), _seeded(30).randbytes)


def test_every_runtime_attack_on_the_booted_vm_in_every_mode() -> None:
    results = attack_matrix.matrix(RUNTIME, MODES, seed=11, workers=2)
    assert len(results) == 4 * len(RUNTIME) >= 4 * 23
    broken = [(r.attack.name, r.mode.value, str(r.observed), r.observed.detail)
              for r in results if not r.as_expected]
    assert broken == []
    leaks = [(r.attack.name, r.mode.value, [str(leak) for leak in r.leaks[:3]])
             for r in results if r.must_be_clean and r.leaks]
    assert leaks == []
    assert all(r.held for r in results)
    # The attacks acted on the booted VM: a plain host reads the workload's data page, and
    # the dump of a plain VM's DRAM holds the volume key the initramfs placed there.
    plain = {r.attack.name: r for r in results if r.mode is Mode.PLAIN}
    assert plain["read-page"].observed.verdict is Verdict.SUCCEEDED
    assert any(leak.secret == "volume key" and leak.where == "DRAM"
               for leak in plain["cold-boot-dump"].leaks)
    snp = {r.attack.name: r for r in results if r.mode is Mode.SEV_SNP}
    assert "reported_tcb" in snp["psp-rollback"].observed.detail
    assert "measurement" in snp["tamper-firmware"].observed.detail


def test_the_table_is_big_enough_and_names_are_unique() -> None:
    names = [a.name for a in ATTACKS]
    assert len(names) == len(set(names)) >= 30
    families = {a.family for a in ATTACKS}
    assert set(Family) == families
    for attack in ATTACKS:
        for mode in MODES:
            expected = attack.expected(mode)
            assert (expected.verdict is Verdict.BLOCKED) == (expected.mechanism is not None)


def test_snp_blocks_every_runtime_attack_that_applies() -> None:
    for attack in RUNTIME:
        expected = attack.expected(Mode.SEV_SNP)
        assert expected.verdict is Verdict.BLOCKED, attack.name


def test_the_lab_is_the_booted_vm_and_its_secrets_are_the_real_ones(bundles: LabBundles) -> None:
    lab = BootLab(Mode.SEV_SNP, bundles, _seeded(31).randbytes)
    try:
        assert lab.traces[0].ok  # launched, booted, unsealed, the workload ran
        assert lab.guest.handle is not None and lab.host.psp is not None  # the PSP launched it
        assert lab.running().vcpu.vmpl == 1  # the guest OS runs under the SVSM
        assert lab.guest_read(SECRET_GPA, len(lab.secret)) == lab.secret
        secrets = lab.secrets()
        assert {"volume key", "workload data", "vTPM state key", "VMPCK0"} <= set(secrets)
        assert any(name.startswith("vTPM seed") for name in secrets)
        assert secrets["workload data"] == lab.secret and len(lab.secret) >= 32
    finally:
        lab.close()


def test_plain_guest_leaks_and_the_matrix_sees_it(bundles: LabBundles) -> None:
    result = attack_matrix.run(by_name("read-page"), Mode.PLAIN, _seeded(12).randbytes, bundles)
    assert result.observed.verdict is Verdict.SUCCEEDED
    assert result.leaks and not result.must_be_clean and result.held


def test_a_wrong_expectation_is_reported_as_broken(bundles: LabBundles) -> None:
    """The matrix compares verdict AND mechanism: a cell with the wrong mechanism breaks."""
    attack = by_name("remap-page")
    wrong = replace(attack, sev_snp=by(Mechanism.MEMORY_ENCRYPTION))
    result = attack_matrix.run(wrong, Mode.SEV_SNP, _seeded(13).randbytes, bundles)
    assert result.observed.verdict is Verdict.BLOCKED and not result.held
    wrong = replace(attack, sev=Expected(Verdict.BLOCKED, Mechanism.RMP))
    assert not attack_matrix.run(wrong, Mode.SEV, _seeded(14).randbytes, bundles).held


def test_a_leak_where_the_mode_must_protect_breaks_the_cell(bundles: LabBundles) -> None:
    """A leak planted in an SEV-SNP guest's exit view makes an otherwise held cell broken —
    in a forked copy of the booted VM, as the matrix runs it."""
    leaky = replace(by_name("read-registers"), perform=_leak_then_read)
    results = attack_matrix.matrix([leaky], [Mode.SEV_SNP], seed=15)
    assert results[0].as_expected and results[0].leaks and not results[0].held
    assert any("GHCB" in leak.where for leak in results[0].leaks)


def _leak_then_read(lab: Lab) -> Observed:
    from cvm.formats.snp.ghcb import Ghcb
    from cvm.hardware.vcpu import EXIT_VMGEXIT
    from cvm.host.vmm import EXIT_NAE_CPUID

    assert isinstance(lab, BootLab)
    svsm = lab.running().svsm
    assert svsm is not None
    leaked = int.from_bytes(lab.secrets()["volume key"][:8], "little")

    def leak() -> None:  # an SVSM whose #VC path copies 8 bytes of a key into its GHCB
        ghcb = svsm.kernel.ghcb_gpa
        assert ghcb is not None
        svsm.vcpu.write(ghcb, Ghcb.build(rax=1, rbx=leaked,
                                         sw_exitcode=EXIT_NAE_CPUID).to_bytes())
        svsm.vcpu.ghcb_msr = ghcb
        svsm.vcpu.vmexit(EXIT_VMGEXIT)

    svsm.at_vmpl0(leak)
    return by_name("read-registers").perform(lab)


def test_snp_faults_are_recorded_as_data(bundles: LabBundles) -> None:
    lab = BootLab(Mode.SEV_SNP, bundles, _seeded(16).randbytes)
    try:
        by_name("corrupt-page").perform(lab)
        fault = lab.host.machine.faults[-1]
        assert fault.kind is FaultKind.HOST_PF and fault.error_code & (1 << 31)
        by_name("remap-page").perform(lab)
        fault = lab.host.machine.faults[-1]
        assert fault.kind is FaultKind.NPF and fault.address == lab.secret_gpa
        assert fault.vmpl == 1  # the guest OS, at VMPL1 under the SVSM
    finally:
        lab.close()


def test_lie_cpuid_reaches_a_non_snp_guest_on_the_running_vm(bundles: LabBundles) -> None:
    lab = BootLab(Mode.SEV_ES, bundles, _seeded(17).randbytes)
    try:
        observed = by_name("lie-cpuid").perform(lab)
        assert observed.verdict is Verdict.SUCCEEDED
        assert len(lab.traces) == 1  # no relaunch: the running guest asked through its GHCB
    finally:
        lab.close()


def test_snapshots_do_not_disturb_each_other(bundles: LabBundles, tmp_path: object) -> None:
    """Two cells against copies of one booted VM: the first corrupts a page of its copy and
    edits the host's files; the second still finds the VM and its files as booted."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    lab = attack_matrix.booted(Mode.SEV, 18, bundles, tmp_path)
    try:
        disk_before = (lab.bundle() / "disk.img").read_bytes()
        first = attack_matrix.in_snapshot(by_name("unsigned-shim"), lab, 18, tmp_path)
        assert first.as_expected
        second = attack_matrix.in_snapshot(by_name("corrupt-page"), lab, 18, tmp_path)
        assert second.observed.verdict is Verdict.SUCCEEDED and second.held
        assert (lab.bundle() / "disk.img").read_bytes() == disk_before
        assert lab.guest_read(lab.spare_gpa, 16) != bytes(range(16))  # junk stayed in the copy
        assert len(lab.traces) == 1
    finally:
        attack_matrix.forget_booted(tmp_path)


def test_a_launch_refused_by_no_appraisal_matches_no_expectation() -> None:
    from cvm.host.adversary.lab import Release
    from cvm.host.adversary.launch import judge_release

    attack = by_name("tamper-firmware")
    failed = judge_release(Release(False, True, (), "the launch itself failed"), "measurement")
    assert failed.mechanism is None
    assert not any(failed.matches(attack.expected(mode)) for mode in MODES)
    other = judge_release(Release(False, True, ("reported_tcb",), "old TCB"), "measurement")
    assert other.mechanism is Mechanism.ATTESTATION and "reported_tcb" in other.detail
    assert judge_release(Release(True, False), "measurement").verdict is Verdict.SUCCEEDED
