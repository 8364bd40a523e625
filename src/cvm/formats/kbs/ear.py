"""The attestation token's claims: an EAR (IETF draft-fv-rats-ear, "EAT Attestation Results"),
as Trustee's attestation service issues it, signed as a JWT by the broker.

::

    {
      "eat_profile": "tag:github.com,2023:veraison/ear",
      "iat": 1767225600, "exp": 1767225900, "iss": "cvm-kbs", "jti": "<hex>",
      "eat_nonce": "<the challenge>",
      "ear.verifier-id": {"developer": "cvm", "build": "<version>"},
      "tee-pubkey": {<JWK>},
      "submods": {"cpu0": {
          "ear.status": "affirming" | "contraindicated",
          "ear.appraisal-policy-id": "<policy id>",
          "ear.trustworthiness-vector": {"instance-identity": 2, "configuration": 2,
                                         "executables": 2, "hardware": 2},
          "ear.veraison.annotated-evidence": {<the appraised claims>}
      }}
    }

Trustworthiness-vector values follow the EAR draft's tiers: 2 = affirming, 96 = contraindicated
(the claim that failed), 0 = no claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cvm.errors import FormatError
from cvm.formats.kbs.json_fields import as_object, integer, text
from cvm.formats.kbs.rcar import tee_public_key

EAR_PROFILE = "tag:github.com,2023:veraison/ear"
SUBMOD = "cpu0"
AFFIRMING, CONTRAINDICATED = "affirming", "contraindicated"
TIER_AFFIRMING, TIER_CONTRAINDICATED = 2, 96


@dataclass(frozen=True)
class AttestationResult:
    """The claims the broker needs back from a token it issued."""

    issued_at: int
    expires_at: int
    token_id: str
    nonce: str
    status: str
    policy_id: str
    tee_pubkey: dict[str, str]
    evidence_claims: dict[str, Any]

    def to_claims(self, issuer: str, build: str) -> dict[str, Any]:
        tier = TIER_AFFIRMING if self.status == AFFIRMING else TIER_CONTRAINDICATED
        return {
            "eat_profile": EAR_PROFILE,
            "iat": self.issued_at, "exp": self.expires_at, "iss": issuer, "jti": self.token_id,
            "eat_nonce": self.nonce,
            "ear.verifier-id": {"developer": "cvm", "build": build},
            "tee-pubkey": self.tee_pubkey,
            "submods": {SUBMOD: {
                "ear.status": self.status,
                "ear.appraisal-policy-id": self.policy_id,
                "ear.trustworthiness-vector": {name: tier for name in (
                    "instance-identity", "configuration", "executables", "hardware")},
                "ear.veraison.annotated-evidence": self.evidence_claims,
            }},
        }

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> AttestationResult:
        if claims.get("eat_profile") != EAR_PROFILE:
            raise FormatError(f"token: eat_profile is not {EAR_PROFILE!r}")
        submods = as_object(claims.get("submods"), "token.submods")
        appraisal = as_object(submods.get(SUBMOD), f"token.submods.{SUBMOD}")
        status = text(appraisal, "ear.status", "token", 32)
        if status not in (AFFIRMING, CONTRAINDICATED):
            raise FormatError(f"token: ear.status {status!r} is not an EAR status")
        return cls(
            issued_at=integer(claims, "iat", "token"),
            expires_at=integer(claims, "exp", "token"),
            token_id=text(claims, "jti", "token", 64),
            nonce=text(claims, "eat_nonce", "token", 256),
            status=status,
            policy_id=text(appraisal, "ear.appraisal-policy-id", "token", 128),
            tee_pubkey=tee_public_key(claims.get("tee-pubkey"), "token.tee-pubkey"),
            evidence_claims=as_object(appraisal.get("ear.veraison.annotated-evidence", {}),
                                      "token.annotated-evidence"),
        )
