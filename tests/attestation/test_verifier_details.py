"""The verifier's details that mutation testing showed untested: trust-root input, evidence
constructors, messages that name what failed, and how long a cached chain stays verified."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cvm.amd import Vendor
from cvm.amd.kds import _pem
from cvm.attestation.verifier import ChainVerifier, Evidence, ReferenceValues, TrustRoots
from cvm.attestation.verifier import chain as chain_module
from cvm.attestation.verifier.policy import validate
from cvm.errors import ChainError, Finding, FormatError, PolicyError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.cert_table import ARK_GUID, CertTable
from cvm.formats.snp.tcb_version import TcbVersion

ISSUE_TIME = datetime(2026, 1, 1, tzinfo=UTC)  # the ``emulated`` fixture's vendor clock
TCB = TcbVersion(boot_loader=4, tee=0, snp=22, microcode=213)  # and its chip's TCB


@pytest.mark.parametrize("bad", [
    "AB" * 32, "g" * 64, "X" * 64, "ab" * 31, "ab" * 32 + "0", "ab" * 15 + " " + "ab" * 16 + "a",
])
def test_a_trust_root_must_be_a_lower_case_sha256(bad: str) -> None:
    with pytest.raises(UsageError, match="not a lower-case SHA-256 hex fingerprint"):
        TrustRoots({bad: "Milan"})


def test_trust_root_labels_and_normalisation() -> None:
    fingerprint = "ab" * 32
    assert TrustRoots({fingerprint: "Milan"}).product_of(fingerprint.upper()) == "Milan"
    amd = TrustRoots.amd()
    assert amd.label == "amd" and len(amd.roots) == 3
    pinned = TrustRoots.of([("Milan", ":".join(["AB"] * 32))])
    assert pinned.roots == {fingerprint: "Milan"} and pinned.label == "custom"
    assert TrustRoots.of([], "lab").label == "lab"
    assert amd.union(pinned).label == "amd+custom"
    assert amd.union(pinned).product_of(fingerprint) == "Milan"
    assert hash(pinned) == hash(TrustRoots.of([("Milan", fingerprint)]))


def test_evidence_from_a_kds_chain(emulated: Any) -> None:
    vendor: Vendor = emulated.vendor
    vcek = vendor.vcek_certificate(emulated.chip.chip_id, TCB)
    crl = vendor.crl()
    report = emulated.sign(emulated.report)
    evidence = Evidence.from_cert_chain(report, vcek, vendor.cert_chain(), crl)
    assert evidence == Evidence(report, vcek, vendor.ask_certificate, vendor.ark_certificate, crl)
    # A VCEK file holding more than one certificate: the first is the VCEK.
    bundle = _pem("CERTIFICATE", vcek) + _pem("CERTIFICATE", vendor.ask_certificate)
    assert Evidence.from_cert_chain(report, bundle, vendor.cert_chain()).vcek == vcek
    with pytest.raises(FormatError, match="the cert chain holds 1 certificates, expected ASK"):
        Evidence.from_cert_chain(report, vcek, _pem("CERTIFICATE", vendor.ask_certificate))


def test_evidence_reads_only_the_framing_and_the_verifier_parses(emulated: Any) -> None:
    """The host relays a KDS chain without parsing it; a VCEK that is not a certificate is
    carried as it is and refused where it is verified, by name."""
    vendor: Vendor = emulated.vendor
    report = emulated.sign(emulated.report)
    evidence = Evidence.from_cert_chain(report, b"\x30\x03not DER", vendor.cert_chain())
    assert evidence.vcek == b"\x30\x03not DER"
    with pytest.raises(FormatError, match=r"not a DER X\.509 certificate"):
        emulated.verifier.verify(evidence)
    with pytest.raises(FormatError, match="no CERTIFICATE block in the PEM data"):
        Evidence.from_cert_chain(report, _pem("PUBLIC KEY", b"x"), vendor.cert_chain())
    with pytest.raises(FormatError, match="malformed PEM"):
        Evidence.from_cert_chain(report, b"-----BEGIN CERTIFICATE-----\n!!\n",
                                 vendor.cert_chain())


def test_evidence_from_a_certificate_table(emulated: Any) -> None:
    evidence = emulated.evidence(emulated.sign(emulated.report))
    crl = emulated.vendor.crl()
    again = Evidence.from_cert_table(evidence.report, evidence.cert_table(), crl)
    assert again == dataclasses.replace(evidence, crl=crl)
    only_ark = CertTable(((ARK_GUID, evidence.ark),)).to_bytes()
    with pytest.raises(FormatError, match=r"the certificate table has no VCEK, ASK$"):
        Evidence.from_cert_table(evidence.report, only_ark)


def test_appraise_names_every_finding(emulated: Any) -> None:
    evidence = emulated.evidence(emulated.sign(emulated.report))
    reference = dataclasses.replace(emulated.reference, measurement=bytes(48), vmpl=1)
    with pytest.raises(PolicyError) as refused:
        emulated.verifier.appraise(evidence, reference)
    findings = validate(emulated.report, reference)
    assert refused.value.findings == findings
    assert str(refused.value) == (
        "the report is authentic but not acceptable: " + "; ".join(map(str, findings))
    )
    assert str(refused.value).count("differs") == 2


def test_binding_errors_name_chip_and_family(emulated: Any) -> None:
    chip_id = emulated.chip.chip_id.hex()
    other = emulated.report.replace(chip_id=bytes(range(64)))
    evidence = dataclasses.replace(emulated.evidence(emulated.sign(emulated.report)),
                                   report=emulated.sign(other))
    with pytest.raises(ChainError, match=f"the VCEK is for chip {chip_id}, the report's "
                                         f"CHIP_ID is {bytes(range(64)).hex()}"):
        emulated.verifier.verify(evidence)
    turin = emulated.report.replace(cpuid_fam_id=0x1A)
    evidence = dataclasses.replace(evidence, report=emulated.sign(turin))
    with pytest.raises(ChainError, match="the report's CPUID family 0x1a is not Milan's"):
        emulated.verifier.verify(evidence)


def test_a_cached_chain_expires_with_its_crl(emulated: Any) -> None:
    """The CRL's nextUpdate bounds the cached chain: later, the same bytes are refused."""
    vendor: Vendor = emulated.vendor
    crl = Vendor("Milan", vendor.authority.seed, clock=lambda: ISSUE_TIME).crl()
    vcek = vendor.vcek_certificate(emulated.chip.chip_id, TCB)
    chains = ChainVerifier(TrustRoots.of([vendor.trust_anchor()]))
    verified = chains.verify(vcek, vendor.ask_certificate, vendor.ark_certificate,
                             ISSUE_TIME + timedelta(days=1), crl)
    assert verified.valid_until == ISSUE_TIME + timedelta(days=7)
    assert verified.ark_fingerprint == vendor.ark_fingerprint()
    with pytest.raises(ChainError, match="not valid at"):
        chains.verify(vcek, vendor.ask_certificate, vendor.ark_certificate,
                      ISSUE_TIME + timedelta(days=8), crl)


