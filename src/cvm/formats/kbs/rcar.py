"""The RCAR payloads of Trustee's KBS protocol (``kbs/docs/kbs_attestation_protocol.md``).

``Request`` (POST /kbs/v0/auth), ``Challenge`` (its answer), ``Attestation`` (POST
/kbs/v0/attest: runtime data with the nonce and the TEE public key as a JWK, RFC 7517, and the
TEE evidence). cvm's TEE is ``snp`` and its primary evidence is a ``cvm-evidence/1`` document
(:mod:`cvm.formats.kbs.evidence`) — or, from an SVSM before its vTPM runs, a
``cvm-launch-evidence/1`` one (:mod:`cvm.formats.kbs.launch_evidence`), told apart by its
``version``; ``additional_evidence`` must be absent or empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cvm.errors import FormatError
from cvm.formats.kbs.evidence import CvmEvidence
from cvm.formats.kbs.json_fields import as_object, b64url_decode, only_keys, text
from cvm.formats.kbs.launch_evidence import LAUNCH_EVIDENCE_VERSION, LaunchEvidence

PROTOCOL_VERSIONS = ("0.1.0", "0.1.1", "0.2.0", "0.3.0", "0.4.0")
SUPPORTED_TEES = ("snp",)
EC_CURVES = {"P-256": 32, "P-384": 48}
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class AuthRequest:
    """``{"version", "tee", "extra-params"}``."""

    version: str
    tee: str

    @classmethod
    def from_json(cls, value: object) -> AuthRequest:
        document = as_object(value, "request")
        only_keys(document, "request", {"version", "tee"}, {"extra-params"})
        version = text(document, "version", "request", 32)
        tee = text(document, "tee", "request", 32)
        extra = document.get("extra-params", "")
        if not isinstance(extra, dict | str):
            raise FormatError("request.extra-params: expected an object or a string")
        return cls(version, tee)


def tee_public_key(value: object, where: str = "tee-pubkey") -> dict[str, str]:
    """Check a TEE public key JWK (EC P-256/P-384 or RSA >= 2048 bits) and return it."""
    jwk = as_object(value, where)
    kty = jwk.get("kty")
    if kty == "EC":
        only_keys(jwk, where, {"kty", "crv", "x", "y"}, {"alg", "kid", "use"})
        curve = text(jwk, "crv", where, 16)
        if curve not in EC_CURVES:
            raise FormatError(f"{where}.crv: {curve!r} is not one of {', '.join(EC_CURVES)}")
        for coordinate in ("x", "y"):
            if len(b64url_decode(jwk[coordinate], f"{where}.{coordinate}")) != EC_CURVES[curve]:
                raise FormatError(f"{where}.{coordinate}: wrong size for {curve}")
    elif kty == "RSA":
        only_keys(jwk, where, {"kty", "n", "e"}, {"alg", "kid", "use"})
        if len(b64url_decode(jwk["n"], f"{where}.n", 1024)) * 8 < MIN_RSA_BITS:
            raise FormatError(f"{where}.n: an RSA key under {MIN_RSA_BITS} bits")
        b64url_decode(jwk["e"], f"{where}.e", 8)
    else:
        raise FormatError(f"{where}.kty: expected \"EC\" or \"RSA\"")
    for key in ("alg", "kid", "use"):
        if key in jwk:
            text(jwk, key, where, 64)
    return {key: str(item) for key, item in jwk.items()}


@dataclass(frozen=True)
class Attestation:
    """``{"runtime-data": {"nonce", "tee-pubkey"}, "tee-evidence": {"primary_evidence"}}``."""

    nonce: str
    tee_pubkey: dict[str, str]
    evidence: CvmEvidence | LaunchEvidence

    @classmethod
    def from_json(cls, value: object) -> Attestation:
        document = as_object(value, "attestation")
        only_keys(document, "attestation", {"runtime-data", "tee-evidence"}, {"init-data"})
        runtime = as_object(document["runtime-data"], "attestation.runtime-data")
        only_keys(runtime, "attestation.runtime-data", {"nonce", "tee-pubkey"})
        nonce = text(runtime, "nonce", "attestation.runtime-data", 256)
        key = tee_public_key(runtime["tee-pubkey"], "attestation.runtime-data.tee-pubkey")
        tee = as_object(document["tee-evidence"], "attestation.tee-evidence")
        only_keys(tee, "attestation.tee-evidence", {"primary_evidence"}, {"additional_evidence"})
        if tee.get("additional_evidence") not in (None, "", "{}", {}):
            raise FormatError("attestation.tee-evidence.additional_evidence: not supported")
        primary, where = tee["primary_evidence"], "attestation.tee-evidence.primary_evidence"
        evidence: CvmEvidence | LaunchEvidence
        if isinstance(primary, dict) and primary.get("version") == LAUNCH_EVIDENCE_VERSION:
            evidence = LaunchEvidence.from_json(primary, where)
        else:
            evidence = CvmEvidence.from_json(primary, where)
        return cls(nonce, key, evidence)

    def to_json(self) -> dict[str, Any]:
        return {
            "runtime-data": {"nonce": self.nonce, "tee-pubkey": self.tee_pubkey},
            "tee-evidence": {"primary_evidence": self.evidence.to_json()},
        }
