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

from cvm.amd import DEFAULT_SEED
from cvm.amd.pki import Vendor
from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.attestation.kbs.launch import (
    ATTESTED,
    LAUNCH_ATTESTED,
    appraise_payload,
    is_launch,
    session_state,
)
from cvm.attestation.launch_search import launch_explainer
from cvm.attestation.verifier.chain import ChainVerifier
from cvm.attestation.verifier.launch_appraisal import appraise_launch
from cvm.attestation.verifier.reference import ReferenceDocument
from cvm.attestation.verifier.rego_policy import DEFAULT_POLICY, RegoPolicy
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
from cvm.image.measurement import VcpuConfig
from cvm.scenarios.attested_guest import MILAN_SIGNATURE, Owner, reference_json

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
    assert ("vcek_revocation" in verdict.unchecked) is (evidence.crl is None)


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
    assert LaunchEvidence.from_json(json.loads(evidence.to_bytes())) == evidence
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
            "--now", NOW.isoformat(), "--trust", "emulated"]
    assert execute(argv) == 0
    out = capsys.readouterr().out
    assert "verdict: affirming" in out and "pcrs, boot_images" in out
    reference.write_text(json.dumps({**reference_json(owner), "measurement": ["cd" * 48]}))
    assert execute(argv) == 67
    assert "measurement: expected " + "cd" * 48 in capsys.readouterr().out


def _payload(path: Path, evidence: LaunchEvidence) -> Path:
    path.write_text(json.dumps({"runtime-data": {"nonce": NONCE, "tee-pubkey": KEY},
                                "tee-evidence": {"primary_evidence": evidence.to_json()}}))
    return path


def test_cvm_attest_appraise_gives_launch_evidence_its_challenge_time_and_firmware(
        owner: Owner, evidence: LaunchEvidence, tmp_path: Path) -> None:
    """What the command was given reaches the launch appraisal as it reaches the composite."""
    from cvm.cli import attest

    payload = _payload(tmp_path / "launch.json", evidence)
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps(reference_json(owner)))
    assert attest.appraisal(payload, reference, nonce=NONCE, trust="emulated",
                            now=NOW.isoformat()).accepted
    other = attest.appraisal(payload, reference, nonce="another", trust="emulated",
                             now=NOW.isoformat())
    assert not other.accepted and _rules(other) == ["verify.nonce"]
    assert attest.exit_code(other) == 66
    late = attest.appraisal(payload, reference, nonce=NONCE, trust="emulated",
                            now="2200-01-01T00:00:00")
    assert not late.accepted and late.step == "verify"
    cvm = owner.launch(0, vcpus=2)
    wide = LaunchEvidence(cvm.guest.svsm.report(launch_report_data(NONCE, KEY)),
                          cvm.certificates.vcek, cvm.certificates.ask, cvm.certificates.ark)
    firmware = tmp_path / "firmware.fd"
    firmware.write_bytes(owner.firmware)
    verdict = attest.appraisal(_payload(tmp_path / "wide.json", wide), reference, nonce=NONCE,
                               trust="emulated", now=NOW.isoformat(), firmware=firmware)
    assert [(f.claim, f.hint) for f in verdict.findings] == [
        ("measurement", "matches with 2 vCPUs instead of 1")]


def _vmpl1(owner: Owner, evidence: LaunchEvidence) -> LaunchEvidence:
    cvm = owner.launch(0)
    report = cvm.guest.svsm.at_vmpl0(
        lambda: cvm.guest.svsm.requester.report(launch_report_data(NONCE, KEY), 1).report)
    return replace(evidence, report=report)


def test_a_vmpl1_report_gets_one_vmpl_finding_whoever_names_it(
        owner: Owner, evidence: LaunchEvidence, roots: TrustRoots) -> None:
    at_vmpl1 = _vmpl1(owner, evidence)
    by_reference = _appraise(at_vmpl1, _reference(owner), roots)  # the reference says vmpl 0
    assert [(f.claim, f.expected, f.actual) for f in by_reference.findings] == [
        ("vmpl", "0", "1")]
    document = reference_json(owner)
    document.pop("vmpl")
    document["unchecked"] = [*document["unchecked"], "vmpl"]
    by_rule = _appraise(at_vmpl1, ReferenceDocument.from_json(document), roots)
    (finding,) = by_rule.findings
    assert (finding.claim, finding.expected, finding.actual) == ("vmpl", "0", "1")
    assert "SVSM" in finding.hint