def test_exact_values_are_checked_after_one_left_out() -> None:
    subject = AttestationReport(report_data=b"\x01" * 64, measurement=b"\x02" * 48)
    reference = ReferenceValues(report_data=b"\x03" * 64, host_data=b"\x04" * 32)
    assert [f.claim for f in validate(subject, reference)] == ["report_data", "host_data"]
    either = ReferenceValues(measurement=[b"\x05" * 48, b"\x06" * 48])
    (finding,) = validate(subject, either)
    assert finding.expected == "05" * 48 + " or " + "06" * 48


def test_version_findings_say_what_was_expected() -> None:
    low = TcbVersion(boot_loader=1)
    high = TcbVersion(boot_loader=2)
    subject = AttestationReport(guest_svn=1, current_tcb=low, committed_tcb=high,
                                launch_tcb=high, reported_tcb=high)
    findings = validate(subject, ReferenceValues(minimum_tcb=high, minimum_guest_svn=2))
    assert findings == (
        Finding("current_tcb", f"at least {high}", str(low),
                "the firmware is older than the policy allows (rollback?)"),
        Finding("current_tcb_vs_reported_tcb", f"at least REPORTED_TCB {high}", str(low),
                "the report claims a TCB the platform does not run"),
        Finding("guest_svn", "at least 2", "1"),
    )


def test_a_chain_is_valid_up_to_its_last_instant(emulated: Any) -> None:
    vendor: Vendor = emulated.vendor
    crl = Vendor("Milan", vendor.authority.seed, clock=lambda: ISSUE_TIME).crl()
    vcek = vendor.vcek_certificate(emulated.chip.chip_id, TCB)
    chains = ChainVerifier(TrustRoots.of([vendor.trust_anchor()]))
    last = ISSUE_TIME + timedelta(days=7)  # the CRL's nextUpdate
    assert chains.verify(vcek, vendor.ask_certificate, vendor.ark_certificate, last,
                         crl).valid_until == last


def test_the_chain_cache_forgets_the_oldest(
    emulated: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chain_module, "CACHE_LIMIT", 2)
    vendor: Vendor = emulated.vendor
    chains = ChainVerifier(TrustRoots.of([vendor.trust_anchor()]))
    vceks = [vendor.vcek_certificate(vendor.manufacture_chip(index).chip_id, TCB)
             for index in (20, 21, 22)]
    at = ISSUE_TIME + timedelta(days=1)
    for vcek in vceks:
        chains.verify(vcek, vendor.ask_certificate, vendor.ark_certificate, at)
    assert [key[0] for key in chains._cache] == vceks[1:]
