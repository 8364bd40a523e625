"""Composite evidence of an SNP guest with a vTPM in its SVSM: the JSON document and its binding.

The document (``cvm-evidence/1``; every binary field standard base64, RFC 4648 section 4)::

    {
      "version": "cvm-evidence/1",
      "report": "<SNP ATTESTATION_REPORT, AMD 56860 Table 22, 1184 bytes>",
      "certificates": {"vcek": "<DER>", "ask": "<DER>", "ark": "<DER>"},
      "crl": "<DER, the ARK's CRL>",                      (optional)
      "svsm_manifest": "<the vTPM service manifest: the EK's TPMT_PUBLIC>",
      "ak_public": "<the AK's TPMT_PUBLIC>",
      "quote": {"attest": "<TPMS_ATTEST>", "signature": "<TPMT_SIGNATURE>"},
      "event_log": "<TCG PC Client crypto-agile event log>"
    }

What binds the parts (:func:`runtime_digest`, :func:`report_data_for`):

* ``runtime digest = SHA-384(canonical JSON of {"nonce": N, "tee-pubkey": JWK})`` — Trustee's
  runtime data (``kbs_attestation_protocol.md``, Attestation payload), hashed with sorted keys
  and no spaces;
* the guest asks its SVSM for an attestation (SVSM 58019 section 7) with
  ``nonce = runtime digest ‖ Name(AK)``, so ``REPORT_DATA = SHA-512(runtime digest ‖ Name(AK) ‖
  manifest)``: the report, signed by the PSP, names the verifier's nonce, the TEE key, the AK
  and the vTPM's EK together;
* the vTPM quote's ``extraData`` is the same runtime digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cvm.errors import FormatError
from cvm.formats.kbs.json_fields import (
    as_object,
    b64decode,
    b64encode,
    canonical,
    load_object,
    only_keys,
)

EVIDENCE_VERSION = "cvm-evidence/1"
REPORT_SIZE = 0x4A0
MAX_CERT_BYTES = 16 << 10
MAX_CRL_BYTES = 64 << 10
MAX_TPM_BYTES = 4 << 10
MAX_EVENT_LOG_BYTES = 512 << 10
RUNTIME_DIGEST_SIZE = 48
_FIELDS = {"svsm_manifest", "ak_public", "quote", "event_log"}
_REPORT_AND_CHAIN_FIELDS = {"version", "report", "certificates"}


def runtime_digest(nonce: str, tee_pubkey: dict[str, Any]) -> bytes:
    """SHA-384 of the canonical runtime data ``{"nonce", "tee-pubkey"}``."""
    return hashlib.sha384(canonical({"nonce": nonce, "tee-pubkey": tee_pubkey})).digest()


def svsm_nonce(digest: bytes, ak_name: bytes) -> bytes:
    """What the guest hands its SVSM as the attestation nonce."""
    return digest + ak_name


def report_data_for(digest: bytes, ak_name: bytes, manifest: bytes) -> bytes:
    """The REPORT_DATA the SVSM asks the PSP for: SHA-512(nonce ‖ manifest)."""
    return hashlib.sha512(svsm_nonce(digest, ak_name) + manifest).digest()


# -- what both documents hold: the report, the VCEK chain and the ARK's CRL ---------------------
def check_report_size(report: bytes) -> None:
    """Refuse a report that is not an ATTESTATION_REPORT's 1184 bytes."""
    if len(report) != REPORT_SIZE:
        raise FormatError(f"evidence.report: {len(report)} bytes, expected {REPORT_SIZE}")


def evidence_json(version: str, report: bytes, vcek: bytes, ask: bytes, ark: bytes,
                  parts: dict[str, Any], crl: bytes | None) -> dict[str, Any]:
    """The document: its version, report and certificates, then its own ``parts``, then its CRL
    where there is one."""
    document: dict[str, Any] = {
        "version": version,
        "report": b64encode(report),
        "certificates": {"vcek": b64encode(vcek), "ask": b64encode(ask), "ark": b64encode(ark)},
        **parts,
    }
    if crl is not None:
        document["crl"] = b64encode(crl)
    return document


