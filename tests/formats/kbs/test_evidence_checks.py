"""The evidence documents (``cvm-evidence/1``, ``cvm-launch-evidence/1``) and their bindings:
the exact document, every field's size bound at its edge, and every refusal named by its
field."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from cvm.errors import FormatError
from cvm.formats.kbs.evidence import (
    REPORT_SIZE,
    CvmEvidence,
    report_data_for,
    runtime_digest,
    svsm_nonce,
)
from cvm.formats.kbs.json_fields import canonical
from cvm.formats.kbs.launch_evidence import LaunchEvidence, launch_report_data

from .documents import edit

KEY = {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AQEB"}
REPORT = bytes(range(256)) * 4 + bytes(REPORT_SIZE - 1024)
EVIDENCE = CvmEvidence(REPORT, b"vcek", b"ask", b"ark", b"manifest", b"ak", b"attest",
                       b"signature", b"log")
LAUNCH = LaunchEvidence(REPORT, b"vcek", b"ask", b"ark")
LIMITS = {"report": REPORT_SIZE, "certificates.vcek": 16 << 10, "certificates.ask": 16 << 10,
          "certificates.ark": 16 << 10, "crl": 64 << 10, "svsm_manifest": 4 << 10,
          "ak_public": 4 << 10, "quote.attest": 4 << 10, "quote.signature": 4 << 10,
          "event_log": 512 << 10}
LAUNCH_FIELDS = ("report", "certificates.vcek", "certificates.ask", "certificates.ark", "crl")


def refused(message: str) -> Any:
    return pytest.raises(FormatError, match=f"^{re.escape(message)}$")


def _with(document: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    return edit(document, path.split("."), value)


def test_the_bindings() -> None:
    runtime = b'{"nonce":"n","tee-pubkey":{"crv":"P-256","kty":"EC","x":"AAAA","y":"AQEB"}}'
    digest = hashlib.sha384(runtime).digest()
    assert runtime_digest("n", KEY) == digest
    assert svsm_nonce(digest, b"ak name") == digest + b"ak name"
    assert report_data_for(digest, b"ak name", b"manifest") == hashlib.sha512(
        digest + b"ak name" + b"manifest").digest()
    assert launch_report_data("n", KEY) == digest + bytes(16)


def test_the_documents_exactly() -> None:
    assert EVIDENCE.to_json() == {
        "version": "cvm-evidence/1", "report": EVIDENCE.to_json()["report"],
        "certificates": {"vcek": "dmNlaw==", "ask": "YXNr", "ark": "YXJr"},
        "svsm_manifest": "bWFuaWZlc3Q=", "ak_public": "YWs=",
        "quote": {"attest": "YXR0ZXN0", "signature": "c2lnbmF0dXJl"}, "event_log": "bG9n"}
    assert LAUNCH.to_json() == {"version": "cvm-launch-evidence/1",
                                "report": EVIDENCE.to_json()["report"],
                                "certificates": {"vcek": "dmNlaw==", "ask": "YXNr",
                                                 "ark": "YXJr"}}
    with_crl = CvmEvidence(**{**EVIDENCE.__dict__, "crl": b"crl"})
    assert with_crl.to_json()["crl"] == "Y3Js"
    assert LaunchEvidence(REPORT, b"v", b"s", b"k", b"crl").to_json()["crl"] == "Y3Js"
    assert CvmEvidence.from_bytes(with_crl.to_bytes()) == with_crl
    assert LaunchEvidence.from_json(LAUNCH.to_json()) == LAUNCH
    assert LAUNCH.to_bytes() == canonical(LAUNCH.to_json())
    assert LAUNCH.to_bytes().startswith(b'{"certificates":{"ark":"YXJr","ask":"YXNr",')
    assert with_crl.to_bytes().startswith(b'{"ak_public":"YWs=","certificates":{"ark":')


def test_a_report_of_another_size_is_refused() -> None:
    with refused(f"evidence.report: {REPORT_SIZE - 1} bytes, expected {REPORT_SIZE}"):
        CvmEvidence(**{**EVIDENCE.__dict__, "report": REPORT[:-1]})
    with refused(f"evidence.report: {REPORT_SIZE + 1} bytes, expected {REPORT_SIZE}"):
        LaunchEvidence(REPORT + b"\0", b"vcek", b"ask", b"ark")


@pytest.mark.parametrize("path", sorted(LIMITS))
def test_each_field_is_bounded_by_its_size(path: str) -> None:
    limit, where = LIMITS[path], "attestation.tee-evidence.primary_evidence"
    characters = (limit + 2) // 3 * 4
    base = CvmEvidence(**{**EVIDENCE.__dict__, "crl": b"crl"}).to_json()
    if path != "report":
        read = CvmEvidence.from_json(_with(base, path, "A" * characters), where)
        assert len(read.to_json()[path.split(".", maxsplit=1)[0]]) > 0
    with refused(f"{where}.{path}: longer than {limit} bytes"):
        CvmEvidence.from_json(_with(base, path, "A" * (characters + 4)), where)
    if path in LAUNCH_FIELDS:
        launch = LaunchEvidence(REPORT, b"v", b"s", b"k", b"crl").to_json()
        if path != "report":
            LaunchEvidence.from_json(_with(launch, path, "A" * characters), where)
        with refused(f"{where}.{path}: longer than {limit} bytes"):
            LaunchEvidence.from_json(_with(launch, path, "A" * (characters + 4)), where)


@pytest.mark.parametrize(("path", "value", "message"), [
    ("version", "cvm-launch-evidence/1",
     "evidence.version: 'cvm-launch-evidence/1' is not 'cvm-evidence/1'"),
    ("event_log", None, "evidence: missing event_log"),
    ("crl", None, None),
    ("nonce", "n", "evidence: unknown field nonce"),
    ("certificates", "vcek", "evidence.certificates: expected a JSON object, got str"),
    ("certificates.vcek", None, "evidence.certificates: missing vcek"),
    ("certificates.crl", "Y3Js", "evidence.certificates: unknown field crl"),
    ("quote", [], "evidence.quote: expected a JSON object, got list"),
    ("quote.signature", None, "evidence.quote: missing signature"),
    ("quote.pcrs", "", "evidence.quote: unknown field pcrs"),
    ("ak_public", 5, "evidence.ak_public: expected a base64 string"),
    ("quote.attest", "YXR0ZXN0", None),
    ("certificates.ark", "YXJr\n", "evidence.certificates.ark: not valid base64"),
    ("report", "AAAA", "evidence.report: 3 bytes, expected 1184"),
])
def test_a_malformed_evidence_document_is_named(path: str, value: object,
                                                message: str | None) -> None:
    document = _with(CvmEvidence(**{**EVIDENCE.__dict__, "crl": b"c"}).to_json(), path, value)
    if message is None:
        CvmEvidence.from_json(document)
        return
    with refused(message):
        CvmEvidence.from_json(document)


@pytest.mark.parametrize(("path", "value", "message"), [
    ("version", "cvm-evidence/1", "evidence.version: 'cvm-evidence/1' is not "
                                  "'cvm-launch-evidence/1'"),
    ("report", None, "evidence: missing report"),
    ("quote", {}, "evidence: unknown field quote"),
    ("certificates", None, "evidence: missing certificates"),
    ("certificates", 1, "evidence.certificates: expected a JSON object, got int"),
    ("certificates.ask", None, "evidence.certificates: missing ask"),
    ("certificates.vlek", "AAAA", "evidence.certificates: unknown field vlek"),
    ("crl", "Y3J", "evidence.crl: not valid base64"),
])
def test_a_malformed_launch_evidence_document_is_named(path: str, value: object,
                                                       message: str) -> None:
    with refused(message):
        LaunchEvidence.from_json(_with(LAUNCH.to_json(), path, value))


def test_documents_that_are_not_objects() -> None:
    with refused("evidence: expected a JSON object, got list"):
        CvmEvidence.from_json([])
    with refused("evidence: expected a JSON object, got list"):
        LaunchEvidence.from_json([])
    with refused("evidence: expected a JSON object, got list"):
        CvmEvidence.from_bytes(b"[]")
