"""Appraising composite evidence (SNP report + vTPM quote + event log) in three steps.

``appraise(evidence, reference, policy, roots, now)`` returns a :class:`Verdict`:

1. **verify** — is it authentic and fresh? The ARK -> ASK -> VCEK chain to a trusted root at
   ``now`` (CRL honoured), the report's signature, the quote's signature by an attestation
   key, the AK and the runtime data (nonce, TEE key) bound into REPORT_DATA through the SVSM
   manifest, the quote's extraData, and the runtime nonce equal to the challenge's.
2. **replay** — the event log reproduces the quoted PCRs.
3. **validate** — the claims against the reference values (launch measurement, PCRs,
   event-log claims, minimum TCB, guest policy bits, VMPL, ...) and the Rego policy.

Appraisal stops at the first step that fails: claims of inauthentic evidence are not worth
judging. Every finding names the rule, what was expected, what was found, and the input that
differs — the event of the log for a PCR, the nearby launch configuration for a measurement
(through the injected ``explain_launch``), the certificate for the chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cvm.attestation.verifier.chain import ChainVerifier
from cvm.attestation.verifier.explain import describe, explain_pcr
from cvm.attestation.verifier.pcr_replay import ReplayCache, quoted_digest_matches
from cvm.attestation.verifier.policy import validate
from cvm.attestation.verifier.quote import verify_quote
from cvm.attestation.verifier.reference import ReferenceDocument
from cvm.attestation.verifier.rego_policy import RegoPolicy
from cvm.attestation.verifier.report import verify_report
from cvm.attestation.verifier.trust import TrustRoots
from cvm.errors import Finding, FormatError, VerificationError
from cvm.formats.kbs.evidence import CvmEvidence, report_data_for, runtime_digest
from cvm.formats.kbs.launch_evidence import LaunchEvidence
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.tcg.algorithm import SHA256
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tpm2.public import Public

LaunchExplainer = Callable[[bytes], str | None]
REPLAYS = ReplayCache()
"""This process's parsed and replayed event logs (a fleet presents few distinct ones)."""
AFFIRMING, CONTRAINDICATED = "affirming", "contraindicated"
BOOT_IMAGE_PCR = 4


@dataclass(frozen=True)
class Verdict:
    """The appraisal's outcome: accepted or not, the step that refused, every finding."""

    status: str
    step: str
    findings: tuple[Finding, ...]
    unchecked: tuple[str, ...]
    claims: dict[str, Any] = field(default_factory=dict, compare=False)
    policy_id: str = "default"

    @property
    def accepted(self) -> bool:
        return is_affirming(self.status)

    def findings_json(self) -> list[dict[str, str]]:
        return [{"rule": f.claim, "expected": f.expected, "actual": f.actual, "input": f.hint}
                for f in self.findings]


def is_affirming(status: str) -> bool:
    """Whether an appraisal's status accepts the evidence (a plain function, so that mutation
    testing reaches the decision :attr:`Verdict.accepted` makes)."""
    return status == AFFIRMING


def _tcb(tcb: Any) -> dict[str, int]:
    return dict(tcb.components())


def report_claims(report: AttestationReport) -> dict[str, Any]:
    policy = report.policy
    return {
        "measurement": report.measurement.hex(), "host_data": report.host_data.hex(),
        "report_data": report.report_data.hex(), "chip_id": report.chip_id.hex(),
        "id_key_digest": report.id_key_digest.hex(), "vmpl": report.vmpl,
        "guest_svn": report.guest_svn, "firmware": f"{report.current_major}.{report.current_minor}",
        "reported_tcb": _tcb(report.reported_tcb), "current_tcb": _tcb(report.current_tcb),
        "committed_tcb": _tcb(report.committed_tcb), "launch_tcb": _tcb(report.launch_tcb),
        "policy": {"debug": policy.debug, "migrate_ma": policy.migrate_ma, "smt": policy.smt,
                   "single_socket": policy.single_socket},
    }


class _RefusedError(Exception):
    def __init__(self, finding: Finding) -> None:
        self.finding = finding


def verify_signed_report(evidence: CvmEvidence | LaunchEvidence, chains: ChainVerifier,
                         now: datetime, challenge: str | None,
                         runtime_nonce: str) -> AttestationReport | Finding:
    """The verify steps both kinds of evidence take: the runtime nonce is the challenge (when
    there is one), the VCEK chains to a trusted root at ``now``, the report is signed by the
    VCEK. The report, or the finding of the first step that failed."""
    if challenge is not None and runtime_nonce != challenge:
        return Finding("verify.nonce", challenge, runtime_nonce,
                       "runtime-data.nonce is not this session's challenge")
    try:
        chain = chains.verify(evidence.vcek, evidence.ask, evidence.ark, now, evidence.crl)
    except (VerificationError, FormatError) as error:
        return Finding("verify.chain", "ARK -> ASK -> VCEK to a trusted root, valid at "
                       f"{now.isoformat()}", str(error), "certificates")
    try:
        return verify_report(evidence.report, chain)
    except (VerificationError, FormatError) as error:
        return Finding("verify.report_signature", "signed by the VCEK", str(error), "report")


