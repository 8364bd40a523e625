"""Every attack's observed outcome equals its expectation in every mode, and the canary scan is
clean wherever the mode must protect the guest's secrets."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from cvm.hardware.fault import FaultKind
from cvm.hardware.vm import Mode
from cvm.host.adversary.catalog import ATTACKS, by_name
from cvm.host.adversary.threat import (
    MODES,
    Expected,
    Family,
    Mechanism,
    Verdict,
    by,
)
from cvm.scenarios import attack_matrix
from cvm.scenarios.attack_lab import LaunchedLab

LAUNCHED = [a for a in ATTACKS if a.family in attack_matrix.LAUNCH_FAMILIES]


def _seeded(seed: int) -> random.Random:
    return random.Random(seed)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("attack", LAUNCHED, ids=lambda a: a.name)
def test_observed_outcome_is_the_expected_one(attack: object, mode: Mode) -> None:
    from cvm.host.adversary.threat import Attack

    assert isinstance(attack, Attack)
    result = attack_matrix.run(attack, mode, _seeded(11).randbytes)
    assert result.observed.matches(result.expected), (str(result.observed), result.observed.detail)
    if result.must_be_clean:
        assert result.leaks == (), [str(leak) for leak in result.leaks]
    assert result.held


def test_the_table_is_big_enough_and_names_are_unique() -> None:
    names = [a.name for a in ATTACKS]
    assert len(names) == len(set(names))
    families = {a.family for a in ATTACKS}
    assert {Family.MEMORY, Family.REGISTERS, Family.CPU, Family.LAUNCH, Family.EVIDENCE} <= families
    for attack in ATTACKS:
        for mode in MODES:
            expected = attack.expected(mode)
            assert (expected.verdict is Verdict.BLOCKED) == (expected.mechanism is not None)


def test_snp_blocks_every_launched_attack_that_applies() -> None:
    for attack in LAUNCHED:
        expected = attack.expected(Mode.SEV_SNP)
        assert expected.verdict is Verdict.BLOCKED, attack.name


def test_plain_guest_leaks_and_the_matrix_sees_it() -> None:
    result = attack_matrix.run(by_name("read-page"), Mode.PLAIN, _seeded(12).randbytes)
    assert result.observed.verdict is Verdict.SUCCEEDED
    assert result.leaks and not result.must_be_clean and result.held


def test_a_wrong_expectation_is_reported_as_broken() -> None:
    """The matrix compares verdict AND mechanism: a cell with the wrong mechanism breaks."""
    attack = by_name("remap-page")
    wrong = replace(attack, sev_snp=by(Mechanism.MEMORY_ENCRYPTION))
    result = attack_matrix.run(wrong, Mode.SEV_SNP, _seeded(13).randbytes)
    assert result.observed.verdict is Verdict.BLOCKED and not result.held
    wrong = replace(attack, sev=Expected(Verdict.BLOCKED, Mechanism.RMP))
    assert not attack_matrix.run(wrong, Mode.SEV, _seeded(14).randbytes).held


def test_a_leak_where_the_mode_must_protect_breaks_the_cell() -> None:
    """A leak planted in an SEV-SNP guest's exit view makes an otherwise held cell broken."""
    leaky = replace(by_name("read-registers"), perform=_leak_then_read)
    result = attack_matrix.run(leaky, Mode.SEV_SNP, _seeded(15).randbytes)
    assert result.as_expected and result.leaks and not result.held


def _leak_then_read(lab: object) -> object:
    from cvm.formats.snp.ghcb import Ghcb
    from cvm.hardware.vcpu import EXIT_VMGEXIT
    from cvm.host.vmm import EXIT_NAE_CPUID
    from cvm.scenarios.attack_lab import GHCB_GPA

    assert isinstance(lab, LaunchedLab)
    cpu = lab.vm.kernel.cpu
    leaked = int.from_bytes(lab.secret[:8], "little")
    cpu.write(GHCB_GPA, Ghcb.build(rax=1, rbx=leaked, sw_exitcode=EXIT_NAE_CPUID).to_bytes())
    cpu.ghcb_msr = GHCB_GPA
    cpu.vmexit(EXIT_VMGEXIT)
    return by_name("read-registers").perform(lab)


def test_snp_faults_are_recorded_as_data() -> None:
    lab = LaunchedLab(Mode.SEV_SNP, _seeded(16).randbytes)
    by_name("corrupt-page").perform(lab)
    fault = lab.host.machine.faults[-1]
    assert fault.kind is FaultKind.HOST_PF and fault.error_code & (1 << 31)
    lab = LaunchedLab(Mode.SEV_SNP, _seeded(17).randbytes)
    by_name("remap-page").perform(lab)
    fault = lab.host.machine.faults[-1]
    assert fault.kind is FaultKind.NPF and fault.address == lab.secret_gpa and fault.vmpl == 0