def test_a_measurement_finding_names_the_nearby_launch(owner: Owner,
                                                       roots: TrustRoots) -> None:
    cvm = owner.launch(0, vcpus=2)
    report = cvm.guest.svsm.report(launch_report_data(NONCE, KEY))
    evidence = LaunchEvidence(report, cvm.certificates.vcek, cvm.certificates.ask,
                              cvm.certificates.ark)
    explain = launch_explainer(owner.firmware, VcpuConfig(1, MILAN_SIGNATURE))
    verdict = appraise_launch(evidence, _reference(owner), RegoPolicy(), roots, NOW,
                              runtime_nonce=NONCE, tee_pubkey=KEY, challenge=NONCE,
                              explain_launch=explain)
    (finding,) = verdict.findings
    assert (finding.claim, finding.expected, finding.actual) == (
        "measurement", owner.measurement.hex(), report[0x90:0xC0].hex())
    assert finding.hint == "matches with 2 vCPUs instead of 1"
    unexplained = appraise_launch(evidence, _reference(owner), RegoPolicy(), roots, NOW,
                                  runtime_nonce=NONCE, tee_pubkey=KEY, challenge=NONCE,
                                  explain_launch=lambda _: None)
    assert unexplained.findings[0].hint == "no nearby launch configuration reproduces it"


def test_only_the_measurement_is_explained(owner: Owner, evidence: LaunchEvidence,
                                           roots: TrustRoots) -> None:
    verdict = appraise_launch(_vmpl1(owner, evidence), _reference(owner), RegoPolicy(), roots,
                              NOW, runtime_nonce=NONCE, tee_pubkey=KEY, challenge=NONCE,
                              explain_launch=lambda _: "explained")
    assert [f.hint for f in verdict.findings] != ["explained"]


@pytest.mark.parametrize(("field", "size", "message"), [
    ("vcek", (16 << 10) + 3, "x.certificates.vcek: longer than 16384 bytes"),
    ("ask", (16 << 10) + 3, "x.certificates.ask: longer than 16384 bytes"),
    ("ark", (16 << 10) + 3, "x.certificates.ark: longer than 16384 bytes"),
    ("crl", (64 << 10) + 3, "x.crl: longer than 65536 bytes"),
    ("report", 0x4A0 + 3, "x.report: longer than 1184 bytes"),
])
def test_every_field_has_its_size_bound_and_its_name(evidence: LaunchEvidence, field: str,
                                                      size: int, message: str) -> None:
    document = evidence.to_json()
    blob = base64.b64encode(bytes(size)).decode()
    if field in ("vcek", "ask", "ark"):
        document["certificates"] = {**document["certificates"], field: blob}
    else:
        document[field] = blob
    with pytest.raises(FormatError) as refused:
        LaunchEvidence.from_json(document, "x")
    assert str(refused.value) == message


@pytest.mark.parametrize(("document", "message"), [
    ("not an object", "x: "),
    ({"version": LAUNCH_EVIDENCE_VERSION}, "x: missing"),
    ({"version": LAUNCH_EVIDENCE_VERSION, "report": "", "certificates": []}, "x.certificates"),
    ({"version": LAUNCH_EVIDENCE_VERSION, "report": "",
      "certificates": {"vcek": "", "ask": "", "ark": "", "x": ""}}, "x.certificates: unknown"),
])
def test_errors_name_where_they_are(document: object, message: str) -> None:
    with pytest.raises(FormatError) as refused:
        LaunchEvidence.from_json(document, "x")
    assert str(refused.value).startswith(message)


def test_the_payload_is_appraised_as_what_it_carries(owner: Owner, evidence: LaunchEvidence,
                                                     roots: TrustRoots) -> None:
    chains = ChainVerifier(roots)
    reference = _reference(owner)
    launch = Attestation(NONCE, KEY, evidence)
    verdict = appraise_payload(launch, reference, RegoPolicy(), roots, NOW, NONCE, chains)
    assert verdict.accepted and is_launch(verdict.claims)
    assert session_state(verdict) == LAUNCH_ATTESTED
    cvm = owner.launch(0)
    composite = Attestation(NONCE, cvm.tee_key.public_jwk(), cvm.evidence(NONCE))
    verdict = appraise_payload(composite, reference, RegoPolicy(), roots, NOW, NONCE, chains)
    assert verdict.accepted and not is_launch(verdict.claims) and "pcrs" in verdict.claims
    assert session_state(verdict) == ATTESTED
    for payload in (launch, composite):
        stale = appraise_payload(payload, reference, RegoPolicy(), roots, NOW, "another",
                                 chains)
        assert [f.claim for f in stale.findings] == ["verify.nonce"]
    strangers = TrustRoots.of([Vendor("Milan", b"another vendor seed").trust_anchor()],
                              "emulated")
    for payload in (launch, composite):
        verdict = appraise_payload(payload, reference, RegoPolicy(), strangers, NOW, NONCE,
                                   ChainVerifier(strangers))
        assert [f.claim for f in verdict.findings] == ["verify.chain"]


