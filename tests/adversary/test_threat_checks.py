"""The threat table's own rules: what an expectation may say, when an observation matches it,
how both print, and which expectation belongs to which mode."""

from __future__ import annotations

import pytest

from cvm.errors import UsageError
from cvm.hardware.vm import Mode
from cvm.host.adversary.catalog import ATTACKS
from cvm.host.adversary.threat import (
    MODES,
    NA,
    OK,
    Expected,
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


def test_the_modes_are_plain_sev_sev_es_sev_snp_in_that_order() -> None:
    assert MODES == (Mode.PLAIN, Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP)


@pytest.mark.parametrize("verdict", [Verdict.SUCCEEDED, Verdict.NOT_APPLICABLE])
def test_only_a_blocked_expectation_names_a_mechanism(verdict: Verdict) -> None:
    with pytest.raises(UsageError, match=r"^an expectation names a mechanism exactly when it is "
                                         r"'blocked'$"):
        Expected(verdict, Mechanism.RMP)
    assert Expected(verdict).mechanism is None


def test_a_blocked_expectation_must_name_its_mechanism() -> None:
    with pytest.raises(UsageError, match="exactly when it is 'blocked'"):
        Expected(Verdict.BLOCKED)
    assert Expected(Verdict.BLOCKED, Mechanism.RMP).mechanism is Mechanism.RMP


def test_an_observation_matches_only_the_same_verdict_and_mechanism() -> None:
    rmp, vmsa = by(Mechanism.RMP), by(Mechanism.ENCRYPTED_VMSA)
    assert blocked(Mechanism.RMP, "fault").matches(rmp)
    assert not blocked(Mechanism.RMP, "fault").matches(vmsa)  # the wrong mechanism
    assert not blocked(Mechanism.RMP, "fault").matches(OK)
    assert not succeeded("read").matches(rmp)
    assert succeeded("read").matches(OK) and succeeded("read").matches(ok("no RMP"))
    assert not succeeded("read").matches(NA)
    assert not_applicable("none").matches(NA) and not_applicable("none").matches(na("none"))
    assert not not_applicable("none").matches(OK)
    # a mechanism observed alongside a verdict other than blocked matches nothing blocked
    assert not Observed(Verdict.SUCCEEDED, "odd", Mechanism.RMP).matches(rmp)
    assert not Observed(Verdict.SUCCEEDED, "odd", Mechanism.RMP).matches(OK)


def test_observations_and_expectations_print_the_same_words() -> None:
    assert str(blocked(Mechanism.SBAT, "revoked")) == "blocked by SBAT"
    assert str(by(Mechanism.SBAT)) == "blocked by SBAT"
    assert str(succeeded("read")) == str(OK) == "succeeded"
    assert str(not_applicable("none")) == str(NA) == "not applicable"
    assert str(ok("why")) == "succeeded" and str(na("why")) == "not applicable"


def test_helpers_build_what_they_name() -> None:
    assert blocked(Mechanism.RMP, "d") == Observed(Verdict.BLOCKED, "d", Mechanism.RMP)
    assert succeeded("d") == Observed(Verdict.SUCCEEDED, "d")
    assert not_applicable("d") == Observed(Verdict.NOT_APPLICABLE, "d")
    assert ok("w") == Expected(Verdict.SUCCEEDED, why="w")
    assert na("w") == Expected(Verdict.NOT_APPLICABLE, why="w")
    assert by(Mechanism.DBX) == Expected(Verdict.BLOCKED, Mechanism.DBX)
    assert Expected(Verdict.SUCCEEDED) == OK and Expected(Verdict.NOT_APPLICABLE) == NA


def test_each_mode_reads_its_own_expectation_in_declaration_order() -> None:
    expectations = (ok("plain"), na("sev"), by(Mechanism.ENCRYPTED_VMSA), by(Mechanism.RMP))

    def perform(lab: object) -> Observed:
        return succeeded("done")

    attack = declare("probe", Family.REGISTERS, "reads a register", expectations, perform)
    assert (attack.name, attack.family, attack.does) == ("probe", Family.REGISTERS,
                                                         "reads a register")
    assert [attack.expected(mode) for mode in MODES] == list(expectations)
    assert (attack.plain, attack.sev, attack.sev_es, attack.sev_snp) == expectations
    assert attack.perform is perform


def test_the_catalogue_blocks_with_a_mechanism_wherever_it_says_blocked() -> None:
    for attack in ATTACKS:
        for mode in MODES:
            expected = attack.expected(mode)
            assert (expected.verdict is Verdict.BLOCKED) == (expected.mechanism is not None)
