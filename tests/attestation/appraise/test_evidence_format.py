"""cvm-evidence/1 and the RCAR payloads: round trips, strict parsing, the bindings."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.kbs.evidence import CvmEvidence, report_data_for, runtime_digest
from cvm.formats.kbs.rcar import Attestation, AuthRequest, tee_public_key
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.tpm2.attest import QuoteAttest
from cvm.formats.tpm2.public import Public
from cvm.scenarios.attested_guest import Cvm


@pytest.fixture(scope="module")
def evidence(genuine: Cvm) -> CvmEvidence:
    return genuine.evidence("format nonce")


def test_round_trip_and_bindings(genuine: Cvm, evidence: CvmEvidence) -> None:
    assert CvmEvidence.from_bytes(evidence.to_bytes()) == evidence
    document = json.loads(evidence.to_bytes())
    assert base64.b64decode(document["report"]) == evidence.report
    digest = runtime_digest("format nonce", genuine.tee_key.public_jwk())
    ak = Public.from_bytes(evidence.ak_public)
    report = AttestationReport.from_bytes(evidence.report)
    assert report.report_data == report_data_for(digest, ak.name(), evidence.svsm_manifest)
    assert QuoteAttest.from_bytes(evidence.quote_attest).extra_data == digest
    assert runtime_digest("other", genuine.tee_key.public_jwk()) != digest


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(extra=1), "unknown field extra"),
    (lambda d: d.pop("quote"), "missing quote"),
    (lambda d: d.update(version="cvm-evidence/2"), "version"),
    (lambda d: d.update(report="!!"), "evidence.report: not valid base64"),
    (lambda d: d.update(report=base64.b64encode(b"x" * 10).decode()), "10 bytes"),
    (lambda d: d["quote"].update(attest=5), "evidence.quote.attest: expected a base64"),
    (lambda d: d["certificates"].pop("ask"), "evidence.certificates: missing ask"),
])
def test_strict_parsing(evidence: CvmEvidence, edit: Any, message: str) -> None:
    document = evidence.to_json()
    edit(document)
    with pytest.raises(FormatError, match=message):
        CvmEvidence.from_json(document)


def test_attestation_payload(genuine: Cvm, evidence: CvmEvidence) -> None:
    payload = Attestation("format nonce", genuine.tee_key.public_jwk(), evidence)
    assert Attestation.from_json(json.loads(json.dumps(payload.to_json()))) == payload
    broken = payload.to_json()
    broken["tee-evidence"]["additional_evidence"] = "{\"tdx\": 1}"
    with pytest.raises(FormatError, match="additional_evidence"):
        Attestation.from_json(broken)
    request = AuthRequest.from_json({"version": "0.1.1", "tee": "snp", "extra-params": ""})
    assert request.tee == "snp"
    with pytest.raises(FormatError, match="missing tee"):
        AuthRequest.from_json({"version": "0.1.1"})


def test_tee_public_key_checks(genuine: Cvm) -> None:
    jwk = genuine.tee_key.public_jwk()
    assert tee_public_key(jwk) == jwk
    with pytest.raises(FormatError, match="crv"):
        tee_public_key({**jwk, "crv": "P-192"})
    with pytest.raises(FormatError, match="wrong size"):
        tee_public_key({**jwk, "x": "AAAA"})
    with pytest.raises(FormatError, match="kty"):
        tee_public_key({**jwk, "kty": "oct"})
    with pytest.raises(FormatError, match="under 2048"):
        tee_public_key({"kty": "RSA", "n": "AQAB", "e": "AQAB"})


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    with pytest.raises(FormatError):
        CvmEvidence.from_bytes(data)