def _verify(evidence: CvmEvidence, chains: ChainVerifier, now: datetime, challenge: str | None,
            runtime_nonce: str, tee_pubkey: dict[str, Any]) -> tuple[AttestationReport, Any]:
    report = verify_signed_report(evidence, chains, now, challenge, runtime_nonce)
    if isinstance(report, Finding):
        raise _RefusedError(report)
    try:
        ak, quote = verify_quote(evidence.ak_public, evidence.quote_attest,
                                 evidence.quote_signature)
        Public.from_bytes(evidence.svsm_manifest)
    except (VerificationError, FormatError) as error:
        raise _RefusedError(Finding("verify.quote", "a quote signed by a TPM attestation key",
                               str(error), "quote, ak_public or svsm_manifest")) from None
    digest = runtime_digest(runtime_nonce, tee_pubkey)
    bound = report_data_for(digest, ak.name(), evidence.svsm_manifest)
    if report.report_data != bound:
        raise _RefusedError(Finding(
            "verify.report_data", bound.hex(), report.report_data.hex(),
            "the report was made for another nonce, TEE key, AK or vTPM (replayed evidence?)"))
    if quote.extra_data != digest:
        raise _RefusedError(Finding("verify.quote_nonce", digest.hex(), quote.extra_data.hex(),
                               "the quote was made for another nonce or TEE key"))
    return report, quote


def _boot_images(log: EventLog) -> list[tuple[bytes, PcrEvent]]:
    return [
        (event.digest(SHA256.alg_id) or b"", event) for event in log.events
        if event.pcr_index == BOOT_IMAGE_PCR
        and event.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION
    ]


def _validate(report: AttestationReport, pcrs: dict[int, bytes], log: EventLog,
              images: list[tuple[bytes, PcrEvent]], reference: ReferenceDocument,
              explain_launch: LaunchExplainer | None) -> list[Finding]:
    findings = []
    for found in validate(report, reference.report):
        if found.claim == "measurement" and explain_launch is not None:
            hint = explain_launch(report.measurement)
            found = Finding(found.claim, found.expected, found.actual,  # noqa: PLW2901
                            hint or "no nearby launch configuration reproduces it")
        findings.append(found)
    for pcr, expected in sorted((reference.pcrs or {}).items()):
        actual = pcrs.get(pcr)
        if actual is None:
            findings.append(Finding(f"pcr.{pcr}", expected.hex(), "not quoted", "quote"))
        elif actual != expected:
            hint = (explain_pcr(log, EventLog.parse(reference.reference_log), pcr,
                                SHA256.alg_id)
                    if reference.reference_log is not None
                    else "no reference event log to compare")
            findings.append(Finding(f"pcr.{pcr}", expected.hex(), actual.hex(), hint))
    if reference.boot_images is not None:
        accepted = reference.boot_images
        for digest, event in images:
            if digest not in accepted:
                findings.append(Finding("boot_images", " or ".join(d.hex() for d in accepted),
                                        digest.hex(), describe(event)))
    return findings


def decide(findings: list[Finding], claims: dict[str, Any], unchecked: tuple[str, ...],
           policy: RegoPolicy) -> Verdict:
    """The validate step's verdict: the reference values' ``findings`` and the Rego policy's
    decision over the claims (its deny rules add findings; ``allow`` false without any
    finding is one of its own)."""
    rows = [{"rule": f.claim, "expected": f.expected, "actual": f.actual, "input": f.hint}
            for f in findings]
    decision = policy.evaluate({"claims": claims, "findings": rows,
                                "unchecked": list(unchecked)})
    found = list(findings)
    seen = {(f.claim, f.expected, f.actual) for f in found}
    for row in decision.deny:
        if (row["rule"], row["expected"], row["actual"]) not in seen:
            found.append(Finding(row["rule"], row["expected"], row["actual"], row["input"]))
    if not decision.allow and not found:
        found.append(Finding("policy.allow", "true", "false",
                             f"policy {policy.policy_id!r} denies without a deny rule"))
    accepted = decision.allow and not found
    return Verdict(AFFIRMING if accepted else CONTRAINDICATED, "" if accepted else "validate",
                   tuple(found), unchecked, claims, policy.policy_id)


def not_checked_here(evidence: CvmEvidence | LaunchEvidence, challenge: str | None
                     ) -> tuple[str, ...]:
    """What this appraisal leaves unchecked whatever the reference values say: the nonce's
    freshness without a challenge (a dry run), the VCEK's revocation without a CRL (neither the
    evidence nor the caller gave AMD's)."""
    return ((("nonce_freshness",) if challenge is None else ())
            + (("vcek_revocation",) if evidence.crl is None else ()))


def appraise(
    evidence: CvmEvidence,
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
    """Verify, replay, validate. ``challenge`` is the nonce the verifier issued (None: the
    dry run does not check freshness, and says so in ``unchecked``)."""
    unchecked = reference.unchecked + not_checked_here(evidence, challenge)

    def refused(step: str, finding: Finding, claims: dict[str, Any] | None = None) -> Verdict:
        return Verdict(CONTRAINDICATED, step, (finding,), unchecked, claims or {},
                       policy.policy_id)

    try:
        report, quote = _verify(evidence, chains or ChainVerifier(roots), now, challenge,
                                runtime_nonce, tee_pubkey)
    except _RefusedError as stop:
        return refused("verify", stop.finding)
    claims = report_claims(report)
    try:
        selection = quote.pcr_select.selections[0]
        log, pcrs = REPLAYS.replay(evidence.event_log, selection.bank, selection.pcrs)
        replayed, matches = quoted_digest_matches(quote, pcrs)
    except FormatError as error:
        return refused("replay", Finding("replay.event_log", "a TCG event log", str(error),
                                         "event_log"), claims)
    if not matches:
        return refused("replay", Finding(
            "replay.pcr_digest", quote.pcr_digest.hex(), replayed.hex(),
            "the event log does not reproduce the quoted PCRs (edited or truncated log)"),
            claims)
    claims["pcrs"] = {selection.bank: {str(p): v.hex() for p, v in pcrs.items()}}
    images = _boot_images(log)
    claims["boot_images"] = [digest.hex() for digest, _ in images]
    findings = _validate(report, pcrs, log, images, reference, explain_launch)
    return decide(findings, claims, unchecked, policy)
