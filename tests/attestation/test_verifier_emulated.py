"""The verifier on emulated evidence: trusted only when the emulated root is trusted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cvm.amd import Vendor
from cvm.attestation.verifier import Evidence, TrustRoots, Verifier
from cvm.errors import ChainError, FormatError, PolicyError
from cvm.formats.snp.cert_table import VCEK_GUID, CertTable

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_emulated_report_is_accepted_when_its_root_is_trusted(emulated: Any) -> None:
    evidence = emulated.evidence(emulated.sign(emulated.report))
    verified = emulated.verifier.appraise(evidence, emulated.reference)
    assert verified.report == emulated.report.replace(
        signature_r=verified.report.signature_r, signature_s=verified.report.signature_s
    )
    assert verified.chain.product == "Milan"


def test_emulated_report_is_refused_under_amd_roots(emulated: Any) -> None:
    evidence = emulated.evidence(emulated.sign(emulated.report))
    with pytest.raises(ChainError, match="ARK-Milan-emulated"):
        Verifier(TrustRoots.amd(), clock=lambda: NOW).verify(evidence)


def test_union_of_roots_accepts_both(emulated: Any) -> None:
    roots = TrustRoots.amd().union(TrustRoots.of([emulated.vendor.trust_anchor()]))
    evidence = emulated.evidence(emulated.sign(emulated.report))
    assert Verifier(roots, clock=lambda: NOW).verify(evidence).chain.product == "Milan"


def test_revoked_ask_is_refused_with_the_crl(emulated: Any) -> None:
    vendor = Vendor("Milan", emulated.vendor.authority.seed, clock=lambda: NOW)
    evidence = emulated.evidence(emulated.sign(emulated.report))
    clean = Evidence(evidence.report, evidence.vcek, evidence.ask, evidence.ark, vendor.crl())
    emulated.verifier.verify(clean)
    vendor.revoke_ask()
    revoked = Evidence(evidence.report, evidence.vcek, evidence.ask, evidence.ark, vendor.crl())
    with pytest.raises(ChainError, match="revoked"):
        emulated.verifier.verify(revoked)


def test_stale_crl_is_refused(emulated: Any) -> None:
    old = Vendor("Milan", emulated.vendor.authority.seed, clock=emulated.vendor.authority.clock)
    evidence = emulated.evidence(emulated.sign(emulated.report))
    stale = Evidence(evidence.report, evidence.vcek, evidence.ask, evidence.ark, old.crl())
    with pytest.raises(ChainError, match="CRL"):
        emulated.verifier.verify(stale)


def test_appraise_reports_every_finding(emulated: Any) -> None:
    bad = emulated.report.replace(
        measurement=bytes(48), policy=emulated.report.policy.__class__(smt=True, debug=True)
    )
    with pytest.raises(PolicyError) as caught:
        emulated.verifier.appraise(emulated.evidence(emulated.sign(bad)), emulated.reference)
    claims = [finding.claim for finding in caught.value.findings]
    assert claims == ["measurement", "policy.debug"]
    assert caught.value.findings[0].expected == emulated.report.measurement.hex()
    assert caught.value.findings[0].actual == "00" * 48


def test_cached_chain_is_rechecked_for_time(emulated: Any) -> None:
    evidence = emulated.evidence(emulated.sign(emulated.report))
    moments = [NOW, datetime(2040, 1, 1, tzinfo=UTC)]
    verifier = Verifier(emulated.verifier.roots, clock=lambda: moments[0])
    verifier.verify(evidence)
    moments[0] = moments[1]
    with pytest.raises(ChainError, match="not valid"):
        verifier.verify(evidence)


def test_evidence_through_a_certificate_table(emulated: Any) -> None:
    evidence = emulated.evidence(emulated.sign(emulated.report))
    rebuilt = Evidence.from_cert_table(evidence.report, evidence.cert_table())
    assert rebuilt == evidence
    emulated.verifier.verify(rebuilt)
    with pytest.raises(FormatError, match="ARK"):
        Evidence.from_cert_table(
            evidence.report, CertTable(((VCEK_GUID, evidence.vcek),)).to_bytes()
        )
