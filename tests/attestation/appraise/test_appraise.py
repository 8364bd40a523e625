"""appraise(): verify, replay, validate — each check refuses what it must, with its finding."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from cvm.amd import DEFAULT_SEED
from cvm.amd.pki import Vendor
from cvm.attestation.launch_search import launch_explainer
from cvm.attestation.verifier.composite import Verdict, appraise
from cvm.attestation.verifier.explain import describe
from cvm.attestation.verifier.reference import ReferenceDocument
from cvm.attestation.verifier.rego_policy import RegoPolicy
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.jose import KeyPair
from cvm.errors import Finding, FormatError
from cvm.formats.kbs.evidence import CvmEvidence, report_data_for, runtime_digest
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.tcg.algorithm import SHA256
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tpm2.constants import TpmaObject
from cvm.formats.tpm2.public import Public
from cvm.image.measurement import VcpuConfig
from cvm.scenarios.attested_guest import (
    BOOT_ATTACKS,
    MILAN_SIGNATURE,
    OLD_TCB,
    Cvm,
    Owner,
    reference_json,
)

from .conftest import ISSUED, NOW

NONCE = "appraise nonce"


def _appraise(evidence: CvmEvidence, cvm: Cvm, reference: ReferenceDocument,
              roots: TrustRoots, policy: RegoPolicy | None = None, *, nonce: str = NONCE,
              challenge: str | None = NONCE, now: datetime = NOW, **kwargs: Any) -> Verdict:
    return appraise(evidence, reference, policy or RegoPolicy(), roots, now,
                    runtime_nonce=nonce, tee_pubkey=kwargs.pop("key", cvm.tee_key.public_jwk()),
                    challenge=challenge, **kwargs)


@pytest.fixture(scope="module")
def evidence(genuine: Cvm) -> CvmEvidence:
    return genuine.evidence(NONCE)


def _rules(verdict: Verdict) -> set[str]:
    return {finding.claim for finding in verdict.findings}


def test_genuine_is_affirmed_and_says_what_was_not_checked(
        genuine: Cvm, evidence: CvmEvidence, reference: ReferenceDocument,
        roots: TrustRoots) -> None:
    verdict = _appraise(evidence, genuine, reference, roots)
    assert verdict.accepted, verdict.findings
    assert "chip_id" in verdict.unchecked and "nonce_freshness" not in verdict.unchecked
    assert verdict.claims["pcrs"]["sha256"]["4"]
    app = EventType.EV_EFI_BOOT_SERVICES_APPLICATION
    assert verdict.claims["boot_images"] == [
        (event.digest(SHA256.alg_id) or b"").hex()
        for event in EventLog.parse(evidence.event_log).events
        if event.pcr_index == 4 and event.event_type == app] != []
    dry = _appraise(evidence, genuine, reference, roots, challenge=None)
    assert dry.accepted and "nonce_freshness" in dry.unchecked


def test_without_a_crl_the_vceks_revocation_is_said_to_be_unchecked(
        genuine: Cvm, evidence: CvmEvidence, reference: ReferenceDocument,
        roots: TrustRoots) -> None:
    assert evidence.crl is None
    verdict = _appraise(evidence, genuine, reference, roots)
    assert verdict.accepted and "vcek_revocation" in verdict.unchecked
    crl = Vendor("Milan", DEFAULT_SEED, clock=lambda: NOW - timedelta(days=1)).crl()
    with_crl = _appraise(replace(evidence, crl=crl), genuine, reference, roots)
    assert with_crl.accepted and "vcek_revocation" not in with_crl.unchecked
    assert with_crl.unchecked == tuple(name for name in verdict.unchecked
                                       if name != "vcek_revocation")


def test_verify_refusals(genuine: Cvm, evidence: CvmEvidence, reference: ReferenceDocument,
                         roots: TrustRoots) -> None:
    def rule(ev: CvmEvidence, **kwargs: Any) -> str:
        verdict = _appraise(ev, genuine, reference, roots, **kwargs)
        assert not verdict.accepted and verdict.step == "verify"
        (finding,) = verdict.findings
        return finding.claim

    assert rule(evidence, challenge="another challenge") == "verify.nonce"
    assert rule(evidence, nonce="fresh", challenge="fresh") == "verify.report_data"  # replayed
    assert rule(evidence, key=KeyPair.generate().public_jwk()) == "verify.report_data"
    other = genuine.evidence("other nonce")  # same AK (a primary), another quote
    assert rule(replace(evidence, quote_attest=other.quote_attest,
                        quote_signature=other.quote_signature)) == "verify.quote_nonce"
    flipped = bytearray(evidence.report)
    flipped[0x90] ^= 1  # MEASUREMENT
    assert rule(replace(evidence, report=bytes(flipped))) == "verify.report_signature"
    signature = bytearray(evidence.quote_signature)
    signature[-1] ^= 1
    assert rule(replace(evidence, quote_signature=bytes(signature))) == "verify.quote"
    ak = Public.from_bytes(evidence.ak_public)
    unrestricted = replace(ak, attributes=ak.attributes & ~TpmaObject.RESTRICTED)
    assert rule(replace(evidence, ak_public=unrestricted.to_bytes())) == "verify.quote"
    assert rule(replace(evidence, svsm_manifest=evidence.svsm_manifest[:-1])) == "verify.quote"
    (finding,) = _appraise(replace(evidence, quote_signature=bytes(signature)), genuine,
                           reference, roots).findings
    assert (finding.expected, finding.hint) == ("a quote signed by a TPM attestation key",
                                                "quote, ak_public or svsm_manifest")
    assert "signature" in finding.actual and finding.actual != "None"
    (finding,) = _appraise(replace(evidence, quote_attest=other.quote_attest,
                                   quote_signature=other.quote_signature), genuine, reference,
                           roots).findings
    ours = genuine.tee_key.public_jwk()
    assert finding == Finding("verify.quote_nonce", runtime_digest(NONCE, ours).hex(),
                              runtime_digest("other nonce", ours).hex(),
                              "the quote was made for another nonce or TEE key")
    key = KeyPair.generate().public_jwk()
    (finding,) = _appraise(evidence, genuine, reference, roots, key=key).findings
    bound = report_data_for(runtime_digest(NONCE, key), Public.from_bytes(evidence.ak_public)
                            .name(), evidence.svsm_manifest)
    assert finding == Finding("verify.report_data", bound.hex(), AttestationReport.from_bytes(
        evidence.report).report_data.hex(), "the report was made for another nonce, TEE key, AK "
        "or vTPM (replayed evidence?)")
    assert rule(replace(evidence, vcek=evidence.ask)) == "verify.chain"


def test_collateral_roots_expiry_and_revocation(
        genuine: Cvm, evidence: CvmEvidence, reference: ReferenceDocument,
        roots: TrustRoots) -> None:
    verdict = _appraise(evidence, genuine, reference, TrustRoots.amd())
    assert verdict.findings[0].claim == "verify.chain"
    assert "not among the trusted roots" in verdict.findings[0].actual
    late = _appraise(evidence, genuine, reference, roots, now=NOW + timedelta(days=3650))
    assert late.findings[0].claim == "verify.chain" and "not valid at" in late.findings[0].actual
    early = _appraise(evidence, genuine, reference, roots, now=ISSUED - timedelta(days=1))
    assert "not valid at" in early.findings[0].actual
    stale_crl = Vendor("Milan", DEFAULT_SEED, clock=lambda: ISSUED).crl()
    stale = _appraise(replace(evidence, crl=stale_crl), genuine, reference, roots)
    assert stale.findings[0].claim == "verify.chain" and "CRL" in stale.findings[0].actual
    vendor = Vendor("Milan", DEFAULT_SEED, clock=lambda: NOW - timedelta(days=1))
    assert _appraise(replace(evidence, crl=vendor.crl()), genuine, reference, roots).accepted
    vendor.revoke_ask()
    revoked = _appraise(replace(evidence, crl=vendor.crl()), genuine, reference, roots)
    assert revoked.findings[0].claim == "verify.chain"
    assert "revoked" in revoked.findings[0].actual


def test_replay_refuses_an_edited_log(genuine: Cvm, evidence: CvmEvidence,
                                      reference: ReferenceDocument, roots: TrustRoots) -> None:
    log = EventLog.parse(evidence.event_log)
    shorter = replace(log, events=log.events[:-1]).to_bytes()
    verdict = _appraise(replace(evidence, event_log=shorter), genuine, reference, roots)
    assert verdict.step == "replay" and _rules(verdict) == {"replay.pcr_digest"}
    broken = _appraise(replace(evidence, event_log=b"junk"), genuine, reference, roots)
    assert _rules(broken) == {"replay.event_log"}


def test_pcr_mismatch_names_the_event(owner: Owner, reference: ReferenceDocument,
                                      roots: TrustRoots) -> None:
    uki, varstore = BOOT_ATTACKS["host clears the varstore (Secure Boot off) and boots its "
                                 "UKI"](owner.image)
    cvm = owner.launch(5, uki=uki, varstore=varstore)
    verdict = _appraise(cvm.evidence(NONCE), cvm, reference, roots)
    assert verdict.step == "validate"
    assert _rules(verdict) == {"pcr.4", "pcr.7", "pcr.11", "boot_images"}
    pcr4 = next(f for f in verdict.findings if f.claim == "pcr.4")
    assert "EV_EFI_BOOT_SERVICES_APPLICATION" in pcr4.hint and "BOOTX64.EFI" in pcr4.hint
    pcr7 = next(f for f in verdict.findings if f.claim == "pcr.7")
    assert "SecureBoot" in pcr7.hint
    assert pcr4.expected == reference.pcrs[4].hex() if reference.pcrs else False
    accepted = reference.boot_images or ()
    app = EventType.EV_EFI_BOOT_SERVICES_APPLICATION
    foreign = [event for event in EventLog.parse(cvm.evidence(NONCE).event_log).events
               if event.pcr_index == 4 and event.event_type == app
               and event.digest(SHA256.alg_id) not in accepted]
    assert foreign and [f for f in verdict.findings if f.claim == "boot_images"] == [
        Finding("boot_images", " or ".join(d.hex() for d in accepted),
                (event.digest(SHA256.alg_id) or b"").hex(), describe(event))
        for event in foreign]


def test_launch_mismatch_names_the_nearby_configuration(
        owner: Owner, reference: ReferenceDocument, roots: TrustRoots) -> None:
    cvm = owner.launch(6, vcpus=4)
    explain = launch_explainer(owner.firmware, VcpuConfig(1, MILAN_SIGNATURE))
    verdict = _appraise(cvm.evidence(NONCE), cvm, reference, roots, explain_launch=explain)
    (finding,) = verdict.findings
    assert finding.claim == "measurement"
    assert finding.hint == "matches with 4 vCPUs instead of 1"
    assert explain(bytes(48)) is None
    assert "stale" in (explain(owner.measurement) or "")


def test_old_tcb_and_policy_bits(owner: Owner, reference: ReferenceDocument,
                                 roots: TrustRoots) -> None:
    old = owner.launch(7, OLD_TCB)
    verdict = _appraise(old.evidence(NONCE), old, reference, roots)
    assert _rules(verdict) == {"current_tcb", "committed_tcb", "reported_tcb", "launch_tcb"}
    debug = owner.launch(8, policy=0x30000 | 1 << 19)
    verdict = _appraise(debug.evidence(NONCE), debug, reference, roots)
    assert _rules(verdict) == {"policy.debug"}


def test_rego_policy_adds_rules(genuine: Cvm, evidence: CvmEvidence,
                                reference: ReferenceDocument, roots: TrustRoots) -> None:
    strict = RegoPolicy("""package cvm.policy
