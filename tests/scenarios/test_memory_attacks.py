"""Each row of the memory half of the SEV-SNP threat table, in each mode."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from cvm.hardware.fault import FaultKind
from cvm.hardware.vm import Mode
from cvm.scenarios import memory_attacks as table


def _seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


@pytest.mark.parametrize("mode", table.MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("attack", sorted(table.ATTACKS))
def test_outcome_matches_the_threat_table(attack: str, mode: Mode) -> None:
    outcome = table.run(attack, mode, _seeded(7))
    assert outcome.observed == table.expected(attack, mode)


@pytest.mark.parametrize("attack", sorted(table.ATTACKS))
@pytest.mark.parametrize("mode", [Mode.SEV_ES, Mode.SEV_SNP], ids=lambda m: m.value)
def test_no_secret_byte_reaches_the_host_with_encrypted_state(attack: str, mode: Mode) -> None:
    assert not table.run(attack, mode, _seeded(11)).secret_visible_to_host


def test_plain_guest_leaks_its_secret_to_the_host() -> None:
    assert table.run("read-memory", Mode.PLAIN).secret_visible_to_host


def test_sev_leaks_registers_but_not_memory() -> None:
    assert not table.run("read-memory", Mode.SEV).secret_visible_to_host
    assert table.run("read-registers", Mode.SEV).secret_visible_to_host


def test_snp_faults_are_recorded_as_data() -> None:
    write = table.run("write-junk", Mode.SEV_SNP)
    assert write.fault is not None and write.fault.kind is FaultKind.HOST_PF
    assert write.fault.error_code & (1 << 31)  # the RMP bit of the #PF error code
    remap = table.run("remap", Mode.SEV_SNP)
    assert remap.fault is not None and remap.fault.kind is FaultKind.NPF
    assert remap.fault.address == table.SECRET_GPA and remap.fault.vmpl == 0
    register = table.run("change-register", Mode.SEV_SNP)
    assert register.fault is not None and register.fault.kind is FaultKind.HOST_PF


def test_every_attack_has_an_expected_row_for_every_mode() -> None:
    assert set(table.ATTACKS) == set(table.EXPECTED)
    assert all(len(row) == len(table.MODES) for row in table.EXPECTED.values())
