"""Attacks at launch: the host changes what it launches, or the firmware it launches it on.

The host controls the launch entirely — the firmware bytes it hands the PSP, the guest policy,
which PSP firmware is running. It cannot change what the PSP measures and signs: an SNP guest's
report carries the launch digest, the policy and the TCB, and the relying party appraises it
before it releases the owner's secret (the vTPM's state key). ``plain``, ``sev`` and ``sev-es``
give the relying party nothing it can appraise before the secret goes to the host's vTPM; that
is what these modes cost.
"""

from __future__ import annotations

from cvm.host.adversary.lab import Lab, Release
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

APPRAISED = by(Mechanism.ATTESTATION)
UNGATED = ok("nothing appraises the launch before the owner's secrets reach the host's vTPM")
NO_PSP = na("a plain VM involves no PSP and no policy")
FIRMWARE_BIT = 0x1234 * 8 + 3


def judge_release(release: Release, expected_claim: str) -> Observed:
    """What came of a launch: the secret released, or refused by the appraisal (any failed
    claim is the attestation's doing); a refusal no appraisal made names no mechanism, so it
    matches no expectation."""
    if release.released:
        how = "after an appraisal" if release.gated else "with nothing to appraise"
        return succeeded(f"the owner's secret was released {how}")
    if not release.claims:
        return Observed(Verdict.BLOCKED, f"refused, but by no appraisal: {release.detail}")
    if expected_claim in release.claims:
        return blocked(Mechanism.ATTESTATION, f"refused: {', '.join(release.claims)}")
    return blocked(Mechanism.ATTESTATION, f"refused for another claim: "
                   f"{', '.join(release.claims)} ({release.detail})")


def tamper_firmware(lab: Lab) -> Observed:
    return judge_release(lab.launch(flip_firmware_bit=FIRMWARE_BIT), "measurement")


def forge_reference_values(lab: Lab) -> Observed:
    return judge_release(lab.launch(flip_firmware_bit=FIRMWARE_BIT, forge_reference=True),
                         "measurement")


def debug_policy(lab: Lab) -> Observed:
    if not lab.mode.encrypts_memory:
        return not_applicable("a plain VM has no guest policy: the host reads it anyway")
    return judge_release(lab.launch(debug=True), "policy.debug")


def psp_rollback(lab: Lab) -> Observed:
    if not lab.mode.encrypts_memory:
        return not_applicable("a plain VM does not involve the PSP")
    return judge_release(lab.launch(rollback=True), "reported_tcb")


# -- the declarations: the expected outcome in plain, sev, sev-es and sev-snp -------------------
ATTACKS = (
    declare(
        "tamper-firmware", Family.LAUNCH, "flip one bit of the firmware the host launches",
        (UNGATED, UNGATED, UNGATED, APPRAISED),
        tamper_firmware,
    ),
    declare(
        "forge-reference-values", Family.LAUNCH,
        "flip a bit of the firmware and write the digest the PSP measures of it into the "
        "reference values the host was handed", (UNGATED, UNGATED, UNGATED, APPRAISED),
        forge_reference_values,
    ),
    declare(
        "debug-policy", Family.LAUNCH,
        "launch with a policy that allows debugging (the PSP would decrypt pages for the host)",
        (NO_PSP, UNGATED, UNGATED, APPRAISED),
        debug_policy,
    ),
    declare(
        "psp-rollback", Family.LAUNCH,
        "flash older PSP firmware (lower TCB) and launch on it",
        (NO_PSP, UNGATED, UNGATED, APPRAISED),
        psp_rollback,
    ),
)