def _only(verdict: Any) -> tuple[str, str, str, str]:
    (finding,) = verdict.findings
    assert verdict.status == "contraindicated" and not verdict.accepted
    assert verdict.claims == {"evidence": "launch"} and verdict.policy_id == "default"
    assert {"pcrs", "boot_images"} <= set(verdict.unchecked)
    return finding.claim, finding.expected, finding.actual, finding.hint


def test_each_verify_finding_says_what_was_expected_and_found(
        owner: Owner, evidence: LaunchEvidence, roots: TrustRoots) -> None:
    reference = _reference(owner)
    assert _only(_appraise(evidence, reference, roots, challenge="issued")) == (
        "verify.nonce", "issued", NONCE, "runtime-data.nonce is not this session's challenge")
    other = KeyPair.generate().public_jwk()
    assert _only(_appraise(evidence, reference, roots, key=other)) == (
        "verify.report_data", launch_report_data(NONCE, other).hex(),
        launch_report_data(NONCE, KEY).hex(),
        "the report was made for another nonce or TEE key (replayed evidence?)")
    report = bytearray(evidence.report)
    report[0x90] ^= 1
    rule, expected, actual, hint = _only(_appraise(replace(evidence, report=bytes(report)),
                                                   reference, roots))
    assert (rule, expected, hint) == ("verify.report_signature", "signed by the VCEK", "report")
    assert actual and actual != "None"
    strangers = TrustRoots.of([Vendor("Milan", b"another vendor seed").trust_anchor()],
                              "emulated")
    rule, expected, actual, hint = _only(_appraise(evidence, reference, strangers))
    assert (rule, hint) == ("verify.chain", "certificates")
    assert expected == f"ARK -> ASK -> VCEK to a trusted root, valid at {NOW.isoformat()}"
    assert actual and actual != "None"


def test_the_crl_is_honoured(owner: Owner, evidence: LaunchEvidence,
                             roots: TrustRoots) -> None:
    root = RootStore.for_workspace(DEFAULT_WORKSPACE).root("Milan")
    revoker = Vendor("Milan", DEFAULT_SEED, clock=lambda: NOW,
                     root=root)
    assert _appraise(replace(evidence, crl=revoker.crl()), _reference(owner), roots).accepted
    revoker.revoke_ask()
    rule, _, actual, _ = _only(_appraise(replace(evidence, crl=revoker.crl()),
                                         _reference(owner), roots))
    assert rule == "verify.chain" and "revoked" in actual


def test_the_policy_sees_the_reference_findings(owner: Owner, evidence: LaunchEvidence,
                                                roots: TrustRoots) -> None:
    policy = RegoPolicy('package cvm.policy\nimport rego.v1\ndefault allow := false\n'
                        'deny contains {"rule": concat("", ["saw ", f.rule]), "expected": "", '
                        '"actual": "", "input": ""} if {\n\tsome f in input.findings\n}\n'
                        'allow if count(deny) == 0\n', "echo")
    verdict = _appraise(evidence, _reference(owner, measurement=["ab" * 48]), roots, policy)
    assert _rules(verdict) == ["measurement", "saw measurement"]
    assert verdict.policy_id == "echo"


def test_a_refusal_at_verify_names_the_policy_and_errors_default_to_evidence(
        owner: Owner, evidence: LaunchEvidence, roots: TrustRoots) -> None:
    named = RegoPolicy(DEFAULT_POLICY, "named")
    verdict = _appraise(evidence, _reference(owner), roots, named, challenge="issued")
    assert verdict.step == "verify" and verdict.policy_id == "named"
    with pytest.raises(FormatError) as refused:
        LaunchEvidence.from_json({**evidence.to_json(), "version": "v"})
    assert str(refused.value).startswith("evidence.version: ")
