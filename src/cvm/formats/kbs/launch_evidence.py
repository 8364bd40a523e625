"""Launch evidence: what the SVSM presents before its vTPM runs — the SNP report alone.

At boot the SVSM at VMPL0 needs the vTPM state key before there is a vTPM to quote, so its
evidence is Trustee's ``snp`` evidence (``attestation-service/verifier/src/snp``): the report
and the VCEK chain, nothing else. The document (``cvm-launch-evidence/1``; binary fields
standard base64, RFC 4648 section 4)::

    {
      "version": "cvm-launch-evidence/1",
      "report": "<SNP ATTESTATION_REPORT, AMD 56860 Table 22, 1184 bytes>",
      "certificates": {"vcek": "<DER>", "ask": "<DER>", "ark": "<DER>"},
      "crl": "<DER, the ARK's CRL>"                       (optional)
    }

The binding (:func:`launch_report_data`) is Trustee's for ``snp``: ``REPORT_DATA = SHA-384(
canonical runtime data {"nonce", "tee-pubkey"}) ‖ 16 zero bytes`` — the digest padded to the
field's 64 bytes. The guest OS cannot produce it: its reports come at VMPL1 or through the
SVSM's attestation protocol, whose REPORT_DATA is SHA-512(nonce ‖ manifest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cvm.formats.kbs.evidence import (
    check_report_size,
    evidence_json,
    open_document,
    optional_crl,
    report_and_chain,
    runtime_digest,
)
from cvm.formats.kbs.json_fields import canonical

LAUNCH_EVIDENCE_VERSION = "cvm-launch-evidence/1"
REPORT_DATA_SIZE = 64


def launch_report_data(nonce: str, tee_pubkey: dict[str, Any]) -> bytes:
    """REPORT_DATA for launch evidence: the runtime digest, zero-padded to 64 bytes."""
    digest = runtime_digest(nonce, tee_pubkey)
    return digest + bytes(REPORT_DATA_SIZE - len(digest))


@dataclass(frozen=True)
class LaunchEvidence:
    """The SVSM's report and the VCEK chain the host supplied, as bytes."""

    report: bytes
    vcek: bytes
    ask: bytes
    ark: bytes
    crl: bytes | None = None

    def __post_init__(self) -> None:
        check_report_size(self.report)

    def to_json(self) -> dict[str, Any]:
        return evidence_json(LAUNCH_EVIDENCE_VERSION, self.report, self.vcek, self.ask,
                             self.ark, {}, self.crl)

    def to_bytes(self) -> bytes:
        return canonical(self.to_json())

    @classmethod
    def from_json(cls, value: object, where: str = "evidence") -> LaunchEvidence:
        """Strictly: known fields only, each base64 and within its size bound."""
        document, certs = open_document(value, where, LAUNCH_EVIDENCE_VERSION, set())
        report, vcek, ask, ark = report_and_chain(document, certs, where)
        return cls(report, vcek, ask, ark, optional_crl(document, where))
