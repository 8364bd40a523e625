"""The attestation result token's claims (an EAR): what the broker writes, and what it takes
back from a token it issued — every refusal named by its claim."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cvm.errors import FormatError
from cvm.formats.kbs.ear import EAR_PROFILE, AttestationResult
from cvm.formats.kbs.json_fields import b64url_encode

from .documents import edit

KEY = {"kty": "EC", "crv": "P-256", "x": b64url_encode(bytes(32)), "y": b64url_encode(bytes(32))}
RESULT = AttestationResult(issued_at=1767225600, expires_at=1767225900, token_id="j" * 64,
                           nonce="n" * 256, status="affirming", policy_id="p" * 128,
                           tee_pubkey=KEY, evidence_claims={"measurement": "ab"})


def refused(message: str) -> Any:
    return pytest.raises(FormatError, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize(("status", "tier"), [("affirming", 2), ("contraindicated", 96)])
def test_the_claims_the_broker_writes(status: str, tier: int) -> None:
    result = AttestationResult(1, 2, "jti", "nonce", status, "policy", KEY, {"a": 1})
    assert result.to_claims("cvm-kbs", "1.2.3") == {
        "eat_profile": "tag:github.com,2023:veraison/ear",
        "iat": 1, "exp": 2, "iss": "cvm-kbs", "jti": "jti", "eat_nonce": "nonce",
        "ear.verifier-id": {"developer": "cvm", "build": "1.2.3"},
        "tee-pubkey": KEY,
        "submods": {"cpu0": {
            "ear.status": status, "ear.appraisal-policy-id": "policy",
            "ear.trustworthiness-vector": {"instance-identity": tier, "configuration": tier,
                                           "executables": tier, "hardware": tier},
            "ear.veraison.annotated-evidence": {"a": 1}}}}


@pytest.mark.parametrize("status", ["affirming", "contraindicated"])
def test_the_claims_read_back_at_their_limits(status: str) -> None:
    result = AttestationResult(**{**RESULT.__dict__, "status": status})
    assert AttestationResult.from_claims(result.to_claims("cvm-kbs", "1")) == result


def test_annotated_evidence_may_be_absent() -> None:
    claims = RESULT.to_claims("cvm-kbs", "1")
    del claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert AttestationResult.from_claims(claims).evidence_claims == {}


def _claims(where: str, value: object) -> dict[str, Any]:
    return edit(RESULT.to_claims("cvm-kbs", "1"), where.split("/"), value)


@pytest.mark.parametrize(("where", "value", "message"), [
    ("eat_profile", "tag:github.com,2023:veraison/ear2",
     f"token: eat_profile is not {EAR_PROFILE!r}"),
    ("eat_profile", None, f"token: eat_profile is not {EAR_PROFILE!r}"),
    ("submods", None, "token.submods: expected a JSON object, got NoneType"),
    ("submods", [], "token.submods: expected a JSON object, got list"),
    ("submods/cpu0", None, "token.submods.cpu0: expected a JSON object, got NoneType"),
    ("submods/cpu0/ear.status", None, "token.ear.status: expected a string"),
    ("submods/cpu0/ear.status", "s" * 33, "token.ear.status: longer than 32 characters"),
    ("submods/cpu0/ear.status", "s" * 32, f"token: ear.status {'s' * 32!r} is not an EAR status"),
    ("submods/cpu0/ear.status", "warning", "token: ear.status 'warning' is not an EAR status"),
    ("iat", "1767225600", "token.iat: expected an integer"),
    ("exp", True, "token.exp: expected an integer"),
    ("exp", None, "token.exp: expected an integer"),
    ("jti", "j" * 65, "token.jti: longer than 64 characters"),
    ("jti", 7, "token.jti: expected a string"),
    ("eat_nonce", "n" * 257, "token.eat_nonce: longer than 256 characters"),
    ("eat_nonce", None, "token.eat_nonce: expected a string"),
    ("submods/cpu0/ear.appraisal-policy-id", "p" * 129,
     "token.ear.appraisal-policy-id: longer than 128 characters"),
    ("submods/cpu0/ear.appraisal-policy-id", None,
     "token.ear.appraisal-policy-id: expected a string"),
    ("tee-pubkey", None, "token.tee-pubkey: expected a JSON object, got NoneType"),
    ("tee-pubkey", {**KEY, "crv": "P-521"},
     "token.tee-pubkey.crv: 'P-521' is not one of P-256, P-384"),
    ("submods/cpu0/ear.veraison.annotated-evidence", [],
     "token.annotated-evidence: expected a JSON object, got list"),
])
def test_a_token_whose_claims_are_not_the_brokers_is_refused(where: str, value: object,
                                                              message: str) -> None:
    with refused(message):
        AttestationResult.from_claims(_claims(where, value))
