"""The KBS protocol's Request and Attestation payloads as the broker reads them: what is
accepted, and every refusal with the message naming the field (the broker returns it to the
agent in its problem's detail)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cvm.errors import FormatError
from cvm.formats.kbs.evidence import REPORT_SIZE, CvmEvidence
from cvm.formats.kbs.json_fields import b64url_encode
from cvm.formats.kbs.launch_evidence import LaunchEvidence
from cvm.formats.kbs.rcar import Attestation, AuthRequest, tee_public_key

X, Y = b64url_encode(b"\x01" * 32), b64url_encode(b"\x02" * 32)
EC_KEY = {"kty": "EC", "crv": "P-256", "x": X, "y": Y}
RSA_KEY = {"kty": "RSA", "n": b64url_encode(b"\xc1" * 256), "e": "AQAB"}
EVIDENCE = CvmEvidence(bytes(REPORT_SIZE), b"vcek", b"ask", b"ark", b"manifest", b"ak",
                       b"attest", b"signature", b"log")
LAUNCH = LaunchEvidence(bytes(REPORT_SIZE), b"vcek", b"ask", b"ark")


def refused(message: str) -> Any:
    return pytest.raises(FormatError, match=f"^{re.escape(message)}$")


# --- Request ---------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [{}, {"extra-params": ""}, {"extra-params": {"a": 1}},
                                   {"extra-params": "anything"}])
def test_a_request_with_or_without_its_extra_params(extra: dict[str, Any]) -> None:
    document = {"version": "v" * 32, "tee": "t" * 32, **extra}
    assert AuthRequest.from_json(document) == AuthRequest("v" * 32, "t" * 32)


@pytest.mark.parametrize(("document", "message"), [
    (["version"], "request: expected a JSON object, got list"),
    ({"version": "0.4.0"}, "request: missing tee"),
    ({"version": "0.4.0", "tee": "snp", "nonce": "n"}, "request: unknown field nonce"),
    ({"version": 4, "tee": "snp"}, "request.version: expected a string"),
    ({"version": "v" * 33, "tee": "snp"}, "request.version: longer than 32 characters"),
    ({"version": "0.4.0", "tee": None}, "request.tee: expected a string"),
    ({"version": "0.4.0", "tee": "t" * 33}, "request.tee: longer than 32 characters"),
    ({"version": "0.4.0", "tee": "snp", "extra-params": 5},
     "request.extra-params: expected an object or a string"),
    ({"version": "0.4.0", "tee": "snp", "extra-params": None},
     "request.extra-params: expected an object or a string"),
])
def test_a_malformed_request_is_named(document: object, message: str) -> None:
    with refused(message):
        AuthRequest.from_json(document)


# --- the TEE public key ----------------------------------------------------------------------

@pytest.mark.parametrize("key", [
    EC_KEY,
    {"kty": "EC", "crv": "P-384", "x": b64url_encode(bytes(48)), "y": b64url_encode(bytes(48))},
    {**EC_KEY, "alg": "ECDH-ES+A256KW", "kid": "k" * 64, "use": "enc"},
    RSA_KEY,
    {**RSA_KEY, "e": b64url_encode(b"\x01" * 12)},  # 16 characters: the longest exponent
    {**RSA_KEY, "n": b64url_encode(b"\xff" * 1024)},  # the largest modulus
    {**RSA_KEY, "alg": "RSA-OAEP-256", "kid": "k", "use": "u" * 64},
])
def test_tee_keys_that_are_accepted(key: dict[str, str]) -> None:
    assert tee_public_key(key) == key


def test_the_key_is_returned_as_strings() -> None:
    assert tee_public_key({**EC_KEY}, "k") == {"kty": "EC", "crv": "P-256", "x": X, "y": Y}


@pytest.mark.parametrize(("key", "message"), [
    ("EC", "tee-pubkey: expected a JSON object, got str"),
    ({"kty": "OKP", "crv": "X25519", "x": X}, 'tee-pubkey.kty: expected "EC" or "RSA"'),
    ({"crv": "P-256", "x": X, "y": Y}, 'tee-pubkey.kty: expected "EC" or "RSA"'),
    ({**EC_KEY, "d": X}, "tee-pubkey: unknown field d"),
    ({**EC_KEY, "n": X}, "tee-pubkey: unknown field n"),
    ({"kty": "EC", "crv": "P-256", "x": X}, "tee-pubkey: missing y"),
    ({**EC_KEY, "crv": "P-521"}, "tee-pubkey.crv: 'P-521' is not one of P-256, P-384"),
    ({**EC_KEY, "crv": "c" * 16}, f"tee-pubkey.crv: {'c' * 16!r} is not one of P-256, P-384"),
    ({**EC_KEY, "crv": "c" * 17}, "tee-pubkey.crv: longer than 16 characters"),
    ({**EC_KEY, "crv": 1}, "tee-pubkey.crv: expected a string"),
    ({**EC_KEY, "x": b64url_encode(bytes(31))}, "tee-pubkey.x: wrong size for P-256"),
    ({**EC_KEY, "y": b64url_encode(bytes(48))}, "tee-pubkey.y: wrong size for P-256"),
    ({**EC_KEY, "x": X + "="}, "tee-pubkey.x: not base64url"),
    ({**EC_KEY, "y": 5}, "tee-pubkey.y: expected a base64url string"),
    ({**RSA_KEY, "crv": "P-256"}, "tee-pubkey: unknown field crv"),
    ({"kty": "RSA", "n": RSA_KEY["n"]}, "tee-pubkey: missing e"),
    ({**RSA_KEY, "n": b64url_encode(b"\xc1" * 255)}, "tee-pubkey.n: an RSA key under 2048 bits"),
    ({**RSA_KEY, "n": "A" * 2049}, "tee-pubkey.n: expected a base64url string"),
    ({**RSA_KEY, "n": "*"}, "tee-pubkey.n: not base64url"),
    ({**RSA_KEY, "e": "A" * 17}, "tee-pubkey.e: expected a base64url string"),
    ({**RSA_KEY, "e": "A=AB"}, "tee-pubkey.e: not base64url"),
    ({**EC_KEY, "alg": 7}, "tee-pubkey.alg: expected a string"),
    ({**RSA_KEY, "kid": ["k"]}, "tee-pubkey.kid: expected a string"),
    ({**EC_KEY, "use": "u" * 65}, "tee-pubkey.use: longer than 64 characters"),
    ({**RSA_KEY, "alg": "a" * 65}, "tee-pubkey.alg: longer than 64 characters"),
])
def test_a_malformed_tee_key_is_named(key: object, message: str) -> None:
    with refused(message):
        tee_public_key(key)


def test_the_key_is_named_where_it_was_found() -> None:
    with refused("token.tee-pubkey.crv: 'P-224' is not one of P-256, P-384"):
        tee_public_key({**EC_KEY, "crv": "P-224"}, "token.tee-pubkey")


# --- Attestation -----------------------------------------------------------------------------

def _attestation(**changes: Any) -> dict[str, Any]:
    document = Attestation("n" * 256, EC_KEY, EVIDENCE).to_json()
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = document
        for parent in parents:
            node = node[parent.replace("_", "-")]
        name = last if last in {"primary_evidence", "additional_evidence"} else \
            last.replace("_", "-")
        if value is None:
            del node[name]
        else:
            node[name] = value
    return document


@pytest.mark.parametrize("evidence", [EVIDENCE, LAUNCH])
def test_an_attestation_reads_back_with_its_kind_of_evidence(
        evidence: CvmEvidence | LaunchEvidence) -> None:
    attestation = Attestation("nonce", RSA_KEY, evidence)
    read = Attestation.from_json(attestation.to_json())
    assert read == attestation
    assert type(read.evidence) is type(evidence)


@pytest.mark.parametrize("extra", [{}, {"init_data": {"anything": 1}},
                                   {"tee_evidence__additional_evidence": ""},
                                   {"tee_evidence__additional_evidence": "{}"},
                                   {"tee_evidence__additional_evidence": {}}])
def test_what_an_attestation_may_carry_besides(extra: dict[str, Any]) -> None:
    assert Attestation.from_json(_attestation(**extra)) == Attestation("n" * 256, EC_KEY,
                                                                       EVIDENCE)


def test_additional_evidence_that_is_null_is_accepted() -> None:
    document = _attestation()
    document["tee-evidence"]["additional_evidence"] = None
    assert Attestation.from_json(document).evidence == EVIDENCE


@pytest.mark.parametrize(("changes", "message"), [
    ({"tee_evidence": None}, "attestation: missing tee-evidence"),
    ({"nonce": "n"}, "attestation: unknown field nonce"),
    ({"runtime_data": "n"}, "attestation.runtime-data: expected a JSON object, got str"),
    ({"runtime_data__tee_pubkey": None}, "attestation.runtime-data: missing tee-pubkey"),
    ({"runtime_data__extra": 1}, "attestation.runtime-data: unknown field extra"),
    ({"runtime_data__nonce": 5}, "attestation.runtime-data.nonce: expected a string"),
    ({"runtime_data__nonce": "n" * 257},
     "attestation.runtime-data.nonce: longer than 256 characters"),
    ({"runtime_data__tee_pubkey": {**EC_KEY, "crv": "P-521"}},
     "attestation.runtime-data.tee-pubkey.crv: 'P-521' is not one of P-256, P-384"),
    ({"runtime_data__tee_pubkey": []},
     "attestation.runtime-data.tee-pubkey: expected a JSON object, got list"),
    ({"tee_evidence": []}, "attestation.tee-evidence: expected a JSON object, got list"),
    ({"tee_evidence__primary_evidence": None},
     "attestation.tee-evidence: missing primary_evidence"),
    ({"tee_evidence__quote": "q"}, "attestation.tee-evidence: unknown field quote"),
    ({"tee_evidence__additional_evidence": "x"},
     "attestation.tee-evidence.additional_evidence: not supported"),
    ({"tee_evidence__additional_evidence": {"az-snp-vtpm": {}}},
     "attestation.tee-evidence.additional_evidence: not supported"),
    ({"tee_evidence__primary_evidence": "cvm-evidence/1"},
     "attestation.tee-evidence.primary_evidence: expected a JSON object, got str"),
    ({"tee_evidence__primary_evidence": {**EVIDENCE.to_json(), "version": "cvm-evidence/2"}},
     "attestation.tee-evidence.primary_evidence.version: 'cvm-evidence/2' is not "
     "'cvm-evidence/1'"),
    ({"tee_evidence__primary_evidence": {**LAUNCH.to_json(), "quote": {}}},
     "attestation.tee-evidence.primary_evidence: unknown field quote"),
])
def test_a_malformed_attestation_is_named(changes: dict[str, Any], message: str) -> None:
    with refused(message):
        Attestation.from_json(_attestation(**changes))


def test_an_attestation_that_is_not_an_object() -> None:
    with refused("attestation: expected a JSON object, got list"):
        Attestation.from_json([])
