"""Appraising launch evidence — the SVSM's report before its vTPM runs — in two steps.

``appraise_launch(evidence, reference, policy, roots, now)`` returns the same
:class:`~cvm.attestation.verifier.composite.Verdict` as composite appraisal:

1. **verify** — the runtime nonce is the session's challenge; ARK -> ASK -> VCEK to a trusted
   root at ``now`` (CRL honoured); the report signed by the VCEK; ``REPORT_DATA`` equal to
   the runtime digest padded to 64 bytes (:func:`cvm.formats.kbs.launch_evidence
   .launch_report_data`: the nonce and the TEE key the secret is wrapped to).
2. **validate** — the report's claims against the reference values (launch measurement, minimum
   TCB, guest policy bits, ...), the report made at VMPL0 (whatever the reference says: launch
   evidence is the SVSM's own, the guest OS runs above VMPL0), and the Rego policy.

There is no replay step: a launch report carries no PCRs and no event log, so the reference's
``pcrs`` and ``boot_images`` are listed as unchecked in the verdict, and its claims say
``"evidence": "launch"`` — the broker opens only launch resources (the vTPM state key) to such
a verdict; what the boot measures later is enforced by the vTPM's sealing policies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cvm.attestation.verifier.chain import ChainVerifier
from cvm.attestation.verifier.composite import (
    CONTRAINDICATED,
    LaunchExplainer,
    Verdict,
    decide,
    not_checked_here,
    report_claims,
    verify_signed_report,
)
from cvm.attestation.verifier.policy import validate
from cvm.attestation.verifier.reference import ReferenceDocument
from cvm.attestation.verifier.rego_policy import RegoPolicy
from cvm.attestation.verifier.trust import TrustRoots
from cvm.errors import Finding
from cvm.formats.kbs.launch_evidence import LaunchEvidence, launch_report_data
from cvm.formats.snp.attestation_report import AttestationReport

LAUNCH = "launch"
LAUNCH_VMPL = 0
NOT_IN_A_LAUNCH_REPORT = ("pcrs", "boot_images")


def _verify(evidence: LaunchEvidence, chains: ChainVerifier, now: datetime,
            challenge: str | None, runtime_nonce: str, tee_pubkey: dict[str, Any]
            ) -> AttestationReport | Finding:
    report = verify_signed_report(evidence, chains, now, challenge, runtime_nonce)
    if isinstance(report, Finding):
        return report
    bound = launch_report_data(runtime_nonce, tee_pubkey)
    if report.report_data != bound:
        return Finding("verify.report_data", bound.hex(), report.report_data.hex(),
                       "the report was made for another nonce or TEE key (replayed evidence?)")
    return report


def _validate(report: AttestationReport, reference: ReferenceDocument,
              explain_launch: LaunchExplainer | None) -> list[Finding]:
    findings = []
    for found in validate(report, reference.report):
        if found.claim == "measurement" and explain_launch is not None:
            hint = explain_launch(report.measurement)
            found = Finding(found.claim, found.expected, found.actual,  # noqa: PLW2901
                            hint or "no nearby launch configuration reproduces it")
        findings.append(found)
    if report.vmpl != LAUNCH_VMPL and not any(f.claim == "vmpl" for f in findings):
        findings.append(Finding("vmpl", str(LAUNCH_VMPL), str(report.vmpl),
                                "launch evidence is the SVSM's, made at VMPL0"))
    return findings


def appraise_launch(
    evidence: LaunchEvidence,
    reference: ReferenceDocument,
    policy: RegoPolicy,
    roots: TrustRoots,
    now: datetime,
    *,
    runtime_nonce: str,
    tee_pubkey: dict[str, Any],
    challenge: str | None = None,
    chains: ChainVerifier | None = None,
    explain_launch: LaunchExplainer | None = None,
) -> Verdict:
    """Verify, then validate. ``challenge`` None: freshness is not checked (and is listed)."""
    unchecked = (reference.unchecked
                 + tuple(name for name in NOT_IN_A_LAUNCH_REPORT
                         if name not in reference.unchecked)
                 + not_checked_here(evidence, challenge))
    verified = _verify(evidence, chains or ChainVerifier(roots), now, challenge,
                       runtime_nonce, tee_pubkey)
    if isinstance(verified, Finding):
        return Verdict(CONTRAINDICATED, "verify", (verified,), unchecked,
                       {"evidence": LAUNCH}, policy.policy_id)
    claims = {**report_claims(verified), "evidence": LAUNCH}
    return decide(_validate(verified, reference, explain_launch), claims, unchecked, policy)
