"""The verifier's front door: ``verify`` (authentic), ``validate`` (acceptable), ``appraise``.

Evidence is bytes as it crosses the boundary (AMD 56860 Table 22 report; AMD 57230 DER
certificates; an optional ARK-signed CRL). Trust roots and reference values are data; the
clock is injected. ``Verifier`` keeps verified chains, so a stream of reports from the same
chip and TCB costs one ECDSA P-384 verification each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cvm.attestation.verifier.chain import ChainVerifier, VerifiedChain
from cvm.attestation.verifier.policy import ReferenceValues, validate
from cvm.attestation.verifier.report import verify_report
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.x509_chain import certificate_ders
from cvm.errors import Finding, FormatError, PolicyError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.cert_table import ARK_GUID, ASK_GUID, VCEK_GUID, CertTable

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Evidence:
    """An SNP report with the certificates (DER) that vouch for it."""

    report: bytes
    vcek: bytes
    ask: bytes
    ark: bytes
    crl: bytes | None = None

    @classmethod
    def from_cert_chain(
        cls, report: bytes, vcek: bytes, cert_chain: bytes, crl: bytes | None = None
    ) -> Evidence:
        """From a VCEK (DER or PEM) and a KDS ``cert_chain`` body (PEM: ASK then ARK). Only
        their framing is read here: :meth:`Verifier.verify` parses and checks each of them."""
        chain = certificate_ders(cert_chain)
        if len(chain) != 2:
            raise FormatError(f"the cert chain holds {len(chain)} certificates, expected ASK, ARK")
        return cls(report, certificate_ders(vcek)[0], chain[0], chain[1], crl)


    @classmethod
    def from_cert_table(cls, report: bytes, table: bytes, crl: bytes | None = None) -> Evidence:
        """From an extended report's certificate table (GHCB 56421): VCEK, ASK and ARK."""
        certificates = CertTable.from_bytes(table)
        found = {
            name: certificates.get(guid)
            for name, guid in (("VCEK", VCEK_GUID), ("ASK", ASK_GUID), ("ARK", ARK_GUID))
        }
        missing = [name for name, der in found.items() if der is None]
        if missing:
            raise FormatError(f"the certificate table has no {', '.join(missing)}")
        vcek, ask, ark = (found[name] or b"" for name in ("VCEK", "ASK", "ARK"))
        return cls(report, vcek, ask, ark, crl)

    def cert_table(self) -> bytes:
        """The certificates as an extended report's table (VCEK, ASK, ARK)."""
        entries = ((VCEK_GUID, self.vcek), (ASK_GUID, self.ask), (ARK_GUID, self.ark))
        return CertTable(entries).to_bytes()


@dataclass(frozen=True)
class VerifiedReport:
    """An authentic report and the chain that made it so."""

    report: AttestationReport
    chain: VerifiedChain


class Verifier:
    """Appraises SNP evidence against fixed trust roots."""

    def __init__(self, roots: TrustRoots, clock: Clock = _now) -> None:
        self.roots = roots
        self.clock = clock
        self.chains = ChainVerifier(roots)

    def verify(self, evidence: Evidence) -> VerifiedReport:
        """Is it authentic? Raise ChainError, SignatureError or FormatError if not."""
        chain = self.chains.verify(
            evidence.vcek, evidence.ask, evidence.ark, self.clock(), evidence.crl
        )
        return VerifiedReport(verify_report(evidence.report, chain), chain)

    @staticmethod
    def validate(report: AttestationReport, reference: ReferenceValues) -> tuple[Finding, ...]:
        """Is it acceptable? Every finding (claim, expected, actual); empty if so."""
        return validate(report, reference)

    def appraise(self, evidence: Evidence, reference: ReferenceValues) -> VerifiedReport:
        """Both: raise on inauthentic evidence, PolicyError (with findings) if unacceptable."""
        verified = self.verify(evidence)
        findings = validate(verified.report, reference)
        if findings:
            summary = "; ".join(str(finding) for finding in findings)
            raise PolicyError(f"the report is authentic but not acceptable: {summary}", findings)
        return verified
