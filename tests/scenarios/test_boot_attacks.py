"""The demo's boot chapter: the genuine UKI boots as predicted; each ESP edit is caught."""

from __future__ import annotations

from cvm.scenarios import boot_attacks


def test_each_attempt_ends_as_expected() -> None:
    owner = boot_attacks.build_owner_image()
    outcomes = {o.attack: o for o in boot_attacks.run_all(owner)}
    assert set(outcomes) == set(boot_attacks.EXPECTED)
    for name, (boots, as_predicted) in boot_attacks.EXPECTED.items():
        assert (outcomes[name].booted, outcomes[name].pcrs_match_prediction) == (
            boots, as_predicted,
        ), name
    assert "signatures carry" in outcomes["host patches one byte of the kernel"].reason
    assert "not in db" in outcomes["host swaps in its own unsigned UKI"].reason
    assert "PCR 4, 7, 11" in outcomes[
        "host clears the varstore (Secure Boot off) and boots its UKI"
    ].reason
