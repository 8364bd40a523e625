"""The boot-file and state-at-rest attacks against VMs booted from image bundles: every cell
as expected in every mode, the canary scan clean under SEV-SNP, and the scan's positive control
on a plain VM whose volume key the host reads in DRAM."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvm.hardware.vm import Mode
from cvm.host.adversary.boot_files import judge_boot, mechanism_of_refusal
from cvm.host.adversary.catalog import ATTACKS, by_name
from cvm.host.adversary.lab import BootReport
from cvm.host.adversary.threat import MODES, Family, Mechanism, Verdict
from cvm.scenarios import attack_matrix
from cvm.scenarios.attack_bundles import LabBundles, build_lab_bundles
from cvm.scenarios.boot_lab import BootLab

BOOTED = [a for a in ATTACKS if a.family in (Family.BOOT_FILES, Family.STATE)]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabBundles]:
    yield build_lab_bundles(tmp_path_factory.mktemp("bundles"), random.Random(5).randbytes)


def test_every_boot_and_state_attack_in_every_mode() -> None:
    results = attack_matrix.matrix(BOOTED, MODES, seed=21, workers=2)
    assert len(results) == 4 * len(BOOTED) >= 4 * 17
    broken = [(r.attack.name, r.mode.value, str(r.observed), r.observed.detail)
              for r in results if not r.as_expected]
    assert broken == []
    snp_leaks = [(r.attack.name, [str(leak) for leak in r.leaks[:3]])
                 for r in results if r.mode is Mode.SEV_SNP and r.leaks]
    assert snp_leaks == []
    assert all(r.held for r in results)
    # Positive control: a plain VM that booted left its volume key readable in DRAM.
    plain = [r for r in results if r.mode is Mode.PLAIN and r.observed.verdict is
             Verdict.SUCCEEDED and "booted" in r.observed.detail]
    assert len(plain) >= 2
    assert all(any(leak.secret == "volume key" and leak.where == "DRAM" for leak in r.leaks)
               for r in plain)


def test_the_genuine_boot_succeeds_and_the_host_copy_has_no_owner_folder(
    bundles: LabBundles,
) -> None:
    lab = BootLab(Mode.SEV_SNP, bundles, random.Random(6).randbytes)
    try:
        assert not (lab.bundle() / "owner").exists()
        assert (bundles.own_for(Mode.SEV_SNP) / "owner").is_dir()
        report = lab.boot()
        assert report.booted and report.unsealed and report.workload, report
        assert judge_boot(report).verdict is Verdict.SUCCEEDED
        secrets = lab.secrets()
        assert {"volume key", "workload data", "vTPM state key", "VMPCK0"} <= set(secrets)
        assert any(name.startswith("vTPM seed") for name in secrets)
        from cvm.host.adversary.canary import CanaryScan

        assert lab.view.scan(CanaryScan(secrets), lab.host_files()) == []
    finally:
        lab.close()


def test_the_snp_host_has_no_state_key_but_the_others_do(bundles: LabBundles) -> None:
    assert not (bundles.own_for(Mode.SEV_SNP) / "host-vtpm-state.key").exists()
    assert (bundles.own_for(Mode.SEV_ES) / "host-vtpm-state.key").exists()


@pytest.mark.parametrize(("report", "mechanism"), [
    (BootReport(False, False, False, "firmware", "firmware refused X: refused (hash in dbx)"),
     Mechanism.DBX),
    (BootReport(False, False, False, "firmware", "shim refused Y: SBAT generation 2 < 3"),
     Mechanism.SBAT),
    (BootReport(False, False, False, "firmware", "shim refused Y: no matching signer"),
     Mechanism.SHIM),
    (BootReport(False, False, False, "firmware", "firmware refused X: not in db"),
     Mechanism.SECURE_BOOT),
    (BootReport(True, False, False, "initramfs", "unseal: TPM_RC_INTEGRITY (the PCRs differ)"),
     Mechanism.TPM_OBJECT),
    (BootReport(True, False, False, "initramfs", "the PCRs differ from the sealed policy"),
     Mechanism.PCR_POLICY),
    (BootReport(False, False, False, "svsm", "state file is an old copy (rollback)"),
     Mechanism.ROLLBACK_COUNTER),
    (BootReport(False, False, False, "svsm", "vTPM state file does not authenticate"),
     Mechanism.STATE_SEALING),
    (BootReport(False, False, False, "svsm", "the report is not acceptable: measurement"),
     Mechanism.ATTESTATION),
])
def test_refusals_are_read_as_their_mechanism(report: BootReport, mechanism: Mechanism) -> None:
    assert mechanism_of_refusal(report) is mechanism
    assert judge_boot(report).mechanism is mechanism


def test_an_unexplained_refusal_matches_no_expectation() -> None:
    observed = judge_boot(BootReport(False, False, False, "launch", "out of memory"))
    attack = by_name("unsigned-shim")
    assert observed.mechanism is None
    assert not any(observed.matches(attack.expected(mode)) for mode in MODES)


def test_bundles_folder_layout(bundles: LabBundles) -> None:
    assert (bundles.old_release / "shimx64.efi").is_file()
    assert (bundles.old_release / "grubx64.efi").is_file()
    assert isinstance(bundles.own_for(Mode.PLAIN), Path)