def open_document(value: object, where: str, version: str,
                  parts: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The document and its certificates object, each with exactly its keys (version, report,
    certificates, its own ``parts`` and an optional crl; vcek, ask, ark), the document of
    ``version``."""
    document = as_object(value, where)
    only_keys(document, where, _REPORT_AND_CHAIN_FIELDS | parts, {"crl"})
    if document["version"] != version:
        raise FormatError(f"{where}.version: {document['version']!r} is not {version!r}")
    certs = as_object(document["certificates"], f"{where}.certificates")
    only_keys(certs, f"{where}.certificates", {"vcek", "ask", "ark"})
    return document, certs


def report_and_chain(document: dict[str, Any], certs: dict[str, Any],
                     where: str) -> tuple[bytes, bytes, bytes, bytes]:
    """The report, VCEK, ASK and ARK of an opened document, decoded within their bounds."""
    return (b64decode(document["report"], f"{where}.report", REPORT_SIZE),
            b64decode(certs["vcek"], f"{where}.certificates.vcek", MAX_CERT_BYTES),
            b64decode(certs["ask"], f"{where}.certificates.ask", MAX_CERT_BYTES),
            b64decode(certs["ark"], f"{where}.certificates.ark", MAX_CERT_BYTES))


def optional_crl(document: dict[str, Any], where: str) -> bytes | None:
    """The document's CRL, decoded within its bound, or None."""
    crl = document.get("crl")
    return None if crl is None else b64decode(crl, f"{where}.crl", MAX_CRL_BYTES)


@dataclass(frozen=True)
class CvmEvidence:
    """One guest's evidence, every part as the bytes its producer wrote."""

    report: bytes
    vcek: bytes
    ask: bytes
    ark: bytes
    svsm_manifest: bytes
    ak_public: bytes
    quote_attest: bytes
    quote_signature: bytes
    event_log: bytes
    crl: bytes | None = None

    def __post_init__(self) -> None:
        check_report_size(self.report)

    def to_json(self) -> dict[str, Any]:
        return evidence_json(EVIDENCE_VERSION, self.report, self.vcek, self.ask, self.ark, {
            "svsm_manifest": b64encode(self.svsm_manifest),
            "ak_public": b64encode(self.ak_public),
            "quote": {"attest": b64encode(self.quote_attest),
                      "signature": b64encode(self.quote_signature)},
            "event_log": b64encode(self.event_log),
        }, self.crl)

    def to_bytes(self) -> bytes:
        return canonical(self.to_json())

    @classmethod
    def from_json(cls, value: object, where: str = "evidence") -> CvmEvidence:
        """Strictly: known fields only, each base64 and within its size bound."""
        document, certs = open_document(value, where, EVIDENCE_VERSION, _FIELDS)
        quote = as_object(document["quote"], f"{where}.quote")
        only_keys(quote, f"{where}.quote", {"attest", "signature"})
        report, vcek, ask, ark = report_and_chain(document, certs, where)
        return cls(
            report, vcek, ask, ark,
            svsm_manifest=b64decode(document["svsm_manifest"], f"{where}.svsm_manifest",
                                    MAX_TPM_BYTES),
            ak_public=b64decode(document["ak_public"], f"{where}.ak_public", MAX_TPM_BYTES),
            quote_attest=b64decode(quote["attest"], f"{where}.quote.attest", MAX_TPM_BYTES),
            quote_signature=b64decode(quote["signature"], f"{where}.quote.signature",
                                      MAX_TPM_BYTES),
            event_log=b64decode(document["event_log"], f"{where}.event_log",
                                MAX_EVENT_LOG_BYTES),
            crl=optional_crl(document, where),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CvmEvidence:
        return cls.from_json(load_object(data, "evidence"))