import rego.v1
default allow := false
deny contains {"rule": "tcb.snp", "expected": ">= 30", "actual": sprintf("%d", [snp]),
               "input": "reported_tcb"} if {
	snp := input.claims.reported_tcb.snp
	snp < 30
}
allow if count(deny) == 0
""", "strict")
    verdict = _appraise(evidence, genuine, reference, roots, policy=strict)
    assert not verdict.accepted and verdict.policy_id == "strict"
    (finding,) = verdict.findings
    assert (finding.claim, finding.expected, finding.actual) == ("tcb.snp", ">= 30", "22")
    permissive = RegoPolicy("package cvm.policy\nimport rego.v1\nallow := true\ndeny := set()\n")
    old_reference = ReferenceDocument.from_json({**reference.raw, "measurement": ["00" * 48]})
    refused = _appraise(evidence, genuine, old_reference, roots, policy=permissive)
    assert _rules(refused) == {"measurement"}  # reference findings deny whatever the policy
    closed = RegoPolicy("package cvm.policy\nimport rego.v1\ndefault allow := false\n"
                        "deny := set()\n", "closed")
    shut = _appraise(evidence, genuine, reference, roots, policy=closed)
    assert not shut.accepted and _rules(shut) == {"policy.allow"}


def test_reference_must_say_what_it_leaves_unchecked(owner: Owner) -> None:
    document = reference_json(owner)
    assert ReferenceDocument.from_json(document).unchecked
    silent = {k: v for k, v in document.items() if k != "host_data"}
    silent["unchecked"] = [n for n in document["unchecked"] if n != "host_data"]
    with pytest.raises(FormatError, match=r"unchecked.*host_data"):
        ReferenceDocument.from_json(silent)
    with pytest.raises(FormatError, match="both given"):
        ReferenceDocument.from_json({**document, "host_data": "00" * 32})
    with pytest.raises(FormatError, match="unknown field"):
        ReferenceDocument.from_json({**document, "measurment": []})
    with pytest.raises(FormatError, match="empty list"):
        ReferenceDocument.from_json({**document, "measurement": []})


def test_a_boot_image_without_a_sha256_digest_is_the_empty_digest() -> None:
    """A boot application in PCR 4 whose record carries no SHA-256 digest (a log of other
    banks) is claimed, and compared with the reference's images, as the empty digest: no
    accepted image matches it."""
    from cvm.attestation.verifier.composite import _boot_images
    from cvm.formats.tcg.algorithm import SHA1
    from cvm.formats.tcg.pcr_event import PcrEvent

    app = EventType.EV_EFI_BOOT_SERVICES_APPLICATION
    sha1_only = PcrEvent(4, app, ((SHA1.alg_id, b"\x11" * 20),), b"")
    both = PcrEvent(4, app, ((SHA1.alg_id, b"\x11" * 20), (SHA256.alg_id, b"\x22" * 32)), b"")
    elsewhere = PcrEvent(5, app, ((SHA256.alg_id, b"\x33" * 32),), b"")
    log = EventLog(None, (sha1_only, elsewhere, both))
    assert _boot_images(log) == [(b"", sha1_only), (b"\x22" * 32, both)]


def test_pcr_and_launch_findings_each_name_what_was_not_there(
        genuine: Cvm, evidence: CvmEvidence, reference: ReferenceDocument,
        roots: TrustRoots) -> None:
    """A reference PCR the quote does not cover, a PCR that differs when the reference has no
    event log to explain it, and a launch measurement no nearby configuration reproduces:
    each finding whole."""
    quoted = _appraise(evidence, genuine, reference, roots).claims["pcrs"]["sha256"]
    unquoted = next(pcr for pcr in range(24) if str(pcr) not in quoted)
    missing = replace(reference, pcrs={**(reference.pcrs or {}), unquoted: b"\x01" * 32})
    verdict = _appraise(evidence, genuine, missing, roots)
    assert verdict.step == "validate" and verdict.findings == (
        Finding(f"pcr.{unquoted}", "01" * 32, "not quoted", "quote"),)
    unexplained = replace(reference, pcrs={4: b"\x02" * 32}, reference_log=None)
    assert _appraise(evidence, genuine, unexplained, roots).findings == (
        Finding("pcr.4", "02" * 32, quoted["4"], "no reference event log to compare"),)
    two = replace(reference, boot_images=(b"\x04" * 32, b"\x05" * 32))
    images = _appraise(evidence, genuine, two, roots).findings
    assert images and {(f.claim, f.expected) for f in images} == {
        ("boot_images", "04" * 32 + " or " + "05" * 32)}
    other = replace(reference, report=replace(reference.report, measurement=b"\x03" * 48))
    (finding,) = _appraise(evidence, genuine, other, roots,
                           explain_launch=lambda measurement: None).findings
    assert (finding.claim, finding.hint) == (
        "measurement", "no nearby launch configuration reproduces it")


def test_a_refusal_carries_the_policy_id_and_the_claims_known_by_then(
        genuine: Cvm, evidence: CvmEvidence, reference: ReferenceDocument,
        roots: TrustRoots) -> None:
    """Refused at verify: no claim (nothing was authentic); refused at replay: the report's
    claims; either way the policy's id and what was left unchecked."""
    from cvm.attestation.verifier.composite import report_claims
    from cvm.attestation.verifier.pcr_replay import replayed_pcrs
    from cvm.attestation.verifier.quote import verify_quote
    from cvm.attestation.verifier.rego_policy import DEFAULT_POLICY

    named = RegoPolicy(DEFAULT_POLICY, "rollout")
    at_verify = _appraise(evidence, genuine, reference, roots, policy=named, challenge="other")
    assert (at_verify.step, at_verify.claims, at_verify.policy_id) == ("verify", {}, "rollout")
    assert at_verify.unchecked == (*reference.unchecked, "vcek_revocation")
    log = EventLog.parse(evidence.event_log)
    shorter = replace(log, events=log.events[:-1]).to_bytes()
    at_replay = _appraise(replace(evidence, event_log=shorter), genuine, reference, roots,
                          policy=named)
    assert (at_replay.step, at_replay.policy_id) == ("replay", "rollout")
    assert at_replay.claims == report_claims(AttestationReport.from_bytes(evidence.report))
    _, quote = verify_quote(evidence.ak_public, evidence.quote_attest, evidence.quote_signature)
    selection = quote.pcr_select.selections[0]
    values = replayed_pcrs(EventLog.parse(shorter), selection.bank, selection.pcrs)
    replayed = hashlib.new(selection.bank, b"".join(values[p] for p in selection.pcrs))
    assert at_replay.findings == (Finding(
        "replay.pcr_digest", quote.pcr_digest.hex(), replayed.hexdigest(),
        "the event log does not reproduce the quoted PCRs (edited or truncated log)"),)
    broken = _appraise(replace(evidence, event_log=b"junk"), genuine, reference, roots)
    assert (broken.step, broken.claims) == ("replay", at_replay.claims)
    (finding,) = broken.findings
    assert (finding.claim, finding.expected, finding.hint) == (
        "replay.event_log", "a TCG event log", "event_log")
    with pytest.raises(FormatError) as parsing:
        EventLog.parse(b"junk")
    assert finding.actual == str(parsing.value)
