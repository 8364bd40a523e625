"""Launch evidence (the SVSM's report alone) and its appraisal: each check refuses on its own,
with its finding; the document parses strictly."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cvm.amd.pki import Vendor
from cvm.attestation.verifier.launch_appraisal import appraise_launch
from cvm.attestation.verifier.reference import ReferenceDocument
from cvm.attestation.verifier.rego_policy import RegoPolicy
from cvm.attestation.verifier.trust import TrustRoots
from cvm.cli.main import execute
from cvm.crypto.jose import KeyPair
from cvm.errors import FormatError
from cvm.formats.kbs.json_fields import canonical
from cvm.formats.kbs.launch_evidence import (
    LAUNCH_EVIDENCE_VERSION,
    LaunchEvidence,
    launch_report_data,
)
from cvm.formats.kbs.rcar import Attestation
from cvm.scenarios.attested_guest import Owner, reference_json

NOW = datetime(2026, 6, 1, tzinfo=UTC)
NONCE = "bm9uY2Utb2YtdGhlLXNlc3Npb24"
KEY = KeyPair.generate().public_jwk()


@pytest.fixture(scope="module")
def evidence(owner: Owner) -> LaunchEvidence:
    cvm = owner.launch(0)
    report = cvm.guest.svsm.report(launch_report_data(NONCE, KEY))
    return LaunchEvidence(report, cvm.certificates.vcek, cvm.certificates.ask,
                          cvm.certificates.ark)


@pytest.fixture(scope="module")
def roots(owner: Owner) -> TrustRoots:
    return TrustRoots.of([owner.vendor.trust_anchor()], "emulated")


def _reference(owner: Owner, **changes: Any) -> ReferenceDocument:
    document = {**reference_json(owner), **changes}
    return ReferenceDocument.from_json(document)


def _appraise(evidence: LaunchEvidence, reference: ReferenceDocument, roots: TrustRoots,
              policy: RegoPolicy | None = None, nonce: str = NONCE,
              key: dict[str, str] = KEY, challenge: str | None = NONCE) -> Any:
    return appraise_launch(evidence, reference, policy or RegoPolicy(), roots, NOW,
                           runtime_nonce=nonce, tee_pubkey=key, challenge=challenge)


def test_genuine_launch_evidence_is_affirmed_and_says_what_it_could_not_check(
        owner: Owner, evidence: LaunchEvidence, roots: TrustRoots) -> None:
    verdict = _appraise(evidence, _reference(owner), roots)
    assert verdict.accepted and verdict.findings == ()
    assert {"pcrs", "boot_images"} <= set(verdict.unchecked)
    assert "nonce_freshness" not in verdict.unchecked
    assert verdict.claims["evidence"] == "launch" and verdict.claims["vmpl"] == 0
    dry_run = _appraise(evidence, _reference(owner), roots, challenge=None)
    assert dry_run.accepted and "nonce_freshness" in dry_run.unchecked


def _rules(verdict: Any) -> list[str]:
    return [finding.claim for finding in verdict.findings]


def test_another_sessions_nonce_is_refused(owner: Owner, evidence: LaunchEvidence,
                                           roots: TrustRoots) -> None:
    verdict = _appraise(evidence, _reference(owner), roots, challenge="another-nonce")
    assert (verdict.step, _rules(verdict)) == ("verify", ["verify.nonce"])


def test_a_chain_to_an_untrusted_root_is_refused(owner: Owner, evidence: LaunchEvidence) -> None:
    stranger = Vendor("Milan", b"another vendor seed")
    roots = TrustRoots.of([stranger.trust_anchor()], "emulated")
    assert _rules(_appraise(evidence, _reference(owner), roots)) == ["verify.chain"]


def test_a_tampered_report_is_refused(owner: Owner, evidence: LaunchEvidence,
                                      roots: TrustRoots) -> None:
    report = bytearray(evidence.report)
    report[0x90] ^= 1  # MEASUREMENT
    verdict = _appraise(replace(evidence, report=bytes(report)), _reference(owner), roots)
    assert _rules(verdict) == ["verify.report_signature"]


@pytest.mark.parametrize("what", ["nonce", "key"])
def test_a_report_for_another_nonce_or_tee_key_is_refused(
        owner: Owner, evidence: LaunchEvidence, roots: TrustRoots, what: str) -> None:
    nonce, key = (("other", KEY) if what == "nonce" else (NONCE, KeyPair.generate().public_jwk()))
    verdict = _appraise(evidence, _reference(owner), roots, nonce=nonce, key=key,
                        challenge=nonce)
    assert _rules(verdict) == ["verify.report_data"]


def test_another_measurement_is_refused(owner: Owner, evidence: LaunchEvidence,
                                        roots: TrustRoots) -> None:
    verdict = _appraise(evidence, _reference(owner, measurement=["ab" * 48]), roots)
    assert (verdict.step, _rules(verdict)) == ("validate", ["measurement"])
    assert verdict.findings[0].actual == evidence.report[0x90:0xC0].hex()


def test_launch_evidence_must_come_from_vmpl0_even_if_the_reference_leaves_vmpl_open(
        owner: Owner, evidence: LaunchEvidence, roots: TrustRoots) -> None:
    cvm = owner.launch(0)
    document = reference_json(owner)
    document.pop("vmpl")
    document["unchecked"] = [*document["unchecked"], "vmpl"]
    reference = ReferenceDocument.from_json(document)
    assert _appraise(evidence, reference, roots).accepted  # VMPL0: accepted without a value
    at_vmpl1 = cvm.guest.svsm.at_vmpl0(
        lambda: cvm.guest.svsm.requester.report(launch_report_data(NONCE, KEY), 1).report)
    verdict = _appraise(replace(evidence, report=at_vmpl1, vcek=cvm.certificates.vcek),
                        reference, roots)
    assert _rules(verdict) == ["vmpl"]


def test_the_policy_may_add_a_denial(owner: Owner, evidence: LaunchEvidence,
                                     roots: TrustRoots) -> None:
    policy = RegoPolicy('package cvm.policy\nimport rego.v1\ndefault allow := false\n'
                        'deny contains {"rule": "no-launch", "expected": "composite", '
                        '"actual": input.claims.evidence, "input": "evidence"} if {\n'
                        '\tinput.claims.evidence == "launch"\n}\n'
                        'allow if count(deny) == 0\n', "no-launch")
    verdict = _appraise(evidence, _reference(owner), roots, policy)
    assert _rules(verdict) == ["no-launch"] and not verdict.accepted


def test_launch_report_data_is_the_runtime_digest_padded() -> None:
    data = launch_report_data(NONCE, KEY)
    assert len(data) == 64 and data[48:] == bytes(16)
    assert data[:48] == hashlib.sha384(canonical({"nonce": NONCE, "tee-pubkey": KEY})).digest()


def test_the_document_round_trips_and_is_told_apart_from_composite_evidence(
        evidence: LaunchEvidence) -> None:
    assert LaunchEvidence.from_json(evidence.to_json()) == evidence
    with_crl = replace(evidence, crl=b"\x30\x00")
    assert LaunchEvidence.from_json(with_crl.to_json()) == with_crl
    payload = {"runtime-data": {"nonce": NONCE, "tee-pubkey": KEY},
               "tee-evidence": {"primary_evidence": evidence.to_json()}}
    assert Attestation.from_json(payload).evidence == evidence
    payload["tee-evidence"]["primary_evidence"] = {**evidence.to_json(),
                                                    "version": "cvm-evidence/1"}
    with pytest.raises(FormatError, match="missing"):  # parsed as composite: parts missing
        Attestation.from_json(payload)


@pytest.mark.parametrize(("change", "message"), [
    ({"version": "cvm-launch-evidence/2"}, "version"),
    ({"extra": "x"}, "unknown field extra"),
    ({"report": base64.b64encode(bytes(100)).decode()}, "report"),
    ({"report": "not base64!"}, "base64"),
    ({"certificates": {"vcek": "", "ask": ""}}, "missing ark"),
])
def test_the_document_is_parsed_strictly(evidence: LaunchEvidence, change: dict[str, Any],
                                         message: str) -> None:
    document = {**evidence.to_json(), **change}
    with pytest.raises(FormatError, match=message):
        LaunchEvidence.from_json(document)


def test_the_version_names_the_launch_document(evidence: LaunchEvidence) -> None:
    assert evidence.to_json()["version"] == LAUNCH_EVIDENCE_VERSION == "cvm-launch-evidence/1"


def test_cvm_attest_appraise_dry_runs_launch_evidence(
        owner: Owner, evidence: LaunchEvidence, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    payload = tmp_path / "launch.json"
    payload.write_text(json.dumps({"runtime-data": {"nonce": NONCE, "tee-pubkey": KEY},
                                   "tee-evidence": {"primary_evidence": evidence.to_json()}}))
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps(reference_json(owner)))
    argv = ["attest", "appraise", str(payload), "--reference", str(reference), "--nonce", NONCE,
            "--now", NOW.isoformat()]
    assert execute(argv) == 0
    out = capsys.readouterr().out
    assert "verdict: affirming" in out and "pcrs, boot_images" in out
    reference.write_text(json.dumps({**reference_json(owner), "measurement": ["cd" * 48]}))
    assert execute(argv) == 67
    assert "measurement: expected " + "cd" * 48 in capsys.readouterr().out
