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

from cvm.errors import FormatError
from cvm.formats.kbs.evidence import (
    MAX_CERT_BYTES,
    MAX_CRL_BYTES,
    REPORT_SIZE,
    runtime_digest,
)
from cvm.formats.kbs.json_fields import as_object, b64decode, b64encode, canonical, only_keys

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
        if len(self.report) != REPORT_SIZE:
            raise FormatError(f"evidence.report: {len(self.report)} bytes, expected {REPORT_SIZE}")

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "version": LAUNCH_EVIDENCE_VERSION,
            "report": b64encode(self.report),
            "certificates": {"vcek": b64encode(self.vcek), "ask": b64encode(self.ask),
                             "ark": b64encode(self.ark)},
        }
        if self.crl is not None:
            document["crl"] = b64encode(self.crl)
        return document

    def to_bytes(self) -> bytes:
        return canonical(self.to_json())

    @classmethod
    def from_json(cls, value: object, where: str = "evidence") -> LaunchEvidence:
        """Strictly: known fields only, each base64 and within its size bound."""
        document = as_object(value, where)
        only_keys(document, where, {"version", "report", "certificates"}, {"crl"})
        if document["version"] != LAUNCH_EVIDENCE_VERSION:
            raise FormatError(f"{where}.version: {document['version']!r} is not "
                              f"{LAUNCH_EVIDENCE_VERSION!r}")
        certs = as_object(document["certificates"], f"{where}.certificates")
        only_keys(certs, f"{where}.certificates", {"vcek", "ask", "ark"})
        crl = document.get("crl")
        return cls(
            report=b64decode(document["report"], f"{where}.report", REPORT_SIZE),
            vcek=b64decode(certs["vcek"], f"{where}.certificates.vcek", MAX_CERT_BYTES),
            ask=b64decode(certs["ask"], f"{where}.certificates.ask", MAX_CERT_BYTES),
            ark=b64decode(certs["ark"], f"{where}.certificates.ark", MAX_CERT_BYTES),
            crl=None if crl is None else b64decode(crl, f"{where}.crl", MAX_CRL_BYTES),
        )
