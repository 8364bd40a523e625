"""The demo's vTPM chapter: the sealed disk key comes out for the genuine boot only."""

from __future__ import annotations

import random

from cvm.scenarios import boot_attacks, sealed_disk


def test_only_the_predicted_boot_unseals_the_disk_key() -> None:
    owner = boot_attacks.build_owner_image()
    outcomes = sealed_disk.run(owner, random.Random(9).randbytes)
    assert [o.attempt for o in outcomes] == list(sealed_disk.EXPECTED_UNSEALED)
    for outcome in outcomes:
        assert outcome.unsealed == sealed_disk.EXPECTED_UNSEALED[outcome.attempt], outcome
    details = {o.attempt: o.detail for o in outcomes}
    assert "TPM_RC_POLICY_FAIL" in details["host boots its own UKI with Secure Boot off"]
    assert "rollback" in details["host hands back the older vTPM state file"]
    assert "does not authenticate" in details["host flips one bit of the vTPM state file"]
